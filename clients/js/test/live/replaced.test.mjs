// Close 4010 from a real edge. Needs a deployment with max_sockets_per_user = 1
// (tests/e2e/test_js_sdk.py::test_js_sdk_replaced_socket_does_not_reconnect);
// skipped in the main live run, whose deployment allows 10 sockets per user.
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { USERS, client, closeAll, sleep, until } from "./env.mjs";

afterEach(closeAll);

test("an older socket replaced by a newer one (4010) goes to closed with a `replaced` error and does not reconnect", { skip: process.env.SB_MAX_SOCKETS_PER_USER !== "1" && "needs a deployment with max_sockets_per_user = 1" }, async () => {
  const old = client("alice");
  await old.c.connect();
  const fresh = client("alice");
  await fresh.c.connect(); // the edge closes the older socket with 4010
  await until(() => old.c.state === "closed", "the older client closed");
  assert.equal(old.events.error.at(-1).code, "replaced");
  assert.ok(old.events.state.includes("closed"));
  await sleep(1500); // longer than its backoff would wait
  assert.equal(old.sockets.length, 1, "no automatic reconnect");
  assert.equal(fresh.c.state, "synced", "the newer one was not closed in turn");
  const sent = await fresh.c.send({ to: USERS.bob.user, body: "still here" });
  assert.ok(sent.seq >= 1);
  await assert.rejects(old.c.send({ to: USERS.bob.user, body: "x" }), (e) => e.code === "closed");
});
