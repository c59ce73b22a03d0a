// Reconnect: backoff bounds and jitter, close codes (4001/4010 terminal,
// others retried), resend of unconfirmed sends with the same id.
import assert from "node:assert/strict";
import { test } from "node:test";
import { backoffDelay } from "../dist/backoff.js";
import { Client } from "../dist/switchboard.js";
import { FakeServer, jwt, record, sleep, until } from "./fake.mjs";

function client(server, opts = {}) {
  return new Client({ url: "ws://edge.test/ws", token: jwt("alice"), WebSocket: server.WebSocket, backoff: { baseMs: 5, maxMs: 40 }, ...opts });
}

test("backoffDelay is full jitter: within [0, min(max, base*2^n)), spread over that range, capped", () => {
  assert.equal(backoffDelay(0, 100, 10000, () => 0), 0);
  assert.equal(backoffDelay(0, 100, 10000, () => 0.999999), 99);
  assert.equal(backoffDelay(3, 100, 10000, () => 0.999999), 799);
  assert.equal(backoffDelay(20, 100, 10000, () => 0.999999), 9999, "capped at maxMs");
  assert.equal(backoffDelay(5000, 100, 10000, () => 0.5), 5000, "a huge attempt count does not overflow");
  for (const n of [0, 2, 6, 12]) {
    const cap = Math.min(10000, 100 * 2 ** n);
    const xs = Array.from({ length: 2000 }, () => backoffDelay(n, 100, 10000));
    assert.ok(xs.every((x) => x >= 0 && x < cap), `attempt ${n} within [0, ${cap})`);
    // Jitter, not a fixed delay: the draws cover the range (a storm spreads out).
    assert.ok(Math.min(...xs) < cap * 0.1 && Math.max(...xs) > cap * 0.9, `attempt ${n} spread over the range`);
    assert.ok(new Set(xs).size > Math.min(cap, 2000) / 4, `attempt ${n} varied`);
  }
});

test("failed upgrades (HTTP 503, refused) are retried with growing, jittered, bounded delays", async () => {
  const server = new FakeServer();
  const c = client(server);
  const ev = record(c);
  const p = c.connect();
  for (let n = 0; n < 8; n++) (await server.socket(n)).fail();
  await server.session(8);
  await p;
  const retries = ev.state.filter(([s]) => s === "reconnecting").map(([, info]) => info);
  assert.equal(retries.length, 8);
  retries.forEach((info, n) => {
    assert.equal(info.code, 1006);
    assert.ok(info.retryInMs >= 0 && info.retryInMs < Math.min(40, 5 * 2 ** n), `retry ${n}: ${info.retryInMs} ms`);
  });
  assert.equal(c.state, "synced");
  await c.close();
});

for (const code of [1013, 1011, 1001, 4008, 4009, 1006, 4002, 1000]) {
  test(`close ${code}: reconnect with backoff, resume from the cursor`, async () => {
    const server = new FakeServer();
    const c = client(server);
    const ev = record(c);
    const p = c.connect();
    const { s } = await server.session(0, { cursor: 42, epoch: "E" });
    await p;
    s.drop(code, "bye");
    assert.equal(c.state, "reconnecting");
    assert.deepEqual(ev.state.at(-1)[1].code, code);
    const { hello } = await server.session(1, { cursor: 43, epoch: "E" });
    assert.deepEqual(hello, { type: "hello", cursor: 42, epoch: "E" });
    await until(() => c.state === "synced", "synced again");
    await c.close();
  });
}

test("close 4001 with a fixed token: closed for good, an `unauthorized` error with a human message", async () => {
  const server = new FakeServer();
  const c = client(server);
  const ev = record(c);
  const p = c.connect();
  const s = await server.socket(0);
  s.accept();
  await s.next("hello");
  s.drop(4001, "invalid token: signature");
  await assert.rejects(p, (e) => e.code === "unauthorized" && e.message === "Your session token was refused. Sign in again." && e.retry === false);
  assert.equal(c.state, "closed");
  assert.deepEqual(ev.state.at(-1), ["closed", { code: 4001, reason: "invalid token: signature" }]);
  assert.equal(ev.error.length, 1);
  assert.equal(ev.error[0].code, "unauthorized");
  assert.ok(!/undefined|Error/.test(ev.error[0].message));
  await sleep(100);
  assert.equal(server.sockets.length, 1, "never retried with the same token");
});

test("close 4001 with a token function: a fresh token is fetched and used; the same token again is not retried", async () => {
  const server = new FakeServer();
  let n = 0;
  const tokens = [jwt("alice", "1"), jwt("alice", "2"), jwt("alice", "2")];
  const c = client(server, { token: async () => tokens[n++] });
  const ev = record(c);
  const p = c.connect();
  const s0 = await server.socket(0);
  s0.accept();
  s0.drop(4001, "token expired");
  const { s } = await server.session(1);
  await p;
  assert.equal(s0.token(), tokens[0]);
  assert.equal(s.token(), tokens[1], "the function was called again for the reconnect");
  s.drop(4001, "token expired");
  await until(() => c.state === "closed", "closed: the function returned the refused token");
  assert.equal(ev.error.at(-1).code, "unauthorized");
  assert.equal(server.sockets.length, 2, "the refused token was not sent again");
});

test("close 4010 (replaced by another socket of the user): closed, no automatic reconnect; connect() again works", async () => {
  const server = new FakeServer();
  const c = client(server);
  const ev = record(c);
  const p = c.connect();
  const { s } = await server.session(0, { cursor: 5 });
  await p;
  s.drop(4010, "too many connections for this user");
  assert.equal(c.state, "closed");
  assert.equal(ev.error.at(-1).code, "replaced");
  await sleep(80);
  assert.equal(server.sockets.length, 1);
  const again = c.connect(); // the user asked to continue here
  const { hello } = await server.session(1, { cursor: 6 });
  await again;
  assert.equal(hello.cursor, 5, "resumes from its cursor");
  await c.close();
});

test("unconfirmed sends are resent after a reconnect with the same id, and resolve with `sent`", async () => {
  const server = new FakeServer();
  const c = client(server);
  const p = c.connect();
  const { s } = await server.session(0);
  await p;
  const sending = c.send({ to: "bob", body: "hi" });
  const f1 = await s.next("send");
  assert.ok(/^[A-Za-z0-9_-]{16,64}$/.test(f1.id), `a random id of 16+ characters: ${f1.id}`);
  s.drop(1006, "");
  const s2 = await server.socket(1);
  s2.accept();
  await s2.next("hello");
  const f2 = await s2.next("send");
  assert.deepEqual(f2, f1, "the same frame, the same id");
  s2.push({ type: "welcome", user: "alice", epoch: "E1" });
  s2.push({ type: "synced", cursor: 1, groups: [] });
  s2.push({ type: "sent", id: f1.id, conv: "dm-x", seq: 3, ts: 99 });
  assert.deepEqual(await sending, { id: f1.id, conv: "dm-x", seq: 3, ts: 99 });
  await c.close();
});

test("a send while disconnected waits and goes out after the reconnect's hello", async () => {
  const server = new FakeServer();
  const c = client(server);
  const p = c.connect();
  const { s } = await server.session(0);
  await p;
  s.drop(1013, "try again later");
  const sending = c.send({ conv: "team", body: "queued", id: "my-own-id-0000001" });
  const s2 = await server.socket(1);
  s2.accept();
  assert.equal((await s2.next()).type, "hello", "hello first");
  const f = await s2.next();
  assert.deepEqual(f, { type: "send", id: "my-own-id-0000001", body: "queued", conv: "team" });
  s2.push({ type: "sent", id: f.id, conv: "team", seq: 1, ts: 5 });
  assert.equal((await sending).seq, 1);
  await c.close();
});

test("retry:true errors resend the same id after a backoff; retry:false errors reject with the code", async () => {
  const server = new FakeServer();
  const c = client(server);
  const p = c.connect();
  const { s } = await server.session(0);
  await p;
  const a = c.send({ conv: "team", body: "x" });
  const f = await s.next("send");
  s.push({ type: "error", ref: f.id, code: "unavailable", message: "sequencer did not answer", retry: true });
  const again = await s.next("send");
  assert.equal(again.id, f.id);
  s.push({ type: "error", ref: f.id, code: "rate_limited", message: "slow down", retry: true });
  assert.equal((await s.next("send")).id, f.id);
  s.push({ type: "sent", id: f.id, conv: "team", seq: 9, ts: 1 });
  assert.equal((await a).seq, 9);

  const b = c.send({ conv: "team-2", body: "x" });
  const g = await s.next("send");
  s.push({ type: "error", ref: g.id, code: "not_member", message: "alice is not a member of team-2", retry: false });
  await assert.rejects(b, (e) => e.code === "not_member" && e.message === "alice is not a member of team-2" && e.retry === false);
  await c.close();
});

test("a conv.create in flight when the socket drops fails with connection_lost (it is not idempotent); reads are resent", async () => {
  const server = new FakeServer();
  const c = client(server);
  const p = c.connect();
  const { s } = await server.session(0);
  await p;
  const creating = c.createConversation(["bob"], "t");
  const paging = c.history("team", { before: 10, limit: 5 });
  const cr = await s.next("conv.create");
  const h = await s.next("history");
  s.drop(1001, "going away");
  await assert.rejects(creating, (e) => e.code === "connection_lost" && e.retry === true);
  const { s: s2 } = await server.session(1);
  const h2 = await s2.next("history");
  assert.deepEqual(h2, h);
  assert.equal(s2.framesOf("conv.create").length, 0);
  assert.ok(cr.members);
  s2.push({ type: "history", ref: h.id, conv: "team", messages: [], more: false });
  assert.deepEqual(await paging, { conv: "team", messages: [], more: false });
  await c.close();
});

test("a flapping connection (synced, then dropped at once) keeps growing the backoff; one healthy for 5 s resets it", async (t) => {
  // Math.random pinned near 1: each delay is its attempt's cap, so growth and reset are visible.
  const random = Math.random;
  Math.random = () => 0.9999;
  t.after(() => (Math.random = random));
  const server = new FakeServer();
  const c = client(server, { backoff: { baseMs: 4, maxMs: 1000 } });
  const ev = record(c);
  const p = c.connect();
  let n = 0;
  for (; n < 5; n++) {
    const { s } = await server.session(n);
    await until(() => c.state === "synced", "synced");
    s.drop(1011, "");
  }
  await p;
  const delays = ev.state.filter(([s]) => s === "reconnecting").map(([, i]) => i.retryInMs);
  assert.deepEqual(delays, [3, 7, 15, 31, 63]);
  const { s } = await server.session(n);
  await until(() => c.state === "synced", "synced");
  await sleep(5100);
  s.drop(1011, "");
  assert.equal(ev.state.at(-1)[1].retryInMs, 3, "back to the first step after a healthy connection");
  await c.close();
});

test("close() while the upgrade is still pending (node's ws) does not crash the process", async () => {
  // ws reports "closed before the connection was established" as an error
  // event: with no listener left, node would throw it as uncaught.
  const net = await import("node:net");
  const { WebSocket } = await import("ws");
  const srv = net.createServer(() => {}).listen(0, "127.0.0.1"); // accepts, never answers the upgrade
  await new Promise((r) => srv.on("listening", r));
  const c = new Client({ url: `ws://127.0.0.1:${srv.address().port}/ws`, token: jwt("alice"), WebSocket });
  const connecting = c.connect();
  await sleep(100);
  await c.close();
  await assert.rejects(connecting, (e) => e.code === "closed");
  await sleep(100);
  srv.close();
});

test("a token function that fails is reported (token_failed) and retried with backoff", async () => {
  const server = new FakeServer();
  let n = 0;
  const c = client(server, { token: async () => { if (n++ === 0) throw new Error("network down"); return jwt("alice"); } });
  const ev = record(c);
  const p = c.connect();
  await server.session(0);
  await p;
  assert.equal(ev.error.length, 1);
  assert.equal(ev.error[0].code, "token_failed");
  assert.match(ev.error[0].message, /network down/);
  assert.equal(ev.state.filter(([s]) => s === "reconnecting").length, 1);
  await c.close();
});

test("the browser's `online` event cuts a pending reconnect wait short", async (t) => {
  const target = new EventTarget(); // what `window` is in a browser
  globalThis.addEventListener = target.addEventListener.bind(target);
  globalThis.removeEventListener = target.removeEventListener.bind(target);
  const random = Math.random;
  Math.random = () => 0.5; // a 30 s wait
  t.after(() => { delete globalThis.addEventListener; delete globalThis.removeEventListener; Math.random = random; });
  const server = new FakeServer();
  const c = client(server, { backoff: { baseMs: 60000, maxMs: 60000 } });
  const p = c.connect();
  (await server.socket(0)).fail();
  assert.equal(c.state, "reconnecting");
  await sleep(20);
  assert.equal(server.sockets.length, 1, "waiting (30 s)");
  target.dispatchEvent(new Event("online"));
  await server.session(1);
  await p;
  await c.close();
  target.dispatchEvent(new Event("online"));
  await sleep(10);
  assert.equal(server.sockets.length, 2, "a closed client ignores it");
});

test("a token function's token is renewed 30 s before its exp: a new socket with a fresh token, no state event, nothing lost", async () => {
  const server = new FakeServer();
  const soon = () => Math.floor(Date.now() / 1000) + 32; // refresh due in 1-2 s
  const tokens = [jwt("alice", "1", soon()), jwt("alice", "2")];
  let calls = 0;
  const c = client(server, { token: () => tokens[Math.min(calls++, 1)] });
  const ev = record(c);
  const p = c.connect();
  const { s } = await server.session(0, { cursor: 10 });
  await p;
  const states = ev.state.length;
  const s1 = await server.socket(1);
  assert.deepEqual(s.closedByClient, { code: 1000, reason: "client closed" }, "the old socket closed by the client");
  assert.equal(s1.token(), tokens[1], "the new socket carries the fresh token");
  assert.equal(c.state, "synced", "the app still sees synced");
  const sending = c.send({ conv: "team", body: "during the renewal" });
  s1.accept();
  assert.deepEqual(await s1.next(), { type: "hello", cursor: 10, epoch: "E1" }, "resumes from the cursor");
  const f = await s1.next("send");
  assert.equal(f.body, "during the renewal");
  s1.push({ type: "welcome", user: "alice", epoch: "E1" });
  s1.push({ type: "synced", cursor: 10, groups: [] });
  s1.push({ type: "sent", id: f.id, conv: "team", seq: 1, ts: 1 });
  await sending;
  assert.equal(ev.state.length, states, "no state event for a planned renewal");
  assert.equal(calls, 2);
  await sleep(50);
  assert.equal(server.sockets.length, 2, "the fresh token (far exp) plans no renewal");
  await c.close();
});

test("no renewal with a fixed token, or when the token is already within 31 s of exp (the 4001 path handles it)", async () => {
  for (const token of [jwt("alice", "", Math.floor(Date.now() / 1000) + 31), () => jwt("alice", "", Math.floor(Date.now() / 1000) + 30)]) {
    const server = new FakeServer();
    const c = client(server, { token });
    const p = c.connect();
    await server.session(0);
    await p;
    await sleep(1300);
    assert.equal(server.sockets.length, 1);
    await c.close();
  }
});
