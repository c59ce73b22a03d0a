// Two users chat both ways; a third tab of the same user sees both sides,
// live and with its own messages marked as own.
import { test, expect } from "@playwright/test";
import { convItem, expectOrdered, messageWith, messages, newUser, openAs, openConv, send, startDm, uid } from "../lib.mjs";

test("two users chat both ways and a third tab of one of them sees both sides", async ({ browser }) => {
  const alice = await newUser(browser, uid("alice"));
  const bob = await newUser(browser, uid("bob"));

  await startDm(alice.page, bob.user);
  await send(alice.page, "hello bob");
  const mine = messageWith(alice.page, "hello bob");
  await expect(mine).toHaveAttribute("data-own", "true");
  await expect(mine.getByTestId("tick")).toHaveAttribute("data-state", /sent|delivered|read/);
  await expect(mine.getByTestId("message-time")).toHaveText(/^\d{2}:\d{2}$/);
  const conv = await mine.getAttribute("data-conv");
  expect(conv).toBeTruthy();

  // Bob's list shows the new conversation with its last message, then he opens it.
  await expect(convItem(bob.page, conv).getByTestId("conv-last")).toContainText("hello bob");
  await expect(convItem(bob.page, conv).getByTestId("conv-title")).toContainText(alice.user);
  await openConv(bob.page, conv);
  await expect(messageWith(bob.page, "hello bob")).toHaveAttribute("data-own", "false");
  await expect(bob.page.getByTestId("conv-header")).toContainText(alice.user);

  // Bob answers with the send button (not Enter).
  await bob.page.getByTestId("composer").fill("hi alice");
  await bob.page.getByTestId("send").click();
  await expect(messageWith(bob.page, "hi alice")).toHaveAttribute("data-own", "true");
  await expect(messageWith(alice.page, "hi alice")).toHaveAttribute("data-own", "false");
  await expect(bob.page.getByTestId("composer")).toHaveValue("");
  // Own messages on one side, the other person's on the other.
  const own = await messageWith(bob.page, "hi alice").getByTestId("message-body").boundingBox();
  const other = await messageWith(bob.page, "hello bob").getByTestId("message-body").boundingBox();
  expect(own.x + own.width, "own message on the right").toBeGreaterThan(other.x + other.width + 100);

  // A third tab of alice (same browser profile, like a second window) shows both sides.
  const alice2 = await openAs(alice.context, alice.user, alice.token);
  await openConv(alice2, conv);
  await expect(messageWith(alice2, "hello bob")).toHaveAttribute("data-own", "true");
  await expect(messageWith(alice2, "hi alice")).toHaveAttribute("data-own", "false");

  // Live in all three tabs: bob's next message, and alice's from the other tab.
  await send(bob.page, "three tabs?");
  await expect(messageWith(alice.page, "three tabs?")).toHaveCount(1);
  await expect(messageWith(alice2, "three tabs?")).toHaveCount(1);
  await send(alice2, "yes, from my other window");
  await expect(messageWith(alice.page, "yes, from my other window")).toHaveAttribute("data-own", "true");
  await expect(messageWith(bob.page, "yes, from my other window")).toHaveAttribute("data-own", "false");

  // Same four messages, once each and in the same order, everywhere.
  const want = ["hello bob", "hi alice", "three tabs?", "yes, from my other window"];
  for (const page of [alice.page, alice2, bob.page]) {
    await expect(messages(page)).toHaveCount(4);
    const list = await expectOrdered(page);
    expect(list.map((m) => m.body)).toEqual(want);
    expect(new Set(list.map((m) => m.conv))).toEqual(new Set([conv]));
    expect(list.map((m) => m.kind)).toEqual(["user", "user", "user", "user"]);
    expect(list.map((m) => m.seq)).toEqual([1, 2, 3, 4]); // a new 1:1 conversation numbers from 1
  }
});
