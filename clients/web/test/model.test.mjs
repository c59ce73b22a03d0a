// Unit tests of src/model.ts (the per-conversation state behind the list and
// the message pane), bundled on the fly with esbuild. The browser specs in
// tests/browser cover the page; these pin the rules that are easy to get
// subtly wrong: dedup by seq, our own send meeting its echo, unread counts,
// and when a tick may say delivered or read.
import { test } from "node:test";
import assert from "node:assert/strict";
import { build } from "esbuild";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = await build({ entryPoints: [join(here, "..", "src", "model.ts")], bundle: true, format: "esm", write: false, logLevel: "error" });
const file = join(mkdtempSync(join(tmpdir(), "sb-web-model-")), "model.mjs");
writeFileSync(file, out.outputFiles[0].contents);
const M = await import(file);

const msg = (seq, from = "bob", extra = {}) => ({ conv: "c1", seq, id: `m${seq}-${from}`, from, body: `b${seq}`, ts: 1000 + seq, kind: "user", ...extra });

test("a message is added once per seq; unread is last seq minus our read watermark", () => {
  const c = M.newConv("c1");
  assert.ok(M.addMessage(c, msg(1), "alice"));
  assert.ok(M.addMessage(c, msg(2), "alice"));
  assert.equal(M.addMessage(c, msg(2), "alice"), null, "a duplicate (at-least-once delivery) is dropped");
  assert.equal(M.unread(c), 2);
  c.readSeq = 1;
  assert.equal(M.unread(c), 1);
  assert.equal(c.last.seq, 2);
});

test("our own message marks the conversation read up to it (as the server counts it)", () => {
  const c = M.newConv("c1");
  M.addMessage(c, msg(1), "alice");
  M.addMessage(c, msg(2, "alice"), "alice");
  assert.equal(M.unread(c), 0);
});

test("our send in flight gets its seq from the echo instead of showing twice", () => {
  const c = M.newConv("c1");
  const pending = { id: "w1", conv: "c1", seq: 0, from: "alice", body: "hi", ts: 5, kind: "user" };
  c.pending.set("w1", pending);
  c.last = pending;
  assert.equal(M.addMessage(c, { ...msg(7, "alice"), id: "w1" }, "alice"), null, "not a new entry");
  assert.equal(pending.seq, 7);
  assert.equal(c.pending.size, 0);
  assert.equal(c.bySeq.get(7), pending);
  assert.deepEqual(M.ordered(c).map((e) => e.seq), [7]);
});

test("display order: by seq, then sends still in flight; history does not displace a newer last message", () => {
  const c = M.newConv("c1");
  M.addMessage(c, msg(5), "alice");
  c.pending.set("w9", { id: "w9", conv: "c1", seq: 0, from: "alice", body: "x", ts: 9, kind: "user" });
  M.addMessage(c, msg(3), "alice", false);
  M.addMessage(c, msg(4), "alice", false);
  assert.deepEqual(M.ordered(c).map((e) => e.seq), [3, 4, 5, 0]);
  assert.equal(c.last.seq, 5);
  assert.equal(M.oldestSeq(c), 3);
  assert.equal(M.newestSeq(c), 5);
});

test("a tick is delivered/read only when every other member is", () => {
  const c = M.newConv("g1");
  c.members = ["alice", "bob", "carol"];
  const e = { id: "w1", conv: "g1", seq: 4, from: "alice", body: "x", ts: 1, kind: "user" };
  assert.equal(M.tick(e, M.floor(c, "alice")), "sent");
  M.applyReceipt(c, { conv: "g1", user: "bob", delivered: 4, read: 4 });
  assert.equal(M.tick(e, M.floor(c, "alice")), "sent", "carol has nothing yet");
  M.applyReceipt(c, { conv: "g1", user: "carol", delivered: 5, read: 0 });
  assert.equal(M.tick(e, M.floor(c, "alice")), "delivered");
  M.applyReceipt(c, { conv: "g1", user: "carol", delivered: 3, read: 4 });
  assert.equal(c.receipts.get("carol").delivered, 5, "watermarks only rise");
  assert.equal(M.tick(e, M.floor(c, "alice")), "read");
  assert.equal(M.tick({ ...e, seq: 0 }, M.floor(c, "alice")), "sending");
  assert.equal(M.tick({ ...e, failed: "no" }, M.floor(c, "alice")), "failed");
});

test("a member who read a message counts as having it delivered", () => {
  // bob's read (4) came before any delivered watermark; carol only has it delivered
  const c = M.newConv("g2");
  c.members = ["alice", "bob", "carol"];
  M.applyReceipt(c, { conv: "g2", user: "bob", delivered: 0, read: 4 });
  M.applyReceipt(c, { conv: "g2", user: "carol", delivered: 4, read: 0 });
  assert.equal(M.tick({ id: "x", conv: "g2", seq: 4, from: "alice", body: "", ts: 0, kind: "user" }, M.floor(c, "alice")), "delivered");
});
