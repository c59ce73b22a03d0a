// Reload keeps the conversations, their history and the unread counts
// (from the server: conv.list and history, not only from what the tab had),
// and scroll-back pages through a long history without gaps or duplicates.
import { test, expect } from "@playwright/test";
import { convItem, expectOnline, expectOrdered, expectUnread, messageWith, messages, newUser, openConv, send, startDm, uid } from "../lib.mjs";

test("reload keeps history and unread counts", async ({ browser }) => {
  const bob = await newUser(browser, uid("bob"));
  const alice = await newUser(browser, uid("alice"));
  const carol = await newUser(browser, uid("carol"));

  await startDm(alice.page, bob.user);
  for (const body of ["a1", "a2", "a3"]) await send(alice.page, body);
  await startDm(carol.page, bob.user);
  for (const body of ["c1", "c2"]) await send(carol.page, body);
  const convA = await messageWith(alice.page, "a1").getAttribute("data-conv");
  const convC = await messageWith(carol.page, "c1").getAttribute("data-conv");

  await expectUnread(bob.page, convA, 3);
  await expectUnread(bob.page, convC, 2);
  // Newest activity first.
  await expect(bob.page.getByTestId("conv-item").first()).toHaveAttribute("data-conv", convC);

  // Bob reads alice's conversation and answers there; carol's stays unread.
  await openConv(bob.page, convA);
  await expectUnread(bob.page, convA, 0);
  await send(bob.page, "b1");
  await expect(messageWith(bob.page, "b1").getByTestId("tick")).toHaveAttribute("data-state", /sent|delivered|read/);

  await bob.page.reload();
  await expectOnline(bob.page, bob.user);
  await expectUnread(bob.page, convA, 0);
  await expectUnread(bob.page, convC, 2);
  await expect(convItem(bob.page, convA).getByTestId("conv-last")).toContainText("b1");
  await expect(convItem(bob.page, convC).getByTestId("conv-last")).toContainText("c2");
  await expect(bob.page.getByTestId("conv-item").first()).toHaveAttribute("data-conv", convA);

  await openConv(bob.page, convA);
  await expect(messages(bob.page)).toHaveCount(4);
  expect((await expectOrdered(bob.page)).map((m) => [m.body, m.own])).toEqual([
    ["a1", "false"], ["a2", "false"], ["a3", "false"], ["b1", "true"],
  ]);

  // A message arriving after the reload counts once more, and reading clears it.
  await send(carol.page, "c3");
  await expectUnread(bob.page, convC, 3);
  await openConv(bob.page, convC);
  expect((await expectOrdered(bob.page)).map((m) => m.body)).toEqual(["c1", "c2", "c3"]);
  await expectUnread(bob.page, convC, 0);
  await bob.page.reload();
  await expectOnline(bob.page, bob.user);
  await expectUnread(bob.page, convC, 0);
});

test("scroll-back loads older history in pages, in order, without gaps", async ({ browser }) => {
  const alice = await newUser(browser, uid("alice"));
  const bob = await newUser(browser, uid("bob"));
  await startDm(alice.page, bob.user);
  await send(alice.page, "m000");
  const conv = await messageWith(alice.page, "m000").getAttribute("data-conv");
  // Seeded through the app's own SDK client (faster than typing 150 messages).
  const total = 150;
  await alice.page.evaluate(async ({ conv, total }) => {
    for (let i = 1; i < total; i++) await window.__sbApp.client.send({ conv, body: `m${String(i).padStart(3, "0")}` });
  }, { conv, total });

  await bob.page.reload();
  await expectOnline(bob.page, bob.user);
  await openConv(bob.page, conv);
  await expect(messageWith(bob.page, "m149")).toHaveCount(1);
  const firstPage = await messages(bob.page).count();
  expect(firstPage, "the first screen is a page of recent history, not all of it").toBeLessThan(total);

  // Older pages: by the control, then by scrolling to the top.
  let rounds = 0;
  while ((await messageWith(bob.page, "m000").count()) === 0) {
    const before = await messages(bob.page).count();
    if (rounds % 2 === 0) await bob.page.getByTestId("load-older").click();
    else await bob.page.getByTestId("messages").evaluate((el) => { el.scrollTop = 0; el.dispatchEvent(new Event("scroll")); });
    await expect.poll(() => messages(bob.page).count(), { message: "an older page arrives" }).toBeGreaterThan(before);
    expect(++rounds).toBeLessThan(total);
  }
  await expect(messages(bob.page)).toHaveCount(total);
  const list = await expectOrdered(bob.page);
  expect(list.map((m) => m.body)).toEqual(Array.from({ length: total }, (_, i) => `m${String(i).padStart(3, "0")}`));
});
