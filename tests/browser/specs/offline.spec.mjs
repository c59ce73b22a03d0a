// An offline user's tab catches up in order: a closed tab that is opened
// again, and an open tab whose network is cut and comes back (the app must
// show it is not online meanwhile, and what was sent offline goes out once).
import { test, expect } from "@playwright/test";
import { convItem, expectOnline, expectOrdered, expectUnread, messageWith, messages, newUser, openAs, openConv, send, startDm, uid } from "../lib.mjs";

test("a closed tab opened again shows what it missed, in order, with the unread count", async ({ browser }) => {
  const alice = await newUser(browser, uid("alice"));
  const bob = await newUser(browser, uid("bob"));
  await startDm(alice.page, bob.user);
  await send(alice.page, "before");
  const conv = await messageWith(alice.page, "before").getAttribute("data-conv");
  await openConv(bob.page, conv);
  await expect(messageWith(bob.page, "before")).toHaveCount(1);
  await bob.page.close();

  const missed = Array.from({ length: 6 }, (_, i) => `missed ${i + 1}`);
  for (const body of missed) await send(alice.page, body);
  await expect(messages(alice.page)).toHaveCount(1 + missed.length);
  await expect(messageWith(alice.page, missed.at(-1)).getByTestId("tick")).toHaveAttribute("data-state", /sent|delivered|read/);

  const again = await openAs(bob.context, bob.user, bob.token);
  await expectUnread(again, conv, missed.length);
  await expect(convItem(again, conv).getByTestId("conv-last")).toContainText(missed.at(-1));
  await openConv(again, conv);
  await expect(messages(again)).toHaveCount(1 + missed.length);
  expect((await expectOrdered(again)).map((m) => m.body)).toEqual(["before", ...missed]);
  await expectUnread(again, conv, 0);
});

test("a tab whose network is cut shows it, then catches up in order and sends what was typed offline", async ({ browser }) => {
  const alice = await newUser(browser, uid("alice"));
  const bobUser = uid("bob");
  // Bob's WebSocket goes through a Playwright route, so the test can cut it
  // like a network would (Chromium's offline emulation alone keeps open sockets).
  const bobContext = await browser.newContext();
  const sockets = [];
  await bobContext.routeWebSocket(/\/ws/, (ws) => {
    const server = ws.connectToServer();
    sockets.push({ ws, server });
  });
  const bob = await openAs(bobContext, bobUser);

  await startDm(alice.page, bobUser);
  await send(alice.page, "before");
  const conv = await messageWith(alice.page, "before").getAttribute("data-conv");
  await openConv(bob, conv);
  await expect(messageWith(bob, "before")).toHaveCount(1);

  // Cut: new connections fail (offline) and the open socket drops without a close handshake.
  await bobContext.setOffline(true);
  for (const { ws, server } of sockets.splice(0)) {
    await server.close().catch(() => {});
    await ws.close({ code: 1006 }).catch(() => {});
  }
  await expect(bob.getByTestId("conn-state")).toHaveAttribute("data-state", /reconnecting|offline/);

  const during = Array.from({ length: 8 }, (_, i) => `during ${i + 1}`);
  for (const body of during) await send(alice.page, body);
  await expect(messageWith(alice.page, during.at(-1)).getByTestId("tick")).toHaveAttribute("data-state", /sent|delivered|read/);
  await send(bob, "typed while offline");
  await expect(messageWith(bob, "typed while offline").getByTestId("tick")).toHaveAttribute("data-state", "sending");
  await expect(messageWith(bob, during[0])).toHaveCount(0);

  await bobContext.setOffline(false);
  await expectOnline(bob, bobUser);
  await expect(messageWith(bob, during.at(-1))).toHaveCount(1);
  await expect(messageWith(bob, "typed while offline").getByTestId("tick")).toHaveAttribute("data-state", /sent|delivered|read/);
  await expect(messageWith(alice.page, "typed while offline")).toHaveCount(1);

  // Bob's own offline message was sequenced after everything alice sent
  // before it reached the server; compare the sets, then the order per sender.
  const list = await expectOrdered(bob);
  expect(list.map((m) => m.body).sort()).toEqual(["before", ...during, "typed while offline"].sort());
  expect(list.filter((m) => m.own === "false").map((m) => m.body)).toEqual(["before", ...during]);
  await expect(messages(alice.page)).toHaveCount(list.length);
  expect((await expectOrdered(alice.page)).map((m) => m.body)).toEqual(list.map((m) => m.body));
});
