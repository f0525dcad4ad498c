// Drives the dashboard as a person would, in Debian's chromium through
// playwright-core: elements are found by their role and label text, never by
// CSS classes. Started by the it test binary (tests/it/dashboard.rs) against a
// real server on a fresh database; prints one JSON line of what it learned
// (the new site's key and id) for the Rust side to check against the API.
//
// Environment: BASE_URL, EMAIL, PASSWORD, SCREENSHOTS (a directory).
import { chromium } from "playwright-core";
import { mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const base = process.env.BASE_URL;
const email = process.env.EMAIL;
const password = process.env.PASSWORD;
const shots = process.env.SCREENSHOTS;
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

  console.log(JSON.stringify({ site_key: siteKey, site_id: siteId }));
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
