// Typing indicator, presence (dot and "last seen") and the sent ->
// delivered -> read ticks, as the other person sees them.
import { test, expect } from "@playwright/test";
import { convItem, messageWith, newUser, openAs, openConv, send, startDm, uid } from "../lib.mjs";

test("ticks go sent, delivered, read", async ({ browser }) => {
  const alice = await newUser(browser, uid("alice"));
  const bob = await newUser(browser, uid("bob"));
  await startDm(alice.page, bob.user);
  await send(alice.page, "hello");
  const conv = await messageWith(alice.page, "hello").getAttribute("data-conv");
  await expect(convItem(bob.page, conv)).toBeVisible();
  // The SDK stores its cursor with its batched ack (every 250 ms): a person
  // does not close the tab within that, and the test does not either.
  await bob.page.waitForTimeout(1000);
  // Bob's tab is closed: the next message is stored, not delivered.
  await bob.page.close();
  await send(alice.page, "are you there?");
  const tick = messageWith(alice.page, "are you there?").getByTestId("tick");
  await expect(tick).toHaveAttribute("data-state", "sent");
  await alice.page.waitForTimeout(1000);
  await expect(tick).toHaveAttribute("data-state", "sent");

  // Bob opens the app again (his device resumes from its cursor, gets the
  // message and acks it) but not the conversation: delivered, not read.
  const again = await openAs(bob.context, bob.user, bob.token);
  await expect(convItem(again, conv)).toBeVisible();
  await expect(tick).toHaveAttribute("data-state", "delivered");
  await alice.page.waitForTimeout(1000);
  await expect(tick).toHaveAttribute("data-state", "delivered");
  bob.page = again;

  // He opens it: read.
  await openConv(bob.page, conv);
  await expect(tick).toHaveAttribute("data-state", "read");

  // With the conversation open on his side, the next message goes straight to read.
  await send(alice.page, "great");
  await expect(messageWith(bob.page, "great")).toHaveCount(1);
  await expect(messageWith(alice.page, "great").getByTestId("tick")).toHaveAttribute("data-state", "read");
  // Ticks are on own messages only.
  await expect(messageWith(bob.page, "great").getByTestId("tick")).toHaveCount(0);
});

test("typing shows and goes away", async ({ browser }) => {
  const alice = await newUser(browser, uid("alice"));
  const bob = await newUser(browser, uid("bob"));
  await startDm(alice.page, bob.user);
  await send(alice.page, "hi");
  const conv = await messageWith(alice.page, "hi").getAttribute("data-conv");
  await openConv(bob.page, conv);

  const typing = bob.page.getByTestId("typing");
  await expect(typing).not.toContainText(alice.user);
  await alice.page.getByTestId("composer").pressSequentially("I am typing something long", { delay: 40 });
  await expect(typing).toContainText(alice.user);
  await expect(typing).toContainText(/typing/i);
  // Sending ends it (at the latest when the indicator expires).
  await alice.page.getByTestId("composer").press("Enter");
  await expect(messageWith(bob.page, "I am typing something long")).toHaveCount(1);
  await expect(typing).not.toContainText(alice.user, { timeout: 15_000 });
  // Alice does not see her own typing.
  await expect(alice.page.getByTestId("typing")).not.toContainText(alice.user);
});

test("presence dot and last seen follow the other user", async ({ browser }) => {
  const alice = await newUser(browser, uid("alice"));
  const bob = await newUser(browser, uid("bob"));
  await startDm(alice.page, bob.user);
  await send(alice.page, "hi");
  const conv = await messageWith(alice.page, "hi").getAttribute("data-conv");

  const dot = convItem(bob.page, conv).getByTestId("presence-dot");
  await expect(dot).toHaveAttribute("data-online", "true");
  await openConv(bob.page, conv);
  await expect(bob.page.getByTestId("last-seen")).toHaveText(/online/i);

  // Alice closes her only tab: offline, "last seen HH:MM".
  await alice.context.close();
  await expect(dot).toHaveAttribute("data-online", "false", { timeout: 20_000 });
  await expect(bob.page.getByTestId("last-seen")).toHaveText(/last seen.*\d{1,2}:\d{2}/i);

  // And back.
  const context = await browser.newContext();
  await openAs(context, alice.user);
  await expect(dot).toHaveAttribute("data-online", "true");
  await expect(bob.page.getByTestId("last-seen")).toHaveText(/online/i);
});
