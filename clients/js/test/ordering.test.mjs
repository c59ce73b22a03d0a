// Per-conversation order, dedup by (conv, seq), gap fill from history and
// resync ranges, driven through a scripted fake WebSocket.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Client, MemoryStore } from "../dist/switchboard.js";
import { FakeServer, jwt, msg, prng, record, sleep, until } from "./fake.mjs";

async function started(server, opts = {}, session = {}) {
  const c = new Client({ url: "ws://edge.test/ws", token: jwt("alice"), WebSocket: server.WebSocket, ...opts });
  const ev = record(c);
  const p = c.connect();
  const { s, hello } = await server.session(0, session);
  await p;
  return { c, ev, s, hello };
}

const keys = (ms) => ms.map((m) => `${m.conv}#${m.seq}`);

test("property: under any interleaving of live, replay and duplicates, each (conv, seq) fires once, in seq order", async () => {
  // Seeded: a failure names its seed, and the same seed replays the same arrival order.
  for (let seed = 1; seed <= 25; seed++) {
    const rnd = prng(seed);
    const server = new FakeServer();
    const convs = ["a", "b", "c"].slice(0, 1 + Math.floor(rnd() * 3));
    const log = {};
    for (const conv of convs) log[conv] = Array.from({ length: 1 + Math.floor(rnd() * 30) }, (_, i) => msg(conv, i + 1));
    server.log = log; // history answers from the full log (gap fill)
    const { c, ev, s } = await started(server, { gapWaitMs: 15 }, { replay: [] });
    // Every conversation's first message arrives first (a device that was there
    // from the start); then everything else, each 1-3 times, shuffled.
    let cursor = 1000;
    const arrivals = [];
    for (const conv of convs) {
      for (const m of log[conv].slice(1)) {
        const copies = 1 + Math.floor(rnd() * 3);
        for (let k = 0; k < copies; k++) arrivals.push(rnd() < 0.5 ? { ...m, cursor: ++cursor } : { ...m });
      }
    }
    for (let i = arrivals.length - 1; i > 0; i--) {
      // A local shuffle (each item moves a few places at most) half the time,
      // a full one otherwise: both near-order and chaos are covered.
      const j = rnd() < 0.5 ? Math.max(0, i - Math.floor(rnd() * 4)) : Math.floor(rnd() * (i + 1));
      [arrivals[i], arrivals[j]] = [arrivals[j], arrivals[i]];
    }
    for (const conv of convs) s.push(log[conv][0]);
    for (const m of arrivals) {
      s.push(m);
      if (rnd() < 0.1) await sleep(1);
    }
    const total = convs.reduce((n, conv) => n + log[conv].length, 0);
    await until(() => ev.message.length >= total, `seed ${seed}: all ${total} messages`, 5000);
    await sleep(30);
    for (const conv of convs) {
      const got = ev.message.filter((m) => m.conv === conv).map((m) => m.seq);
      assert.deepEqual(got, log[conv].map((m) => m.seq), `seed ${seed}, conv ${conv}: once each, in order`);
    }
    assert.equal(ev.message.length, total, `seed ${seed}: no duplicate`);
    await c.close();
  }
});

test("gap: a missing seq is waited for 300 ms (default), then fetched with history from the last seq handed over", async () => {
  const server = new FakeServer();
  const { c, ev, s } = await started(server);
  s.push(msg("c", 1, 101));
  s.push(msg("c", 3, 103));
  const t0 = Date.now();
  assert.deepEqual(keys(ev.message), ["c#1"], "seq 3 is held while seq 2 is missing");
  const h = await s.next("history", 2000);
  const waited = Date.now() - t0;
  assert.ok(waited >= 280 && waited < 1000, `history asked after ~300 ms (${waited} ms)`);
  assert.equal(h.conv, "c");
  assert.equal(h.after, 1, "fetches from the last seq handed over");
  assert.deepEqual(keys(ev.message), ["c#1"]);
  s.push({ type: "history", ref: h.id, conv: "c", messages: [msg("c", 2), msg("c", 3)], more: false });
  await until(() => ev.message.length === 3, "the filled gap");
  assert.deepEqual(keys(ev.message), ["c#1", "c#2", "c#3"]);
  await c.close();
});

test("gap: a missing seq that arrives live within the wait is not fetched", async () => {
  const server = new FakeServer();
  const { c, ev, s } = await started(server);
  s.push(msg("c", 1, 101));
  s.push(msg("c", 3, 103));
  await sleep(100);
  s.push(msg("c", 2, 102));
  assert.deepEqual(keys(ev.message), ["c#1", "c#2", "c#3"]);
  await sleep(400);
  assert.equal(s.framesOf("history").length, 0, "no history request");
  await c.close();
});

test("first sight of a conversation mid-stream starts at the lowest seq seen within the wait, no history", async () => {
  const server = new FakeServer();
  const { c, ev, s } = await started(server, { gapWaitMs: 50 });
  s.push(msg("n", 8, 101));
  s.push(msg("n", 7, 102));
  s.push(msg("n", 9, 103));
  assert.equal(ev.message.length, 0);
  await until(() => ev.message.length === 3, "the held messages");
  assert.deepEqual(keys(ev.message), ["n#7", "n#8", "n#9"]);
  assert.equal(s.framesOf("history").length, 0);
  await c.close();
});

test("resync: every range is filled from history, paging with `after` until `upto`, then the resync cursor is persisted", async () => {
  const store = new MemoryStore();
  await store.set("switchboard:alice:state", JSON.stringify({ cursor: 900, epoch: "OLD", seqs: { a: 3 } }));
  const server = new FakeServer();
  const log = { a: Array.from({ length: 6 }, (_, i) => msg("a", i + 1)), b: Array.from({ length: 450 }, (_, i) => msg("b", i + 1)) };
  server.log = log;
  const c = new Client({ url: "ws://edge.test/ws", token: jwt("alice"), WebSocket: server.WebSocket, store });
  const ev = record(c);
  const p = c.connect();
  const s = await server.socket(0);
  s.accept();
  assert.deepEqual(await s.next("hello"), { type: "hello", cursor: 900, epoch: "OLD" });
  s.push({ type: "welcome", user: "alice", epoch: "NEW" });
  // As the server encodes them: `after` omitted when 0.
  const ranges = [{ conv: "a", upto: 5 }, { conv: "b", upto: 420 }];
  s.push({ type: "resync", reason: "epoch_changed", cursor: 7, ranges });
  s.push({ type: "synced", cursor: 7, groups: [] });
  await p;
  assert.deepEqual(ev.resync, [{ type: "resync", reason: "epoch_changed", cursor: 7, ranges }]);
  await until(() => ev.message.length === 2 + 420, "the ranges");
  assert.deepEqual(keys(ev.message.filter((m) => m.conv === "a")), ["a#4", "a#5"], "only what the client lacks, only up to upto");
  assert.deepEqual(ev.message.filter((m) => m.conv === "b").map((m) => m.seq), Array.from({ length: 420 }, (_, i) => i + 1));
  const calls = server.historyCalls.map((h) => [h.conv, h.after]);
  assert.deepEqual(calls, [["a", 3], ["b", 0], ["b", 200], ["b", 400]], "pages with after");
  await c.close();
  assert.deepEqual(JSON.parse(await store.get("switchboard:alice:state")), { cursor: 7, epoch: "NEW", seqs: { a: 5, b: 420 } });
});

test("resync while ranges are still being filled: the old cursor and epoch stay in the store", async () => {
  const store = new MemoryStore();
  await store.set("switchboard:alice:state", JSON.stringify({ cursor: 900, epoch: "OLD", seqs: {} }));
  const server = new FakeServer();
  const c = new Client({ url: "ws://edge.test/ws", token: jwt("alice"), WebSocket: server.WebSocket, store, ackIntervalMs: 10 });
  const p = c.connect();
  const s = await server.socket(0);
  s.accept();
  await s.next("hello");
  s.push({ type: "welcome", user: "alice", epoch: "NEW" });
  s.push({ type: "resync", reason: "cursor_expired", cursor: 7, ranges: [{ conv: "a", after: 0, upto: 2 }] });
  s.push({ type: "synced", cursor: 7, groups: [] });
  await p;
  const h = await s.next("history");
  s.push(msg("a", 9, 8)); // live traffic meanwhile moves the cursor and is acked
  await sleep(60);
  // A reload now must resync again (old epoch): the range is not filled yet.
  assert.deepEqual(JSON.parse(await store.get("switchboard:alice:state")).epoch, "OLD");
  s.push({ type: "history", ref: h.id, conv: "a", messages: [msg("a", 1), msg("a", 2)], more: false });
  await sleep(60);
  const saved = JSON.parse(await store.get("switchboard:alice:state"));
  assert.equal(saved.epoch, "NEW");
  assert.equal(saved.cursor, 8);
  await c.close();
});

test("resync with no ranges refetches every conversation the client knows, from its last seq", async () => {
  const store = new MemoryStore();
  await store.set("switchboard:alice:state", JSON.stringify({ cursor: 5, epoch: "E", seqs: { a: 2, b: 1 } }));
  const server = new FakeServer();
  server.log = { a: [msg("a", 1), msg("a", 2), msg("a", 3)], b: [msg("b", 1)] };
  const c = new Client({ url: "ws://edge.test/ws", token: jwt("alice"), WebSocket: server.WebSocket, store });
  const ev = record(c);
  const p = c.connect();
  const s = await server.socket(0);
  s.accept();
  await s.next("hello");
  s.push({ type: "welcome", user: "alice", epoch: "E" });
  s.push({ type: "resync", reason: "something_new", cursor: 9, ranges: [] });
  s.push({ type: "synced", cursor: 9, groups: [] });
  await p;
  await until(() => server.historyCalls.length === 2, "two history requests");
  assert.deepEqual(server.historyCalls.map((h) => [h.conv, h.after]).sort(), [["a", 2], ["b", 1]]);
  await until(() => ev.message.length === 1, "a#3");
  assert.deepEqual(keys(ev.message), ["a#3"]);
  await c.close();
});

test("synced.groups (large groups): a known group is filled from its last seq, an unknown one starts from now", async () => {
  const store = new MemoryStore();
  await store.set("switchboard:alice:state", JSON.stringify({ cursor: 5, epoch: "E", seqs: { big: 2 } }));
  const server = new FakeServer();
  server.log = { big: [1, 2, 3, 4].map((i) => msg("big", i)), other: [msg("other", 1)] };
  const c = new Client({ url: "ws://edge.test/ws", token: jwt("alice"), WebSocket: server.WebSocket, store });
  const ev = record(c);
  const p = c.connect();
  const s = await server.socket(0);
  s.accept();
  await s.next("hello");
  s.push({ type: "welcome", user: "alice", epoch: "E" });
  s.push({ type: "synced", cursor: 5, groups: [{ conv: "big", after: 0, upto: 4 }, { conv: "other", after: 0, upto: 1 }] });
  await p;
  await until(() => ev.message.length === 2, "big#3, big#4");
  assert.deepEqual(keys(ev.message), ["big#3", "big#4"]);
  s.push(msg("other", 2, null));
  await until(() => ev.message.length === 3, "other#2");
  assert.equal(server.historyCalls.filter((h) => h.conv === "other").length, 0);
  await c.close();
});

test("a conversation the app just fetched (newest history page, or conv.list) is followed from there: no 300 ms hold", async () => {
  const server = new FakeServer();
  const { c, ev, s } = await started(server);
  const paging = c.history("h");
  const f = await s.next("history");
  s.push({ type: "history", ref: f.id, conv: "h", messages: [msg("h", 4), msg("h", 5)], more: true });
  await paging;
  s.push(msg("h", 5, 101)); // in flight while the page was answered: the app has it from the page
  s.push(msg("h", 6, 102));
  assert.deepEqual(keys(ev.message), ["h#6"], "handed over at once");

  const listing = c.listConversations();
  const g = await s.next("conv.list");
  s.push({ type: "conv.list", ref: g.id, convs: [{ conv: "l", members: ["alice", "bob"], title: "", last_seq: 9, read: 9, last: msg("l", 9) }] });
  assert.equal((await listing)[0].last.kind, "user");
  s.push(msg("l", 10, 103));
  assert.deepEqual(keys(ev.message), ["h#6", "l#10"]);

  // A conversation already followed is not moved by an older page.
  const old = c.history("h", { before: 3 });
  const o = await s.next("history");
  s.push({ type: "history", ref: o.id, conv: "h", messages: [msg("h", 1), msg("h", 2)], more: false });
  await old;
  s.push(msg("h", 7, 104));
  assert.deepEqual(keys(ev.message), ["h#6", "l#10", "h#7"]);
  await c.close();
});

test("a socket lost between welcome (new epoch) and synced says hello with the old epoch again, and resyncs", async () => {
  const store = new MemoryStore();
  await store.set("switchboard:alice:state", JSON.stringify({ cursor: 900, epoch: "OLD", seqs: { a: 1 } }));
  const server = new FakeServer();
  const c = new Client({ url: "ws://edge.test/ws", token: jwt("alice"), WebSocket: server.WebSocket, store, backoff: { baseMs: 1, maxMs: 2 } });
  const p = c.connect();
  const s = await server.socket(0);
  s.accept();
  await s.next("hello");
  s.push({ type: "welcome", user: "alice", epoch: "NEW" });
  s.drop(1006, "");
  const { hello } = await server.session(1, { epoch: "NEW" });
  assert.deepEqual(hello, { type: "hello", cursor: 900, epoch: "OLD" }, "not the new epoch with a cursor of the old stream");
  await p;
  assert.equal(c.epoch, "NEW");
  await c.close();
});
