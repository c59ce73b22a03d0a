// A real edge's limits. Needs a deployment with max_sockets_per_user = 1 and
// admit_per_sec = 2 (tests/e2e/test_js_sdk.py::test_js_sdk_limits_replaced_and_admission);
// skipped in the main live run, whose deployment has the defaults.
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { USERS, client, closeAll, sleep, until } from "./env.mjs";

afterEach(closeAll);
const skip = process.env.SB_LIMITS !== "1" && "needs a deployment with max_sockets_per_user = 1 and admit_per_sec = 2";

test("an older socket replaced by a newer one (4010) goes to closed with a `replaced` error and does not reconnect", { skip }, async () => {
  const old = client("alice");
  await old.c.connect();
  const fresh = client("alice");
  await fresh.c.connect(); // the edge closes the older socket with 4010
  await until(() => old.c.state === "closed", "the older client closed");
  assert.equal(old.events.error.at(-1).code, "replaced");
  await sleep(1500); // longer than its backoff would wait
  assert.equal(old.sockets.length, 1, "no automatic reconnect");
  assert.equal(fresh.c.state, "synced", "the newer one was not closed in turn");
  const sent = await fresh.c.send({ to: USERS.bob.user, body: "still here" });
  assert.ok(sent.seq >= 1);
  await assert.rejects(old.c.send({ to: USERS.bob.user, body: "x" }), (e) => e.code === "closed");
});

test("HTTP 503 at the upgrade (admission limit) is retried with backoff until every client is synced", { skip }, async () => {
  await sleep(1200); // let the admission bucket refill after the test above
  const clients = ["u1", "u2", "u3", "u4", "u5", "u6"].map((u) => client(u));
  const t0 = Date.now();
  await Promise.all(clients.map((x) => x.c.connect()));
  const refused = clients.filter((x) => x.events.state.includes("reconnecting"));
  assert.ok(refused.length >= 3, `six at once, two admitted per second: ${refused.length} were refused first`);
  assert.ok(clients.every((x) => x.c.state === "synced"));
  assert.ok(clients.every((x) => x.events.error.length === 0), "a refused upgrade is not an error for the app");
  console.log(`six clients synced in ${Date.now() - t0} ms; ${refused.length} retried after a 503`);
});
