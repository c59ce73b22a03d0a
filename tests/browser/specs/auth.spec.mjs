// Sign-in: a refused token shows a human message (never a class name,
// "undefined" or a stack), and the development sign-in of `switchboard up`
// on loopback turns a user name into a session that survives a reload.
import { createHmac } from "node:crypto";
import { test, expect } from "@playwright/test";
import { convItem, devSignin, expectOnline, messageWith, openConv, send, startDm, uid } from "../lib.mjs";

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
  await signIn(page, user);
  await page.reload();
  await expectOnline(page, user);
});

test("dev sign-in: two tabs of one browser as two users chat, and each keeps its user on reload", async ({ context }) => {
  // What the sign-in page suggests: "open another tab with another name".
  const [alice, bob] = [uid("alice"), uid("bob")];
  const a = await context.newPage();
  await signIn(a, alice);
  const b = await context.newPage();
  await signIn(b, bob);
  await startDm(a, bob);
  await send(a, "hi from the same browser");
  const conv = await messageWith(a, "hi from the same browser").getAttribute("data-conv");
  await expect(convItem(b, conv)).toBeVisible();
  for (const [page, user] of [[a, alice], [b, bob]]) {
    await page.reload();
    await expectOnline(page, user);
  }
  await openConv(b, conv);
  await expect(messageWith(b, "hi from the same browser")).toHaveAttribute("data-own", "false");
});

async function signIn(page, user) {
  await page.goto("/");
  await page.getByTestId("signin-user").fill(user);
  await page.getByTestId("signin-submit").click();
  await expectOnline(page, user);
}
