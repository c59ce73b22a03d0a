// The edge process is killed (kill -9, no goodbye to the sockets): both tabs
// show the reconnecting state, `switchboard up` restarts the edge, the tabs
// come back by themselves and messages flow again, none lost or doubled.
import { test, expect } from "@playwright/test";
import { edgePid, expectOnline, expectOrdered, messageWith, messages, newUser, openConv, send, startDm, uid } from "../lib.mjs";

test("a killed edge is survived with the reconnecting state shown", async ({ browser }) => {
  const alice = await newUser(browser, uid("alice"));
  const bob = await newUser(browser, uid("bob"));
  await startDm(alice.page, bob.user);
  await send(alice.page, "before the crash");
  const conv = await messageWith(alice.page, "before the crash").getAttribute("data-conv");
  await openConv(bob.page, conv);
  await expect(messageWith(bob.page, "before the crash")).toHaveCount(1);

  const pid = edgePid();
  expect(pid, "the edge child of switchboard up").toBeTruthy();
  process.kill(pid, "SIGKILL");

  for (const page of [alice.page, bob.page]) {
    await expect(page.getByTestId("conn-state")).toHaveAttribute("data-state", "reconnecting");
    await expect(page.getByTestId("reconnecting")).toBeVisible();
  }
  // Typed during the outage: shown as sending, sent once the edge is back.
  await send(alice.page, "during the crash");
  await expect(messageWith(alice.page, "during the crash").getByTestId("tick")).toHaveAttribute("data-state", "sending");

  // `up` restarts the edge (0.5 s pause, then 1-3 s start); the SDK's backoff
  // is at most 10 s, so 40 s is generous on a busy box.
  await expect.poll(() => edgePid(), { timeout: 30_000, message: "up restarts the edge" }).not.toBe(pid);
  for (const [page, user] of [[alice.page, alice.user], [bob.page, bob.user]]) {
    await expect(page.getByTestId("conn-state")).toHaveAttribute("data-state", "online", { timeout: 40_000 });
    await expectOnline(page, user);
    await expect(page.getByTestId("reconnecting")).toBeHidden();
  }
  await expect(messageWith(alice.page, "during the crash").getByTestId("tick")).toHaveAttribute("data-state", /sent|delivered|read/);
  await expect(messageWith(bob.page, "during the crash")).toHaveCount(1);

  await send(bob.page, "after the crash");
  await expect(messageWith(alice.page, "after the crash")).toHaveCount(1);
  for (const page of [alice.page, bob.page]) {
    await expect(messages(page)).toHaveCount(3);
    expect((await expectOrdered(page)).map((m) => m.body)).toEqual(["before the crash", "during the crash", "after the crash"]);
  }
});
