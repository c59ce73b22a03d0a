// What the live tests get from tests/e2e/test_js_sdk.py: the edge's URL and
// users with tokens minted by the deployment's token helper.
//   SB_URL    ws://127.0.0.1:PORT/ws
//   SB_USERS  {"alice": {"user": "alice1a2b…", "token": "JWT"}, "bob": {...}, ...}
import { WebSocket } from "ws";
import { Client, MemoryStore } from "../../dist/switchboard.js";

export const URL = process.env.SB_URL;
export const USERS = JSON.parse(process.env.SB_USERS ?? "{}");
if (!URL || !USERS.alice) throw new Error("SB_URL / SB_USERS are not set: run tests/e2e/test_js_sdk.py");

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function until(cond, what, timeoutMs = 10000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

const open = [];

/** Close every client the test made (a failed test must not leave sockets
 * open: node would wait for them forever). */
export async function closeAll() {
  await Promise.all(open.splice(0).map((x) => x.c.close()));
}

/** A client of `who` (alice, bob, ...); every socket it opens is kept in `sockets`. */
export function client(who, opts = {}) {
  const sockets = [];
  const frames = []; // every frame the client wrote, parsed
  class Tracked extends WebSocket {
    constructor(url) {
      super(url);
      sockets.push(this);
    }
    send(data) {
      frames.push(JSON.parse(data));
      super.send(data);
    }
  }
  const c = new Client({ url: URL, token: USERS[who].token, WebSocket: Tracked, store: new MemoryStore(), backoff: { baseMs: 50, maxMs: 500 }, ...opts });
  const messages = [];
  const events = { receipt: [], typing: [], presence: [], conv: [], resync: [], error: [], state: [] };
  c.on("message", (m) => messages.push(m));
  for (const k of Object.keys(events)) c.on(k, (x) => events[k].push(x));
  const made = { c, messages, events, sockets, frames, user: USERS[who].user };
  open.push(made);
  return made;
}
