// Requests matched by id/ref (history, conv.create, conv.list, receipts,
// presence.watch, push.register), timeouts, send options, Web Push, typing/read.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Client } from "../dist/switchboard.js";
import { FakeServer, jwt, record, sleep } from "./fake.mjs";

async function started(opts = {}) {
  const server = new FakeServer();
  const c = new Client({ url: "ws://edge.test/ws?v=1", token: jwt("alice"), WebSocket: server.WebSocket, ...opts });
  const ev = record(c);
  const p = c.connect();
  const { s } = await server.session(0);
  await p;
  return { c, ev, s, server };
}

test("the token is appended to a URL that already has a query", async () => {
  const { c, s } = await started();
  assert.equal(new URL(s.url).searchParams.get("v"), "1");
  assert.equal(s.token(), jwt("alice"));
  await c.close();
});

test("answers are matched by ref, whatever order they come in", async () => {
  const { c, s } = await started();
  const h1 = c.history("a", { before: 10, limit: 2 });
  const h2 = c.history("b", { after: 3 });
  const list = c.listConversations();
  const f1 = await s.next("history");
  const f2 = await s.next("history");
  const fl = await s.next("conv.list");
  assert.deepEqual({ ...f1, id: "" }, { type: "history", id: "", conv: "a", limit: 2, before: 10 });
  assert.deepEqual({ ...f2, id: "" }, { type: "history", id: "", conv: "b", limit: 50, after: 3 });
  assert.notEqual(f1.id, f2.id);
  const summary = { conv: "a", members: ["alice", "bob"], title: "", last_seq: 4, read: 2, last: null };
  s.push({ type: "conv.list", ref: fl.id, convs: [summary] });
  s.push({ type: "history", ref: f2.id, conv: "b", messages: [], more: false });
  s.push({ type: "history", ref: f1.id, conv: "a", messages: [{ type: "msg", conv: "a", seq: 9 }], more: true });
  assert.deepEqual(await list, [summary]);
  assert.equal((await h1).more, true);
  assert.equal((await h1).messages[0].seq, 9);
  assert.equal((await h2).conv, "b");
  await c.close();
});

test("createConversation resolves with the conv answered to its ref, and a conv event fires", async () => {
  const { c, ev, s } = await started();
  const creating = c.createConversation(["bob", "carol"], "lunch");
  const f = await s.next("conv.create");
  assert.deepEqual(f.members, ["bob", "carol"]);
  assert.equal(f.title, "lunch");
  s.push({ type: "conv", conv: "g-other", members: ["alice", "zed"], title: "not ours" }); // someone else's notice
  s.push({ type: "conv", ref: f.id, conv: "g-1", members: ["alice", "bob", "carol"], title: "lunch" });
  assert.deepEqual(await creating, { conv: "g-1", members: ["alice", "bob", "carol"], title: "lunch" });
  assert.deepEqual(ev.conv.map((x) => x.conv), ["g-other", "g-1"]);
  await c.close();
});

test("receipts(conv) collects the receipt frames of that conversation; they also fire as events", async () => {
  const { c, ev, s } = await started();
  const asking = c.receipts("team");
  const f = await s.next("receipts");
  assert.equal(f.conv, "team");
  s.push({ type: "receipt", conv: "other", user: "x", delivered: 1, read: 1 });
  s.push({ type: "receipt", conv: "team", user: "alice", delivered: 5, read: 5 });
  s.push({ type: "receipt", conv: "team", user: "bob", delivered: 5, read: 3 });
  const got = await asking;
  assert.deepEqual(got.map((r) => [r.user, r.delivered, r.read]), [["alice", 5, 5], ["bob", 5, 3]]);
  assert.equal(ev.receipt.length, 3);
  await c.close();
});

test("receipts(conv) on a conversation you are not in rejects with the server's error", async () => {
  const { c, s } = await started();
  const asking = c.receipts("secret");
  const f = await s.next("receipts");
  s.push({ type: "error", ref: f.id, code: "not_member", message: "alice is not a member of secret", retry: false });
  await assert.rejects(asking, (e) => e.code === "not_member");
  await c.close();
});

test("watchPresence resolves once every watched user's presence came; changes fire events; renewed after a reconnect", async () => {
  const { c, ev, s, server } = await started({ backoff: { baseMs: 1, maxMs: 2 } });
  const watching = c.watchPresence(["bob", "carol", "bob"]);
  const f = await s.next("presence.watch");
  assert.deepEqual(f.users, ["bob", "carol"]);
  s.push({ type: "presence", user: "bob", online: true, last_seen: null });
  let done = false;
  watching.then(() => (done = true));
  await sleep(5);
  assert.equal(done, false, "carol's presence is still missing");
  s.push({ type: "presence", user: "carol", online: false }); // never seen: last_seen omitted on the wire
  const got = await watching;
  assert.deepEqual(got.map((p) => [p.user, p.last_seen]), [["bob", null], ["carol", null]]);
  s.push({ type: "presence", user: "bob", online: false, last_seen: 1718000000000 });
  assert.equal(ev.presence.length, 3);
  s.drop(1006, "");
  const { s: s2 } = await server.session(1);
  const renewed = await s2.next("presence.watch");
  assert.deepEqual(renewed.users, ["bob", "carol"], "watches belong to a socket: renewed on the new one");
  await c.close();
});

test("registerPush resolves on ok; an invalid token rejects with bad_token", async () => {
  const { c, s } = await started();
  const reg = c.registerPush("fcm", "tok-123456789012345678901");
  const f = await s.next("push.register");
  assert.deepEqual({ ...f, id: "" }, { type: "push.register", id: "", platform: "fcm", token: "tok-123456789012345678901" });
  s.push({ type: "ok", ref: f.id });
  assert.equal(await reg, undefined);
  const bad = c.registerPush("apns", "nothex");
  const g = await s.next("push.register");
  s.push({ type: "error", ref: g.id, code: "bad_token", message: "apns token must be 64 or more hex characters", retry: false });
  await assert.rejects(bad, (e) => e.code === "bad_token");
  await c.close();
});

test("registerWebPush subscribes through the PushManager with the VAPID key, then registers the subscription JSON", async () => {
  const { c, s } = await started();
  const subJSON = { endpoint: "https://push.example.test/abc", expirationTime: null, keys: { p256dh: "BKey", auth: "auth" } };
  let options = null;
  const registration = {
    pushManager: {
      getSubscription: async () => null,
      subscribe: async (o) => {
        options = o;
        return { toJSON: () => subJSON };
      },
    },
  };
  const vapid = Buffer.from(Uint8Array.from({ length: 65 }, (_, i) => i)).toString("base64url");
  const registering = c.registerWebPush(registration, vapid);
  const f = await s.next("push.register");
  assert.equal(options.userVisibleOnly, true);
  assert.deepEqual([...options.applicationServerKey], Array.from({ length: 65 }, (_, i) => i), "the base64url key decoded");
  assert.equal(f.platform, "webpush");
  assert.deepEqual(JSON.parse(f.token), subJSON);
  s.push({ type: "ok", ref: f.id });
  const sub = await registering;
  assert.deepEqual(sub.toJSON(), subJSON);
  await c.close();
});

test("a request not answered in requestTimeoutMs rejects with `timeout` (retry: true)", async () => {
  const { c } = await started({ requestTimeoutMs: 60 });
  const t0 = Date.now();
  await assert.rejects(c.history("a"), (e) => e.code === "timeout" && e.retry === true);
  assert.ok(Date.now() - t0 >= 55);
  await c.close();
});

test("send: frame fields, optional trace, caller's id; typing and read frames", async () => {
  const { c, s } = await started();
  c.send({ to: "bob", body: "hi", trace: true, id: "abcdefghijklmnop" }).catch(() => {}); // closed unanswered
  assert.deepEqual(await s.next("send"), { type: "send", id: "abcdefghijklmnop", body: "hi", to: "bob", trace: true });
  c.send({ conv: "team", body: "plain" }).catch(() => {});
  const f = await s.next("send");
  assert.equal("trace" in f, false, "no trace field unless asked");
  assert.equal("to" in f, false);
  await assert.rejects(c.send({ conv: "team", body: "dup", id: "abcdefghijklmnop" }), (e) => e.code === "conflict");
  c.typing("team");
  c.read("team", 42);
  assert.deepEqual(await s.next("typing"), { type: "typing", conv: "team" });
  assert.deepEqual(await s.next("read"), { type: "read", conv: "team", seq: 42 });
  await c.close();
});

test("on() returns an unsubscribe function; a throwing listener does not stop the others", async (t) => {
  const { c, s } = await started();
  const seen = [];
  const off = c.on("typing", (x) => seen.push(["a", x.user]));
  const errors = [];
  globalThis.reportError = (e) => errors.push(e.message); // what a browser has
  t.after(() => delete globalThis.reportError);
  c.on("typing", () => {
    throw new Error("app bug");
  });
  c.on("typing", (x) => seen.push(["b", x.user]));
  s.push({ type: "typing", conv: "team", user: "bob" });
  off();
  s.push({ type: "typing", conv: "team", user: "carol" });
  await sleep(10);
  assert.deepEqual(seen, [["a", "bob"], ["b", "bob"], ["b", "carol"]]);
  assert.deepEqual(errors, ["app bug", "app bug"], "the app's error is reported, not swallowed");
  await c.close();
});

test("receipts(conv): the edge's closing ok (with the ref) ends the answer at once, even an empty one", async () => {
  const { c, s } = await started();
  const asking = c.receipts("team");
  const f = await s.next("receipts");
  s.push({ type: "receipt", conv: "team", user: "alice", delivered: 2, read: 2 });
  s.push({ type: "ok", ref: f.id });
  assert.deepEqual((await asking).map((r) => r.user), ["alice"]);
  const t0 = Date.now();
  const empty = c.receipts("new-group");
  const g = await s.next("receipts");
  s.push({ type: "ok", ref: g.id });
  assert.deepEqual(await empty, []);
  assert.ok(Date.now() - t0 < 500, "no waiting");
  await c.close();
});

test("receipts(conv) from an edge without the closing ok: none at all resolves with [] after a wait", async () => {
  const { c, s } = await started();
  const t0 = Date.now();
  const asking = c.receipts("empty");
  await s.next("receipts");
  assert.deepEqual(await asking, []);
  const took = Date.now() - t0;
  assert.ok(took >= 2900 && took < 4500, `resolved after the empty wait (${took} ms)`);
  await c.close();
});

test("reads are resent on retryable errors; a timeout reports the last error", async () => {
  const { c, s } = await started({ backoff: { baseMs: 5, maxMs: 10 }, requestTimeoutMs: 300 });
  const paging = c.history("a");
  const f = await s.next("history");
  s.push({ type: "error", ref: f.id, code: "unavailable", message: "no responders: nobody serves this subject now; retry", retry: true });
  const again = await s.next("history");
  assert.equal(again.id, f.id);
  s.push({ type: "history", ref: f.id, conv: "a", messages: [{ type: "msg", conv: "a", seq: 1, id: "x", from: "b", body: "hi", ts: 1 }], more: false });
  const page = await paging;
  assert.equal(page.messages[0].kind, "user", "kind filled in where the server omits its default");

  const failing = c.listConversations();
  for (;;) {
    const g = await s.next("conv.list");
    s.push({ type: "error", ref: g.id, code: "unavailable", message: "sequencer did not answer", retry: true });
    if (s.framesOf("conv.list").length >= 3) break;
  }
  await assert.rejects(failing, (e) => e.code === "unavailable" && e.message === "sequencer did not answer");
  await c.close();
});

test("a read made while disconnected is sent (the highest per conversation) right after the next hello", async () => {
  const { c, s, server } = await started({ backoff: { baseMs: 1, maxMs: 2 } });
  s.drop(1006, "");
  c.read("team", 4);
  c.read("team", 7);
  c.read("team", 5);
  const s2 = await server.socket(1);
  s2.accept();
  assert.equal((await s2.next()).type, "hello");
  assert.deepEqual(await s2.next(), { type: "read", conv: "team", seq: 7 });
  await c.close();
});
