// Drives the dashboard as a person would, in Debian's chromium through
// playwright-core: elements are found by their role and label text, never by
// CSS classes. Started by the it test binary (tests/it/dashboard.rs) against a
// real server on a fresh database; prints one JSON line of what it learned
// (the new site's key and id) for the Rust side to check against the API.
//
// Environment: BASE_URL, EMAIL, PASSWORD, SCREENSHOTS (a directory),
// RECEIVER_URL (a receiver that answers 200).
import { chromium } from "playwright-core";
import { mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const base = process.env.BASE_URL;
const email = process.env.EMAIL;
const password = process.env.PASSWORD;
const shots = process.env.SCREENSHOTS;
const receiverUrl = process.env.RECEIVER_URL;
mkdirSync(shots, { recursive: true });

// A fresh profile each run (playwright passes it as --user-data-dir).
const profile = join(tmpdir(), `pp-chromium-${process.pid}`);
const context = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
  ],
  viewport: { width: 1200, height: 800 },
});

function expect(condition, message) {
  if (!condition) throw new Error(`expected: ${message}`);
}

let step = 0;
async function shot(page, name) {
  step += 1;
  await page.screenshot({ path: join(shots, `${String(step).padStart(2, "0")}-${name}.png`), fullPage: true });
}

try {
  const page = context.pages()[0] ?? (await context.newPage());

  // Signed out, a page sends you to sign in, and back afterwards.
  await page.goto(`${base}/sites`);
  expect(new URL(page.url()).pathname === "/sign-in", `redirected to sign in, at ${page.url()}`);
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  await shot(page, "sign-in");

  // A wrong password: refused, in words.
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(`${password}-wrong`);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "Wrong email or password." }).waitFor();

  // The right one: the sites page, empty.
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Sites", exact: true }).waitFor();
  expect(new URL(page.url()).pathname === "/sites", `back at /sites, at ${page.url()}`);
  await page.getByText("No sites yet.").waitFor();
  await shot(page, "sites-empty");

  // A bad URL: the error is next to its field, and what was typed stays.
  await page.getByLabel("Name").fill("Acme Forum");
  await page.getByLabel("URL").fill("ftp://forum.example.com");
  await page.getByRole("button", { name: "Create site" }).click();
  await page.getByRole("alert").first().waitFor();
  const urlError = await page.getByRole("alert").first().textContent();
  expect(/url/i.test(urlError), `a URL error, got ${urlError}`);
  expect((await page.getByLabel("Name").inputValue()) === "Acme Forum", "the name kept");
  await shot(page, "new-site-error");

  // Created: the key is shown once, with a copy button.
  await page.getByLabel("URL").fill("https://forum.example.com");
  await page.getByLabel("Description").fill("The Acme community forum");
  await page.getByRole("button", { name: "Create site" }).click();
  await page.getByRole("heading", { name: "Acme Forum created" }).waitFor();
  const status = page.getByRole("status");
  await status.getByText("shown once").waitFor();
  const siteKey = (await status.locator("code").textContent()).trim();
  expect(siteKey.startsWith("site_"), `a site key, got ${siteKey}`);
  await status.getByRole("button", { name: "Copy" }).waitFor();
  await shot(page, "site-created");

  // The site's page: details, and its webhooks (none yet).
  await page.getByRole("link", { name: "Open Acme Forum" }).click();
  await page.getByRole("heading", { name: "Acme Forum", exact: true }).waitFor();
  await page.getByRole("heading", { name: "Webhooks" }).waitFor();
  await page.getByText("No webhook endpoints yet.").waitFor();
  const siteId = new URL(page.url()).pathname.split("/").pop();
  await shot(page, "site");

  // Add an endpoint as the webhook guide says: URL, a generated secret, the
  // events, save. A bad URL first: the error is next to the field.
  await page.getByRole("link", { name: "Add endpoint" }).click();
  await page.getByRole("heading", { name: "Add endpoint" }).waitFor();
  await page.getByLabel("Endpoint URL").fill("ftp://hooks.example.com/pixelpatrol");
  await page.getByRole("button", { name: "Save" }).click();
  await page.getByRole("alert").first().waitFor();
  await page.getByLabel("Endpoint URL").fill(receiverUrl);
  await page.getByRole("button", { name: "Generate" }).click();
  const secret = await page.getByLabel("Secret").inputValue();
  expect(secret.startsWith("whsec_") && secret.length > 40, `a generated secret, got ${secret}`);
  expect(await page.getByLabel("media.created").isChecked(), "media.created preselected");
  await page.getByLabel("test.webhook").check();
  await page.getByLabel("Description").fill("The forum's moderation hook");
  await shot(page, "add-endpoint");
  await page.getByRole("button", { name: "Save" }).click();
  await page.getByRole("heading", { name: receiverUrl }).waitFor();
  const endpointPath = new URL(page.url()).pathname;
  const endpointId = endpointPath.split("/").pop();

  // Send a test webhook: the outcome appears in the page, which stays.
  await page.getByRole("button", { name: "Send test webhook" }).click();
  await page.getByRole("status").filter({ hasText: "Test webhook delivered" }).waitFor();
  expect(new URL(page.url()).pathname === endpointPath, `still on the endpoint, at ${page.url()}`);
  const outcome = await page.getByRole("status").filter({ hasText: "Test webhook delivered" }).textContent();
  expect(/HTTP 200/.test(outcome), `the status code shown, got ${outcome}`);
  await shot(page, "test-webhook");

  // Reveal the secret: the one generated in the form.
  await page.getByRole("button", { name: "Reveal secret" }).click();
  const revealed = page.getByRole("status").filter({ hasText: "Signing secret" });
  await revealed.waitFor();
  expect((await revealed.locator("code").textContent()).trim() === secret, "the revealed secret is the saved one");

  // The delivery log fills in by itself: an item submitted through the API
  // while it is open appears without a reload. The receiver fails its first
  // delivery: the log shows the failure and the next retry.
  await page.getByRole("link", { name: "Delivery log" }).click();
  await page.getByRole("heading", { name: "Delivery log" }).waitFor();
  const flaky = await fetch(`${base}/v1/submit-media`, {
    method: "POST",
    headers: { authorization: `Bearer ${siteKey}`, "content-type": "application/json" },
    body: JSON.stringify({ body: "Lovely weather for the match today", app_media_id: "flaky-1" }),
  });
  expect(flaky.status === 202, `submitted, got ${flaky.status}`);
  const createdRow = page.getByRole("row").filter({ hasText: "media.created" });
  await createdRow.getByText("retrying").waitFor({ timeout: 20000 });
  await createdRow.getByText("HTTP 500").waitFor();
  await shot(page, "delivery-log");

  // The delivery's page: the failed attempt, its error class, the next
  // retry, and the request as sent.
  await createdRow.getByRole("link", { name: "media.created" }).click();
  await page.getByRole("heading", { name: "media.created delivery" }).waitFor();
  await page.getByRole("cell", { name: "http_status" }).waitFor();
  await page.getByText("Next retry").waitFor();
  const sentHeaders = await page.getByLabel("Request headers").textContent();
  const sentBody = await page.getByLabel("Raw body").textContent();
  await shot(page, "delivery");
  // Retry now: the receiver answers this time.
  await page.getByRole("button", { name: "Retry now" }).click();
  for (let tries = 0; tries < 100; tries++) {
    if ((await page.getByText("succeeded", { exact: true }).count()) > 0) break;
    await page.waitForTimeout(200);
    await page.reload();
  }
  await page.getByText("succeeded", { exact: true }).first().waitFor();
  expect((await page.getByRole("row").filter({ hasText: "http_status" }).count()) === 1, "the failed attempt stays in the log");
  await page.getByRole("link", { name: receiverUrl }).click();
  // The endpoint's health: its rates, and the hours drawn as a chart.
  await page.getByRole("heading", { name: "Health" }).waitFor();
  await page.getByRole("img", { name: /Attempts per hour over the last 24 hours: \d+ in all, 1 failed/ }).waitFor();
  await shot(page, "endpoint-health");
  await page.getByRole("link", { name: "Acme Forum" }).click();

  // The site's page lists the endpoint as healthy.
  const endpointRow = page.getByRole("row").filter({ hasText: receiverUrl });
  await endpointRow.getByText("healthy").waitFor();
  await shot(page, "site-with-endpoint");

  // Invite a developer and a moderator: each link is shown once.
  async function invite(who, role) {
    await page.getByLabel("Email", { exact: true }).fill(who);
    await page.getByLabel("Role", { exact: true }).selectOption(role);
    await page.getByRole("button", { name: "Invite" }).click();
    const shown = page.getByRole("status").filter({ hasText: `Invitation link for ${who}` });
    await shown.waitFor();
    return (await shown.locator("code").textContent()).trim();
  }
  const developerLink = await invite("dev@example.com", "developer");
  const moderatorLink = await invite("mod@example.com", "moderator");
  await page.getByRole("row").filter({ hasText: "mod@example.com" }).getByText("moderator").waitFor();
  await shot(page, "members-invited");

  // Each accepts: a password of their own, and they are in, on the site.
  async function accept(link, who) {
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
    await page.goto(link);
    await page.getByText(`as ${who}`).waitFor();
    await page.getByLabel("Choose a password").fill(`${who} has a long password`);
    await page.getByLabel("Password again").fill(`${who} has a long password`);
    await page.getByRole("button", { name: "Accept invitation" }).click();
    await page.getByRole("heading", { name: "Acme Forum", exact: true }).waitFor();
  }
  await accept(developerLink, "dev@example.com");
  await page.getByRole("heading", { name: "Webhooks" }).waitFor();
  await page.getByRole("link", { name: receiverUrl }).waitFor();
  await shot(page, "developer-site");

  // The site's application submits an item the rules flag for a person.
  const submitted = await fetch(`${base}/v1/submit-media`, {
    method: "POST",
    headers: { authorization: `Bearer ${siteKey}`, "content-type": "application/json" },
    body: JSON.stringify({ body: "I am going to kill myself tonight", app_media_id: "post-42" }),
  });
  expect(submitted.status === 202, `submitted, got ${submitted.status}`);
  const mediaId = (await submitted.json()).id;

  await accept(moderatorLink, "mod@example.com");
  expect((await page.getByRole("heading", { name: "Webhooks" }).count()) === 0, "no webhooks for a moderator");
  await shot(page, "moderator-site");

  // The moderator works the queue: the flagged item, why it was flagged,
  // and a decision with a note.
  await page.getByRole("link", { name: "Moderation queue" }).click();
  await page.getByRole("heading", { name: "Moderation queue" }).waitFor();
  const flaggedItem = page.getByRole("article", { name: `Item ${mediaId}` });
  for (let tries = 0; tries < 100 && (await flaggedItem.count()) === 0; tries++) {
    await page.waitForTimeout(200);
    await page.reload();
  }
  await flaggedItem.getByText("I am going to kill myself tonight").waitFor();
  await flaggedItem.getByText("self_harm").first().waitFor();
  // The navigation counts what waits, on every page.
  const mainNav = page.getByRole("navigation", { name: "Main" });
  await mainNav.getByRole("link", { name: "Review queue, 1 waiting" }).waitFor();
  await shot(page, "moderation-queue");
  await flaggedItem.getByLabel("Note (optional)").fill("Reached out to the user");
  await flaggedItem.getByRole("button", { name: "Approve" }).click();
  await page.getByText("Nothing flagged").waitFor();
  await mainNav.getByRole("link", { name: "Review queue, 0 waiting" }).waitFor();
  await page.getByRole("link", { name: "approved" }).click();
  const decided = page.getByRole("article", { name: `Item ${mediaId}` });
  await decided.getByText("Reviewed by mod@example.com").waitFor();
  // A decided item can be overturned (the other verdict only); a person's
  // decision is not analysed again.
  expect((await decided.getByRole("button", { name: "Reject" }).count()) === 1, "Reject on an approved item");
  expect((await decided.getByRole("button", { name: "Approve" }).count()) === 0, "no Approve on an approved item");
  expect((await decided.getByRole("button", { name: "Analyse again" }).count()) === 0, "a person's decision stands");
  // The webhook settings and the secret are not for a moderator: 403.
  const settings = await page.goto(`${base}${endpointPath}`);
  expect(settings.status() === 403, `a moderator gets 403 on the endpoint, got ${settings.status()}`);
  await page.getByRole("heading", { name: "Not allowed" }).waitFor();
  await shot(page, "moderator-forbidden");
  // A used link does not work twice.
  await page.goto(moderatorLink);
  await page.getByRole("heading", { name: "This invitation link does not work" }).waitFor();

  // Back as the operator.
  await page.goto(`${base}/sites`);
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Sites", exact: true }).waitFor();

  // The audit log: who did what, the moderator's review on top.
  await page.getByRole("link", { name: "Acme Forum" }).click();
  await page.getByRole("link", { name: "Audit log" }).click();
  await page.getByRole("heading", { name: "Audit log" }).waitFor();
  const top = page.getByRole("row").nth(1);
  await top.getByText("media.reviewed").waitFor();
  await top.getByText("mod@example.com").waitFor();
  await page.getByRole("row").filter({ hasText: "secret.revealed" }).waitFor();
  await shot(page, "audit-log");
  await page.getByRole("link", { name: "Sites", exact: true }).first().click();

  // The list shows it, with the operator's role and a local time.
  await page.getByRole("link", { name: "Sites", exact: true }).first().click();
  const row = page.getByRole("row").filter({ hasText: "Acme Forum" });
  await row.getByText("operator").waitFor();
  const shown = await row.locator("time").textContent();
  expect(!shown.endsWith("UTC"), `time shown in local time, got ${shown}`);
  await shot(page, "sites");

  // Signing out ends the session: the pages want a sign-in again.
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  await page.goto(`${base}/sites/${siteId}`);
  expect(new URL(page.url()).pathname === "/sign-in", `signed out, at ${page.url()}`);

  console.log(JSON.stringify({
    site_key: siteKey, site_id: siteId, endpoint_id: endpointId, secret, media_id: mediaId,
    sent_headers: sentHeaders, sent_body: sentBody,
  }));
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
