// Sign-in: a refused token shows a human message (never a class name,
// "undefined" or a stack), and the development sign-in of `switchboard up`
// on loopback turns a user name into a session that survives a reload.
import { createHmac } from "node:crypto";
import { test, expect } from "@playwright/test";
import { devSignin, expectOnline, uid } from "../lib.mjs";

/** A well-formed HS256 JWT for `user`, signed with a secret the fabric does not know. */
function forgedToken(user) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const head = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub: user, exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  return `${head}.${createHmac("sha256", "not-the-secret").update(head).digest("base64url")}`;
}

const JARGON = /undefined|null|\[object|Error\b|Exception|SwitchboardError|TypeError|stack|4001|ws:\/\//;

for (const [name, token] of [["garbage", "not-a-token"], ["forged", forgedToken("mallory")], ["empty", ""]]) {
  test(`a refused token (${name}) shows a human message`, async ({ page }) => {
    await page.goto(`/?token=${encodeURIComponent(token)}`);
    const msg = page.getByTestId(token === "" ? /auth-error|signin-user|signin-needed/ : "auth-error");
    await expect(msg.first()).toBeVisible();
    if (token !== "") {
      const text = (await msg.textContent()).trim();
      expect(text.length, "a sentence, not a code").toBeGreaterThan(15);
      expect(text).not.toMatch(JARGON);
      await expect(page.getByTestId("conn-state")).not.toHaveAttribute("data-state", "online");
      // It does not hammer the server with the refused token either: one message, stays put.
      await page.waitForTimeout(1500);
      await expect(msg).toBeVisible();
    }
    await expect(page.locator("body")).not.toContainText("undefined");
  });
}

test("dev sign-in: a user name is enough, and a reload keeps the session", async ({ page }) => {
  expect(await devSignin(), "switchboard up on 127.0.0.1 turns dev sign-in on").toBe(true);
  const user = uid("dana");
  await page.goto("/");
  await page.getByTestId("signin-user").fill(user);
  await page.getByTestId("signin-submit").click();
  await expectOnline(page, user);
  await page.reload();
  await expectOnline(page, user);
});
