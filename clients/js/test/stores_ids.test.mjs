// Stores (memory, localStorage, IndexedDB) and identifiers (dmConv must equal
// the server's switchboard.ids.dm_conv, or 1:1 conversations split in two).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { IDBFactory } from "fake-indexeddb";
import { randomId } from "../dist/ids.js";
import { Client, IndexedDBStore, LocalStorageStore, MemoryStore, dmConv } from "../dist/switchboard.js";
import { FakeServer, jwt } from "./fake.mjs";

class FakeStorage {
  constructor() { this.m = new Map(); }
  getItem(k) { return this.m.has(k) ? this.m.get(k) : null; }
  setItem(k, v) { this.m.set(k, String(v)); }
  removeItem(k) { this.m.delete(k); }
}

const stores = {
  MemoryStore: () => new MemoryStore(),
  LocalStorageStore: () => new LocalStorageStore(new FakeStorage()),
  IndexedDBStore: () => new IndexedDBStore("sb-test", "kv", new IDBFactory()),
};

for (const [name, make] of Object.entries(stores)) {
  test(`${name}: get/set/delete round trip`, async () => {
    const s = make();
    assert.equal(await s.get("k"), null);
    await s.set("k", "v1");
    await s.set("k", "v2");
    await s.set("other", "x");
    assert.equal(await s.get("k"), "v2");
    await s.delete("k");
    assert.equal(await s.get("k"), null);
    assert.equal(await s.get("other"), "x");
  });
}

test("IndexedDBStore persists across instances (a reload) and the client resumes from it", async () => {
  const factory = new IDBFactory();
  const server = new FakeServer();
  const c = new Client({ url: "ws://e/ws", token: jwt("alice"), WebSocket: server.WebSocket, store: new IndexedDBStore("sb", "kv", factory) });
  const p = c.connect();
  await server.session(0, { cursor: 321, epoch: "EP" });
  await p;
  await c.close();
  const server2 = new FakeServer();
  const c2 = new Client({ url: "ws://e/ws", token: jwt("alice"), WebSocket: server2.WebSocket, store: new IndexedDBStore("sb", "kv", factory) });
  const p2 = c2.connect();
  const { hello } = await server2.session(0, { cursor: 400, epoch: "EP" });
  await p2;
  assert.deepEqual(hello, { type: "hello", cursor: 321, epoch: "EP" });
  await c2.close();
});

test("LocalStorageStore without a localStorage says so", () => {
  assert.throws(() => new LocalStorageStore(), /no localStorage/);
});

// Vectors printed by switchboard.ids.dm_conv.
const VECTORS = [
  ["alice", "bob", "dm-1cb15457d1ddab60e205c0fe3ca2f65d1e27e1b0"],
  ["bob", "alice", "dm-1cb15457d1ddab60e205c0fe3ca2f65d1e27e1b0"],
  ["a", "b", "dm-7e18f737311b2dc3b2f269dd78396b0351f14fb6"],
  ["Zed", "abe", "dm-25d0e23af638d85c8596e86bc76cee892f00684a"],
  ["user_1", "user-2", "dm-7b8e7d6e5ca836a5f5cb2775a19f9cfa3f8d0aec"],
  ["x".repeat(64), "y".repeat(64), "dm-5dfe572fe3da5fa08cde843433ba0bf7d4743072"],
  ["A", "a", "dm-b63de4b18d0c7fb59fa7bd4f0626769e39bb61cc"],
];

test("dmConv equals the server's dm_conv (fixed vectors; the order of the pair does not matter)", () => {
  for (const [a, b, want] of VECTORS) assert.equal(dmConv(a, b), want, `${a}, ${b}`);
  assert.throws(() => dmConv("a.b", "c"), /not valid/);
});

const PY = fileURLToPath(new URL("../../../.venv/bin/python", import.meta.url));

test("dmConv equals switchboard.ids.dm_conv on random ids (asks the repo's Python)", { skip: !existsSync(PY) && "no .venv here" }, () => {
  const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-";
  const rid = () => Array.from({ length: 1 + Math.floor(Math.random() * 64) }, () => alphabet[Math.floor(Math.random() * alphabet.length)]).join("");
  const pairs = Array.from({ length: 200 }, () => [rid(), rid()]);
  const code = "import json,sys\nfrom switchboard.ids import dm_conv\nprint(json.dumps([dm_conv(a, b) for a, b in json.load(sys.stdin)]))";
  const r = spawnSync(PY, ["-c", code], { input: JSON.stringify(pairs), encoding: "utf8", cwd: fileURLToPath(new URL("../../..", import.meta.url)) });
  assert.equal(r.status, 0, r.stderr);
  const want = JSON.parse(r.stdout);
  pairs.forEach(([a, b], i) => assert.equal(dmConv(a, b), want[i], `${a}, ${b}`));
});

test("client.dmConv uses the welcomed user", async () => {
  const server = new FakeServer();
  const c = new Client({ url: "ws://e/ws", token: jwt("alice"), WebSocket: server.WebSocket });
  const p = c.connect();
  await server.session(0, { user: "alice" });
  await p;
  assert.equal(c.dmConv("bob"), VECTORS[0][2]);
  await c.close();
});

test("random message ids: 24 characters of [0-9a-f], valid ids, unique", () => {
  const ids = Array.from({ length: 10000 }, randomId);
  assert.ok(ids.every((id) => /^[0-9a-f]{24}$/.test(id)));
  assert.equal(new Set(ids).size, ids.length);
});

test("a store that refuses writes is reported once as an error event; delivery goes on", async () => {
  const server = new FakeServer();
  const store = { get: async () => null, set: async () => { throw new Error("QuotaExceededError"); }, delete: async () => {} };
  const c = new Client({ url: "ws://e/ws", token: jwt("alice"), WebSocket: server.WebSocket, store, ackIntervalMs: 5 });
  const errors = [];
  const got = [];
  c.on("error", (e) => errors.push(e));
  c.on("message", (m) => got.push(m.seq));
  const p = c.connect();
  const { s } = await server.session(0);
  await p;
  for (let i = 1; i <= 5; i++) {
    s.push({ type: "msg", conv: "c", seq: i, id: `m${i}`, from: "bob", body: "x", ts: 1, cursor: 100 + i });
    await new Promise((r) => setTimeout(r, 15));
  }
  await c.close();
  assert.deepEqual(got, [1, 2, 3, 4, 5]);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].code, "store");
  assert.match(errors[0].message, /QuotaExceededError/);
});
