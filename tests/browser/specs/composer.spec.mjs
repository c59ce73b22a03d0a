// The composer: Enter sends, Shift+Enter is a newline, empty and
// whitespace-only messages are refused (the old demo sent "undefined"), and
// every body is shown as text: markup in a message never becomes markup.
import { test, expect } from "@playwright/test";
import { messageWith, messages, newUser, openConv, send, startDm, uid } from "../lib.mjs";

test("Enter sends, Shift+Enter is a newline, empty messages are refused", async ({ browser }) => {
  const alice = await newUser(browser, uid("alice"));
  const bob = await newUser(browser, uid("bob"));
  await startDm(alice.page, bob.user);
  const composer = alice.page.getByTestId("composer");

  await composer.fill("first");
  await composer.press("Enter");
  await expect(messages(alice.page)).toHaveCount(1);
  await expect(composer).toHaveValue("");

  // Shift+Enter: a newline in the composer, nothing sent; Enter sends both lines as one message.
  await composer.pressSequentially("line one");
  await composer.press("Shift+Enter");
  await composer.pressSequentially("line two");
  await expect(composer).toHaveValue("line one\nline two");
  await expect(messages(alice.page)).toHaveCount(1);
  await composer.press("Enter");
  await expect(messages(alice.page)).toHaveCount(2);
  await expect(messages(alice.page).nth(1).getByTestId("message-body")).toHaveText("line one\nline two", {
    useInnerText: false,
  });

  // Empty, blank, and the send button with nothing typed: nothing goes out.
  await composer.fill("");
  await composer.press("Enter");
  await composer.fill("   \n  ");
  await composer.press("Enter");
  await composer.fill("");
  await alice.page.getByTestId("send").click({ force: true }); // may be disabled: a click must still send nothing
  await send(alice.page, "last");
  await expect(messages(alice.page)).toHaveCount(3);
  const bodies = await messages(alice.page).getByTestId("message-body").allTextContents();
  expect(bodies).toEqual(["first", "line one\nline two", "last"]);

  // The receiver got exactly the same three, none empty or "undefined".
  const conv = await messages(alice.page).first().getAttribute("data-conv");
  await openConv(bob.page, conv);
  await expect(messages(bob.page)).toHaveCount(3);
  expect(await messages(bob.page).getByTestId("message-body").allTextContents()).toEqual(bodies);
  await expect(bob.page.getByTestId("messages")).not.toContainText("undefined");
});

test("message text is escaped: markup shows as text and never runs", async ({ browser }) => {
  const alice = await newUser(browser, uid("alice"));
  const bob = await newUser(browser, uid("bob"));
  await startDm(alice.page, bob.user);
  const evil = [
    `<img src=x onerror="window.__pwned = 'img'">`,
    `<script>window.__pwned = 'script'</script>`,
    `<b>not bold</b> & &amp; "quotes" 'single'`,
    `javascript:window.__pwned='link'`,
  ];
  for (const body of evil) await send(alice.page, body);
  await expect(messages(alice.page)).toHaveCount(evil.length);
  const conv = await messages(alice.page).first().getAttribute("data-conv");
  await openConv(bob.page, conv);
  await expect(messages(bob.page)).toHaveCount(evil.length);

  for (const page of [alice.page, bob.page]) {
    expect(await messages(page).getByTestId("message-body").allTextContents()).toEqual(evil);
    const box = page.getByTestId("messages");
    await expect(box.locator("img, script, b")).toHaveCount(0);
    for (const body of evil) await expect(messageWith(page, body)).toHaveCount(1);
  }
  // The conversation list's last-message preview is text too.
  await expect(bob.page.locator(`[data-testid="conv-item"][data-conv="${conv}"] img`)).toHaveCount(0);
  await alice.page.waitForTimeout(300); // an onerror handler would have run by now
  expect(await alice.page.evaluate(() => window.__pwned)).toBeUndefined();
  expect(await bob.page.evaluate(() => window.__pwned)).toBeUndefined();
});
