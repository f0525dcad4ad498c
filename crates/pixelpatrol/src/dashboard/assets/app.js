// PixelPatrol dashboard: small enhancements; every page works without them.
"use strict";

// Times are sent in UTC; show them in the viewer's own time zone (the UTC
// value stays in the tooltip).
function localTimes(root) {
  for (const element of root.querySelectorAll("time[datetime]")) {
    const at = new Date(element.getAttribute("datetime"));
    if (!Number.isNaN(at.getTime())) {
      element.textContent = at.toLocaleString(undefined, {
        year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
      });
    }
  }
}

// "Copy" buttons copy the text of the element they name.
function copyButtons(root) {
  for (const button of root.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copy);
      if (!source) return;
      try {
        await navigator.clipboard.writeText(source.textContent.trim());
        button.textContent = "Copied";
      } catch {
        const range = document.createRange();
        range.selectNodeContents(source);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        button.textContent = "Selected: press Ctrl+C";
      }
    });
  }
}

// "Generate" fills a secret field with whsec_ and 32 random bytes (base64),
// the Standard Webhooks form. Without the script, an empty field has the
// server generate one.
function secretButtons(root) {
  for (const button of root.querySelectorAll("button[data-generate-secret]")) {
    button.addEventListener("click", () => {
      const field = document.getElementById(button.dataset.generateSecret);
      const bytes = crypto.getRandomValues(new Uint8Array(32));
      field.value = "whsec_" + btoa(String.fromCharCode(...bytes));
    });
  }
}

// Forms marked data-inline post in the background and put the answer's
// element of that id in place, so the outcome shows without leaving the
// page. Without the script they post normally and the page comes back
// with the outcome in the same place.
function inlineForms(root) {
  for (const form of root.querySelectorAll("form[data-inline]")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const target = document.getElementById(form.dataset.inline);
      const button = form.querySelector("button");
      button.disabled = true;
      target.setAttribute("aria-busy", "true");
      try {
        const response = await fetch(form.action, { method: "POST", body: new URLSearchParams(new FormData(form)) });
        const page = new DOMParser().parseFromString(await response.text(), "text/html");
        const fresh = page.getElementById(form.dataset.inline);
        if (response.ok && fresh) {
          target.replaceChildren(...fresh.childNodes);
          enhance(target);
        } else {
          // Signed out meanwhile, or refused: say so, and offer the page.
          const heading = page.querySelector("h1");
          const note = document.createElement("p");
          note.className = "field-error";
          note.setAttribute("role", "alert");
          note.textContent = (heading ? heading.textContent + ". " : "That did not work. ") + "Reload the page to see why.";
          target.replaceChildren(note);
        }
      } finally {
        button.disabled = false;
        target.removeAttribute("aria-busy");
      }
    });
  }
}

// Regions marked data-refresh reload themselves every so many ms while the
// page is open, so new attempts show up as they happen.
function refreshing(root) {
  for (const region of root.querySelectorAll("[data-refresh]")) {
    const every = Number(region.dataset.refresh) || 3000;
    setInterval(async () => {
      if (document.hidden) return;
      const response = await fetch(location.href, { headers: { accept: "text/html" } });
      if (!response.ok) return;
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = page.getElementById(region.id);
      if (fresh) {
        region.replaceChildren(...fresh.childNodes);
        enhance(region);
      }
    }, every);
  }
}

// Forms marked data-local-time="name" send their datetime-local field as an
// RFC 3339 time with the browser's offset, in the hidden field `name`.
function localTimeForms(root) {
  for (const form of root.querySelectorAll("form[data-local-time]")) {
    form.addEventListener("submit", () => {
      const local = form.querySelector('input[type="datetime-local"]');
      const hidden = form.querySelector(`input[name="${form.dataset.localTime}"]`);
      if (local && hidden && local.value) hidden.value = new Date(local.value).toISOString();
    });
  }
}

function enhance(root) {
  localTimes(root);
  copyButtons(root);
}

document.addEventListener("DOMContentLoaded", () => {
  enhance(document);
  secretButtons(document);
  inlineForms(document);
  refreshing(document);
  localTimeForms(document);
});
