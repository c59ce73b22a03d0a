// `switchboard up --no-dev-signin` (what a deployment that is not a laptop
// runs): no sign-in form, a page that says the host application provides the
// token, no token endpoint, and `/?token=` from a host app still works.
// test_browser.py runs this spec against its own fabric started that way.
import { test, expect } from "@playwright/test";
import { BASE, devSignin, openAs, uid } from "../lib.mjs";

test("without dev sign-in the page asks the host application for a token", async ({ page, context }) => {
  expect(await devSignin()).toBe(false);
  const r = await fetch(`${BASE}/dev/token`, { method: "POST", headers: { "content-type": "application/json" }, body: '{"user":"eve"}' });
  expect(r.status).toBe(404);

  await page.goto("/");
  await expect(page.getByTestId("signin-needed")).toBeVisible();
  await expect(page.getByTestId("signin-needed")).toContainText(/token/i);
  await expect(page.getByTestId("signin-user")).toBeHidden(); // absent or not shown

  const user = uid("hosted");
  await openAs(context, user); // a token minted by `switchboard token` (the host app's job)
});
