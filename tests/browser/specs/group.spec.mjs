// A group made from the "new group" form: every member sees it with its
// title, messages of others name their sender, and all see the same order.
import { test, expect } from "@playwright/test";
import { convItem, expectOrdered, messageWith, newUser, openConv, send, uid } from "../lib.mjs";

test("a group: created from the form, titled, senders named, same order for all", async ({ browser }) => {
  const alice = await newUser(browser, uid("alice"));
  const bob = await newUser(browser, uid("bob"));
  const carol = await newUser(browser, uid("carol"));
  const title = `lunch ${uid("")}`;

  await alice.page.getByTestId("new-group-members").fill(`${bob.user}, ${carol.user}`);
  await alice.page.getByTestId("new-group-title").fill(title);
  await alice.page.getByTestId("new-group-submit").click();
  await expect(alice.page.getByTestId("conv-header")).toContainText(title);
  await send(alice.page, "where shall we eat?");
  const conv = await messageWith(alice.page, "where shall we eat?").getAttribute("data-conv");

  for (const u of [bob, carol]) {
    await expect(convItem(u.page, conv).getByTestId("conv-title")).toContainText(title);
    await openConv(u.page, conv);
    await expect(u.page.getByTestId("conv-header")).toContainText(title);
    const m = messageWith(u.page, "where shall we eat?");
    await expect(m.getByTestId("message-sender")).toContainText(alice.user);
    // Groups have no presence dot (that is for 1:1 conversations).
    await expect(convItem(u.page, conv).getByTestId("presence-dot")).toHaveCount(0);
  }
  await send(bob.page, "noodles");
  await send(carol.page, "pizza");
  for (const u of [alice, bob, carol]) {
    await expect(messageWith(u.page, "pizza")).toHaveCount(1);
    await expect(messageWith(u.page, "noodles")).toHaveCount(1);
  }
  // Own messages carry no sender line; others' do.
  await expect(messageWith(bob.page, "noodles").getByTestId("message-sender")).toHaveCount(0);
  await expect(messageWith(alice.page, "noodles").getByTestId("message-sender")).toContainText(bob.user);
  const orders = [];
  for (const u of [alice, bob, carol]) orders.push((await expectOrdered(u.page)).filter((m) => m.kind === "user").map((m) => m.body));
  expect(orders[1]).toEqual(orders[0]);
  expect(orders[2]).toEqual(orders[0]);
  expect(new Set(orders[0])).toEqual(new Set(["where shall we eat?", "noodles", "pizza"]));
});
