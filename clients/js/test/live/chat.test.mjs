// The SDK against a real fabric (edge + sequencer + presence + pusher on a real
// nats-server), started by tests/e2e/test_js_sdk.py.
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { MemoryStore } from "../../dist/switchboard.js";
import { USERS, client, closeAll, sleep, until } from "./env.mjs";

afterEach(closeAll);

const A = USERS.alice.user, B = USERS.bob.user, C = USERS.carol.user;

test("a token function's socket is renewed before exp with a fresh token: no state change, no message lost or repeated", async () => {
  const a = client("alice");
  // The first token expires 35 s after it was minted, just before node started:
  // renewed within ~5 s (so this test comes first).
  const tokens = [USERS.frank.renew, USERS.frank.token];
  let calls = 0;
  const f = client("frank", { token: () => tokens[Math.min(calls++, 1)] });
  await Promise.all([a.c.connect(), f.c.connect()]);
  const states = f.events.state.length;
  const seqs = [];
  for (let i = 0; i < 80 && f.sockets.length < 2; i++) {
    seqs.push((await a.c.send({ to: USERS.frank.user, body: `r${i}` })).seq);
    await sleep(100);
  }
  assert.equal(f.sockets.length, 2, "a second socket");
  for (let i = 0; i < 5; i++) seqs.push((await a.c.send({ to: USERS.frank.user, body: `after${i}` })).seq);
  await until(() => f.messages.length >= seqs.length, "every message");
  await sleep(200);
  assert.deepEqual(f.messages.map((m) => m.seq), seqs, "in order, once each across the renewal");
  assert.equal(calls, 2);
  assert.equal(f.events.state.length, states, "no state event");
  assert.equal(f.c.state, "synced");
});

test("two clients chat both ways: send resolves with sent, the other side gets it once, dmConv matches the server", async () => {
  const a = client("alice"), b = client("bob");
  await Promise.all([a.c.connect(), b.c.connect()]);
  assert.equal(a.c.user, A);
  const sent = await a.c.send({ to: B, body: "hi bob" });
  assert.equal(sent.conv, a.c.dmConv(B), "the SDK's dm id is the server's");
  assert.equal(sent.conv, b.c.dmConv(A));
  assert.ok(sent.seq >= 1 && sent.ts > 0 && sent.id.length >= 16);
  await until(() => b.messages.length === 1, "bob's message");
  assert.deepEqual([b.messages[0].from, b.messages[0].body, b.messages[0].seq], [A, "hi bob", sent.seq]);
  const reply = await b.c.send({ conv: sent.conv, body: "hi alice", trace: true });
  assert.equal(reply.seq, sent.seq + 1);
  // Each side gets both messages once, own ones included (other devices stay in sync).
  await until(() => a.messages.length === 2 && b.messages.length === 2, "both messages on both sides");
  assert.deepEqual(a.messages.map((m) => m.body), ["hi bob", "hi alice"]);
  assert.deepEqual(b.messages.map((m) => m.body), ["hi bob", "hi alice"]);

  // typing, read receipts, receipts(), presence
  a.c.typing(sent.conv);
  await until(() => b.events.typing.some((t) => t.user === A && t.conv === sent.conv), "bob sees alice typing");
  const third = await a.c.send({ conv: sent.conv, body: "read this" });
  await until(() => b.messages.some((m) => m.seq === third.seq), "bob has the third message");
  b.c.read(sent.conv, third.seq);
  await until(() => a.events.receipt.some((r) => r.user === B && r.read === third.seq), "alice sees bob's read receipt");
  const receipts = await a.c.receipts(sent.conv);
  assert.deepEqual(receipts.map((r) => r.user).sort(), [A, B].sort());
  assert.equal(receipts.find((r) => r.user === B).read, third.seq);
  const presence = await a.c.watchPresence([B]);
  assert.deepEqual(presence.map((p) => [p.user, p.online]), [[B, true]]);
  await b.c.close();
  await until(() => a.events.presence.some((p) => p.user === B && !p.online && p.last_seen > 0), "bob goes offline", 20000);
  await a.c.close();
});

test("groups: createConversation, conv event to the members, listConversations with last message and read", async () => {
  const a = client("alice"), cc = client("carol");
  await Promise.all([a.c.connect(), cc.c.connect()]);
  const conv = await a.c.createConversation([C], "lunch");
  assert.deepEqual([...conv.members].sort(), [A, C].sort());
  assert.equal(conv.title, "lunch");
  await until(() => cc.events.conv.some((x) => x.conv === conv.conv), "carol hears of the group");
  await a.c.send({ conv: conv.conv, body: "noon?" });
  const s2 = await cc.c.send({ conv: conv.conv, body: "yes" });
  const list = await a.c.listConversations();
  const entry = list.find((x) => x.conv === conv.conv);
  assert.ok(entry, "the group is listed");
  assert.equal(entry.title, "lunch");
  assert.equal(entry.last_seq, s2.seq);
  assert.equal(entry.last.body, "yes");
  assert.equal(entry.last_seq - entry.read, 1, "carol's message is unread for alice, her own is read");
  assert.equal(list[0].conv, conv.conv, "most recent activity first");
  await Promise.all([a.c.close(), cc.c.close()]);
});

test("a dropped socket reconnects and catches up in order, once each; a send made while offline goes out after", async () => {
  const a = client("alice");
  let gate = null; // holds bob's reconnect until alice has sent
  let calls = 0;
  const b = client("bob", {
    token: async () => {
      calls++;
      if (gate) await gate.promise;
      return USERS.bob.token;
    },
  });
  await Promise.all([a.c.connect(), b.c.connect()]);
  const conv = a.c.dmConv(B);
  const first = await a.c.send({ to: B, body: "before" });
  await until(() => b.messages.some((m) => m.seq === first.seq), "bob has 'before'");
  let release;
  gate = { promise: new Promise((r) => (release = r)) };
  b.sockets.at(-1).terminate(); // the network drops (close 1006)
  await until(() => b.c.state === "reconnecting", "bob reconnecting");
  const offline = b.c.send({ conv, body: "sent while offline" });
  const seqs = [];
  for (let i = 0; i < 40; i++) seqs.push((await a.c.send({ conv, body: `m${i}` })).seq);
  release();
  gate = null;
  const mine = await offline;
  await until(() => b.messages.filter((m) => m.seq > first.seq).length >= 41, "bob catches up");
  await sleep(300);
  const after = b.messages.filter((m) => m.conv === conv && m.seq > first.seq).map((m) => m.seq);
  const want = [...seqs, mine.seq].sort((x, y) => x - y);
  assert.deepEqual(after, want, "in seq order, no gap, no duplicate");
  assert.ok(calls >= 2, "the token function was called again for the reconnect");
  await until(() => a.messages.some((m) => m.body === "sent while offline"), "alice gets bob's offline send");
  await Promise.all([a.c.close(), b.c.close()]);
});

test("resume across a restart: a new client on the same store gets what it missed, via the replay", async () => {
  const store = new MemoryStore();
  const a = client("alice");
  const b1 = client("bob", { store });
  await Promise.all([a.c.connect(), b1.c.connect()]);
  await b1.c.close();
  const conv = a.c.dmConv(B);
  const seqs = [];
  for (let i = 0; i < 15; i++) seqs.push((await a.c.send({ conv, body: `while closed ${i}` })).seq);
  const b2 = client("bob", { store });
  await b2.c.connect();
  await until(() => b2.messages.length >= 15, "the replay");
  await sleep(200);
  assert.deepEqual(b2.messages.map((m) => m.seq), seqs);
  assert.equal(b2.events.resync.length, 0, "a normal resume is no resync");
  await Promise.all([a.c.close(), b2.c.close()]);
});

test("resync (the stored epoch is not the server's): every range is filled from history, in order", async () => {
  const a = client("alice");
  await a.c.connect();
  const conv = a.c.dmConv(USERS.dave.user);
  const seqs = [];
  for (let i = 0; i < 230; i++) seqs.push((await a.c.send({ to: USERS.dave.user, body: `r${i}` })).seq); // > one 200-message page
  // Past the edge's cached INBOX bounds (0.5 s): the resync cursor is then the
  // end of INBOX and nothing is replayed, so only the history fill can deliver.
  await sleep(1200);
  const store = new MemoryStore();
  await store.set(`switchboard:${USERS.dave.user}:state`, JSON.stringify({ cursor: 1, epoch: "an-old-stream", seqs: {} }));
  const d = client("dave", { store });
  await d.c.connect();
  assert.equal(d.events.resync.length, 1);
  assert.equal(d.events.resync[0].reason, "epoch_changed");
  assert.ok(d.events.resync[0].ranges.some((r) => r.conv === conv));
  await until(() => d.messages.length >= 230, "the range filled", 20000);
  assert.deepEqual(d.messages.map((m) => m.seq), seqs);
  assert.ok(d.messages.every((m) => m.cursor == null && m.kind === "user"), "they came from history, not a replay");
  const pages = d.frames.filter((f) => f.type === "history" && f.conv === conv).map((f) => f.after);
  assert.deepEqual(pages, [0, 200], "paged with after");
  await d.c.close();
  const saved = JSON.parse(await store.get(`switchboard:${USERS.dave.user}:state`));
  assert.notEqual(saved.epoch, "an-old-stream", "the server's epoch is stored once the ranges are filled");
  assert.equal(saved.seqs[conv], seqs.at(-1));
  await a.c.close();
});

test("history paging: before-pages back to the start, after-pages forward, contiguous", async () => {
  const a = client("alice");
  await a.c.connect();
  const g = await a.c.createConversation([USERS.carol.user], "paging");
  for (let i = 1; i <= 120; i++) await a.c.send({ conv: g.conv, body: `p${i}` });
  const back = [];
  let before = null;
  for (;;) {
    const page = await a.c.history(g.conv, { before, limit: 50 });
    back.unshift(...page.messages);
    if (!page.more) break;
    before = page.messages[0].seq;
  }
  const bodies = back.filter((m) => m.kind === "user").map((m) => m.body);
  assert.deepEqual(bodies, Array.from({ length: 120 }, (_, i) => `p${i + 1}`));
  assert.deepEqual(back.map((m) => m.seq), Array.from({ length: back.length }, (_, i) => i + 1));
  const fwd = await a.c.history(g.conv, { after: back.length - 10, limit: 200 });
  assert.deepEqual(fwd.messages.map((m) => m.seq), back.slice(-10).map((m) => m.seq));
  assert.equal(fwd.more, false);
  await a.c.close();
});

test("an expired token (close 4001 \"token expired\") is replaced through the token function; nothing is lost meanwhile", async () => {
  const a = client("alice");
  const tokens = [USERS.erin.short, USERS.erin.token];
  let calls = 0;
  const e = client("erin", { token: () => tokens[Math.min(calls++, 1)] });
  const states = [];
  e.c.on("state", (s, info) => states.push([s, info?.code, info?.reason]));
  await Promise.all([a.c.connect(), e.c.connect()]);
  const conv = a.c.dmConv(USERS.erin.user);
  await a.c.send({ to: USERS.erin.user, body: "before expiry" });
  await until(() => states.some(([s, code]) => s === "reconnecting" && code === 4001), "the edge closes at exp + 5 s", 20000);
  assert.deepEqual(states.find(([, code]) => code === 4001).slice(1), [4001, "token expired"]);
  const during = await a.c.send({ conv, body: "around the reconnect" });
  await until(() => e.c.state === "synced", "synced with the fresh token", 10000);
  assert.equal(calls, 2, "one fresh token");
  await until(() => e.messages.some((m) => m.seq === during.seq), "the message sent around the reconnect");
  assert.deepEqual(e.messages.map((m) => m.body), ["before expiry", "around the reconnect"]);
  assert.equal(e.events.error.length, 0, "no error: the session just continued");
});

test("a refused token: closed, an `unauthorized` error with a human message, no retry loop", async () => {
  const x = client("alice", { token: USERS.alice.token.slice(0, -4) + "AAAA" });
  await assert.rejects(x.c.connect(), (e) => e.code === "unauthorized" && /Sign in again/.test(e.message));
  assert.equal(x.c.state, "closed");
  await sleep(300);
  assert.equal(x.sockets.length, 1);
});
