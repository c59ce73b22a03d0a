// Session start, acks, persistence and resume, driven through a scripted fake WebSocket.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Client, MemoryStore } from "../dist/switchboard.js";
import { FakeServer, jwt, msg, record, sleep, until } from "./fake.mjs";

function client(server, opts = {}) {
  return new Client({ url: "ws://edge.test/ws", token: jwt("alice"), WebSocket: server.WebSocket, ...opts });
}

test("hello, welcome, replay, synced: connect() resolves at synced, replay delivered in order, states in order", async () => {
  const server = new FakeServer();
  const c = client(server);
  const ev = record(c);
  const connected = c.connect();
  const s = await server.socket(0);
  assert.equal(s.token(), jwt("alice"), "the token travels in the query string (browsers cannot set headers)");
  s.accept();
  assert.deepEqual(await s.next(), { type: "hello", cursor: null, epoch: null }, "a new device says hello with no cursor");
  s.push({ type: "welcome", user: "alice", epoch: "E1" });
  s.push(msg("c1", 1, 11));
  s.push(msg("c1", 2, 15));
  let resolved = false;
  connected.then(() => (resolved = true));
  await sleep(5);
  assert.equal(resolved, false, "connect() waits for synced, not welcome");
  s.push({ type: "synced", cursor: 15, groups: [] });
  await connected;
  assert.equal(c.user, "alice");
  assert.equal(c.state, "synced");
  assert.equal(c.cursor, 15);
  assert.deepEqual(ev.message.map((m) => [m.conv, m.seq]), [["c1", 1], ["c1", 2]]);
  assert.deepEqual(ev.state.map(([st]) => st), ["connecting", "connected", "synced"]);
  await c.close();
  assert.equal(c.state, "closed");
});

test("unknown frame types and fields are ignored", async () => {
  const server = new FakeServer();
  const c = client(server);
  const ev = record(c);
  const p = c.connect();
  const { s } = await server.session(0);
  await p;
  s.push({ type: "something.new", x: 1 });
  s.push({ ...msg("c", 1, 200), future_field: [1, 2] });
  s.onmessage({ data: "not json" });
  await until(() => ev.message.length === 1, "the message");
  assert.equal(c.state, "synced");
  assert.equal(ev.error.length, 0);
  await c.close();
});

test("acks are batched: one per ackIntervalMs, or at once every 100 messages, always the highest cursor", async () => {
  const server = new FakeServer();
  const c = client(server, { ackIntervalMs: 200 });
  const p = c.connect();
  const { s } = await server.session(0, { cursor: 1 });
  await p;
  for (let i = 1; i <= 5; i++) s.push(msg("c", i, 10 + i));
  assert.equal(s.framesOf("ack").length, 0, "no ack per message");
  await sleep(40);
  assert.equal(s.framesOf("ack").length, 0, "not before the interval");
  await until(() => s.framesOf("ack").length === 1, "the batched ack");
  assert.deepEqual(s.framesOf("ack"), [{ type: "ack", cursor: 15 }]);

  for (let i = 6; i <= 255; i++) s.push(msg("c", i, 100 + i));
  // 250 messages in one burst: acks at the 100th and 200th at once, the rest after the interval.
  assert.deepEqual(s.framesOf("ack").slice(1).map((a) => a.cursor), [205, 305]);
  await until(() => s.framesOf("ack").length === 4, "the trailing ack");
  assert.equal(s.framesOf("ack")[3].cursor, 355);
  await sleep(150);
  assert.equal(s.framesOf("ack").length, 4, "nothing new, no ack");
  await c.close();
});

test("messages without a cursor (large groups) move no cursor and are not acked", async () => {
  const server = new FakeServer();
  const c = client(server, { ackIntervalMs: 20 });
  const ev = record(c);
  const p = c.connect();
  const { s } = await server.session(0, { cursor: 50 });
  await p;
  s.push(msg("big", 1, null));
  await sleep(60);
  assert.equal(ev.message.length, 1);
  assert.equal(c.cursor, 50);
  assert.equal(s.framesOf("ack").length, 0);
  await c.close();
});

test("store persistence and resume: cursor, epoch and per-conversation seqs survive a restart, keyed per user", async () => {
  const store = new MemoryStore();
  const server = new FakeServer();
  const c1 = client(server, { store, ackIntervalMs: 20 });
  const p = c1.connect();
  const { s } = await server.session(0, { epoch: "E7", cursor: 30, replay: [msg("a", 1, 21), msg("a", 2, 25), msg("b", 1, 30)] });
  await p;
  await c1.close();
  const saved = JSON.parse(await store.get("switchboard:alice:state"));
  assert.deepEqual(saved, { cursor: 30, epoch: "E7", seqs: { a: 2, b: 1 } });
  assert.equal(await store.get("switchboard:bob:state"), null);

  // A new page load with the same store resumes: hello carries cursor and epoch,
  // and a replay that overlaps what was already handed over is deduplicated.
  const server2 = new FakeServer();
  const c2 = client(server2, { store });
  const ev = record(c2);
  const p2 = c2.connect();
  const { hello } = await server2.session(0, { epoch: "E7", cursor: 40, replay: [msg("a", 2, 25), msg("a", 3, 35), msg("b", 2, 40)] });
  await p2;
  assert.deepEqual(hello, { type: "hello", cursor: 30, epoch: "E7" });
  assert.deepEqual(ev.message.map((m) => `${m.conv}#${m.seq}`), ["a#3", "b#2"]);
  await c2.close();

  // Another user's token on the same store starts fresh (no cursor of alice's).
  const server3 = new FakeServer();
  const c3 = new Client({ url: "ws://edge.test/ws", token: jwt("bob"), WebSocket: server3.WebSocket, store });
  const p3 = c3.connect();
  const { hello: hello3 } = await server3.session(0, { user: "bob" });
  await p3;
  assert.deepEqual(hello3, { type: "hello", cursor: null, epoch: null });
  await c3.close();
});

test("a synced cursor of 0 (a brand-new fabric's empty INBOX) is kept: the next page load resumes from 0 instead of starting as a new device", async () => {
  // Before the fix, 0 never replaced null: every reconnect said hello with no
  // cursor, got no replay, and the messages sent meanwhile never arrived.
  const store = new MemoryStore();
  const server = new FakeServer();
  const c1 = client(server, { store });
  const p = c1.connect();
  await server.session(0, { epoch: "E0", cursor: 0 });
  await p;
  assert.equal(c1.cursor, 0);
  await c1.close();
  const server2 = new FakeServer();
  const c2 = client(server2, { store });
  const p2 = c2.connect();
  const { hello } = await server2.session(0, { epoch: "E0", cursor: 3, replay: [msg("a", 1, 3)] });
  await p2;
  assert.deepEqual(hello, { type: "hello", cursor: 0, epoch: "E0" });
  await c2.close();
});

test("an opaque (non-JWT) token: the state is keyed by the welcome's user, and the client resumes from it", async () => {
  const store = new MemoryStore();
  await store.set("switchboard:alice:state", JSON.stringify({ cursor: 77, epoch: "E1", seqs: { a: 5 } }));
  const server = new FakeServer();
  const c = new Client({ url: "ws://edge.test/ws", token: "opaque-token", WebSocket: server.WebSocket, store, backoff: { baseMs: 1, maxMs: 5 } });
  const p = c.connect();
  const first = await server.socket(0);
  first.accept();
  assert.deepEqual(await first.next("hello"), { type: "hello", cursor: null, epoch: null });
  first.push({ type: "welcome", user: "alice", epoch: "E1" });
  // The client learns who it is, loads alice's state and reconnects with her cursor.
  const { hello } = await server.session(1);
  await p;
  assert.deepEqual(hello, { type: "hello", cursor: 77, epoch: "E1" });
  assert.ok(first.closedByClient, "the first socket was closed by the client");
  await c.close();
});

test("requests before connect() or after close() fail with `closed`", async () => {
  const server = new FakeServer();
  const c = client(server);
  await assert.rejects(c.send({ to: "bob", body: "x" }), (e) => e.code === "closed" && e.name === "SwitchboardError");
  const p = c.connect();
  await server.session(0);
  await p;
  const pending = c.history("c1");
  await c.close();
  await assert.rejects(pending, (e) => e.code === "closed");
  await assert.rejects(c.listConversations(), (e) => e.code === "closed");
});
