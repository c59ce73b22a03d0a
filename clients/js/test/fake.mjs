// A scripted fake WebSocket (the browser API the SDK uses) and helpers to play
// the edge's side of wire protocol v1 in unit tests. No network.

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A JWT-shaped token whose `sub` the SDK reads to key its store (unsigned: no server checks it here). */
export function jwt(sub, extra = "", exp = 4102444800) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, exp })}.sig${extra}`;
}

/** mulberry32: a small seeded PRNG, so a failing property run can be replayed. */
export function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function until(cond, what, timeoutMs = 3000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

export class FakeServer {
  constructor() {
    this.sockets = [];
    const server = this;
    this.WebSocket = class FakeWebSocket {
      constructor(url) {
        this.url = url;
        this.readyState = 0;
        this.onopen = this.onmessage = this.onclose = this.onerror = null;
        this.sent = []; // frames the client wrote, parsed
        this.read = 0; // how many of them next() consumed
        this.closedByClient = null;
        this.history = null; // when set: answers history requests from this log {conv: [msgs]}
        server.sockets.push(this);
      }
      send(data) {
        if (this.readyState !== 1) throw new Error("send on a socket that is not open");
        const f = JSON.parse(data);
        this.sent.push(f);
        if (f.type === "history" && server.log) server.answerHistory(this, f);
      }
      close(code = 1000, reason = "") {
        this.closedByClient = { code, reason };
        this.readyState = 3;
      }
      // -- the server's side --
      accept() {
        this.readyState = 1;
        this.onopen?.({});
      }
      push(frame) {
        this.onmessage?.({ data: JSON.stringify(frame) });
      }
      drop(code, reason = "") {
        this.readyState = 3;
        this.onclose?.({ code, reason });
      }
      /** A failed upgrade (HTTP 503, refused connection): what a browser reports. */
      fail() {
        this.readyState = 3;
        this.onerror?.({});
        this.onclose?.({ code: 1006, reason: "" });
      }
      token() {
        return new URL(this.url).searchParams.get("token");
      }
      /** The next frame the client wrote (of `type`, skipping others if given). */
      async next(type, timeoutMs) {
        return until(() => {
          while (this.read < this.sent.length) {
            const f = this.sent[this.read++];
            if (!type || f.type === type) return f;
          }
          return null;
        }, `a ${type ?? "frame"} from the client`, timeoutMs);
      }
      framesOf(type) {
        return this.sent.filter((f) => f.type === type);
      }
    };
    /** When set ({conv: [msg, ...]}), history requests are answered from it at once. */
    this.log = null;
    this.historyCalls = [];
  }

  answerHistory(sock, f) {
    this.historyCalls.push({ ...f, at: Date.now() });
    const all = (this.log[f.conv] ?? []).filter(
      (m) => (f.after == null || m.seq > f.after) && (f.before == null || m.seq < f.before),
    );
    const limit = Math.min(f.limit ?? 50, 200);
    const page = f.before != null && f.after == null ? all.slice(-limit) : all.slice(0, limit);
    const more = all.length > page.length;
    queueMicrotask(() => sock.push({ type: "history", ref: f.id, conv: f.conv, messages: page, more }));
  }

  /** The n-th socket the client opened (0-based), once it exists. */
  socket(n) {
    return until(() => this.sockets[n], `socket #${n}`);
  }

  /** Accept socket n and play the session start: welcome, replay, synced. */
  async session(n, { user = "alice", epoch = "E1", cursor = 100, replay = [] } = {}) {
    const s = await this.socket(n);
    s.accept();
    const hello = await s.next("hello");
    s.push({ type: "welcome", user, epoch });
    for (const m of replay) s.push(m);
    s.push({ type: "synced", cursor, groups: [] });
    return { s, hello };
  }
}

export function msg(conv, seq, cursor, extra = {}) {
  return { type: "msg", conv, seq, id: `id-${conv}-${seq}`, from: "bob", body: `${conv}#${seq}`, ts: 1718000000000 + seq, kind: "user", ...(cursor != null ? { cursor } : {}), ...extra };
}

/** Collects a client's events. */
export function record(client) {
  const ev = { message: [], state: [], error: [], resync: [], receipt: [], presence: [], typing: [], conv: [] };
  for (const k of Object.keys(ev)) client.on(k, (a, b) => ev[k].push(k === "state" ? [a, b] : a));
  return ev;
}

export { until };
