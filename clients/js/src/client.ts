import { backoffDelay, tokenClaims, tokenSubject } from "./backoff.js";
import { REPLACED_MESSAGE, SwitchboardError, UNAUTHORIZED_MESSAGE } from "./errors.js";
import { dmConv, randomId } from "./ids.js";
import { MemoryStore } from "./stores.js";
import type {
  ClientEvents, ClientOptions, ConnState, Conv, ConvSummary, HistoryOptions, HistoryPage, Message, Presence,
  PushPlatform, Receipt, Resync, SendOptions, Sent, StateInfo, Store, WebSocketCtor, WebSocketLike,
} from "./types.js";

type Frame = { type: string; [k: string]: any };

interface Pending {
  frame: Frame;
  resolve: (v: any) => void;
  reject: (e: SwitchboardError) => void;
  /** Written again after a reconnect: sends (same id: stored once) and idempotent reads. */
  resend: boolean;
  /** Socket generation it was last written on (0: not yet). */
  on: number;
  attempts: number;
  timer: ReturnType<typeof setTimeout>;
  /** Answers without a ref (receipts, presence): what was collected so far. */
  got?: any[];
  /** Receipts: resolves once no more came for a moment (or none came at all). */
  quiet?: ReturnType<typeof setTimeout>;
  /** A resend after a retryable error, and that error (the timeout reports it). */
  again?: ReturnType<typeof setTimeout>;
  lastError?: SwitchboardError;
}

interface ConvState {
  seq: number; // highest seq handed to the application (0: none yet)
  held: Map<number, Message>; // arrived ahead of a gap
  repairing: boolean;
  fills: number; // history fills running for it
}

/** Messages held per conversation at most; beyond it the gap is skipped. */
const MAX_HELD = 10_000;
/** Acks go out at least every this many messages. */
const ACK_EVERY = 100;
/** A connection synced this long resets the backoff. */
const HEALTHY_MS = 5_000;
/** A socket not open after this long is dropped and retried. */
const OPEN_TIMEOUT_MS = 15_000;
/** Receipts frames carry no ref: the edge ends the answer with `ok {ref}`.
 * An edge older than that is taken as done once no receipt of that
 * conversation came for this long (it writes them back to back). */
const RECEIPTS_QUIET_MS = 40;
/** ... and none at all come for a conversation nobody has delivered or read
 * anything in yet (no message): the answer is then empty after this long. */
const RECEIPTS_EMPTY_MS = 3_000;
/** 4001 answered to this many fresh tokens in a row: give up (closed, unauthorized). */
const MAX_REFUSED = 3;
/** With a token function, the socket is renewed with a fresh token this long
 * before the token's `exp` (the edge closes at exp + 5 s), without state events. */
const REFRESH_AHEAD_MS = 30_000;

/**
 * A Switchboard connection: reconnects with full-jitter backoff, resumes from
 * the stored cursor, hands each message to "message" listeners once, in seq
 * order per conversation, and resends unconfirmed sends with the same id.
 */
export class Client {
  /** The authenticated user id (after the first welcome). */
  user: string | null = null;
  state: ConnState = "closed";
  /** INBOX cursor of the last message received (resume point). */
  cursor: number | null = null;
  epoch: string | null = null;

  private o: Required<Omit<ClientOptions, "user" | "WebSocket" | "backoff">> & { baseMs: number; maxMs: number };
  private WS: WebSocketCtor;
  private store: Store;
  private ws: WebSocketLike | null = null;
  private gen = 0; // socket generation: events of older sockets are ignored
  private live = false; // hello written on the current socket
  private handlers: Record<string, Set<(...a: any[]) => void>> = {};
  private pending = new Map<string, Pending>();
  private convs = new Map<string, ConvState>();
  private attempt = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private openTimer: ReturnType<typeof setTimeout> | null = null;
  private ackTimer: ReturnType<typeof setTimeout> | null = null;
  private acked = 0;
  private unacked = 0;
  private syncedAt = 0;
  private waiters: { resolve: () => void; reject: (e: SwitchboardError) => void }[] = [];
  private keyUser: string | null = null; // the user the stored state belongs to
  private explicitUser: string | null;
  private savedCursor: number | null = null;
  private savedEpoch: string | null = null;
  private saveTimer: ReturnType<typeof setTimeout> | null = null;
  private loaded = false;
  private refusedToken: string | null = null;
  private refused = 0;
  private filling = 0; // resync ranges being filled: the cursor is not persisted meanwhile
  private saving: Promise<void> = Promise.resolve();
  private storeFailed = false;
  private dirty = false;
  private onOnline = () => this.state === "reconnecting" && this.retryTimer && this.retryNow();

  constructor(options: ClientOptions) {
    const b = options.backoff ?? {};
    this.o = {
      url: options.url,
      token: options.token,
      store: options.store ?? new MemoryStore(),
      ackIntervalMs: options.ackIntervalMs ?? 250,
      gapWaitMs: options.gapWaitMs ?? 300,
      requestTimeoutMs: options.requestTimeoutMs ?? 30_000,
      maxRetries: options.maxRetries ?? 20,
      baseMs: b.baseMs ?? 100,
      maxMs: b.maxMs ?? 10_000,
    };
    this.store = this.o.store;
    this.WS = (options.WebSocket ?? (globalThis as any).WebSocket) as WebSocketCtor;
    if (!this.WS) throw new TypeError("no WebSocket here: pass options.WebSocket (e.g. the `ws` package in node)");
    this.explicitUser = options.user ?? null;
  }

  // -- events ---------------------------------------------------------------------------
  /** Listen to an event; returns the function that removes the listener. */
  on<K extends keyof ClientEvents>(event: K, fn: ClientEvents[K]): () => void {
    const set = (this.handlers[event] ??= new Set());
    set.add(fn);
    return () => set.delete(fn);
  }

  private emit<K extends keyof ClientEvents>(event: K, ...args: Parameters<ClientEvents[K]>): void {
    for (const fn of this.handlers[event] ?? []) {
      try {
        fn(...args);
      } catch (err) {
        // An application error must not break delivery: report it as uncaught
        // (window.onerror in a browser), after the other listeners ran.
        const report = (globalThis as any).reportError;
        if (report) report(err);
        else setTimeout(() => { throw err; });
      }
    }
  }

  private setState(s: ConnState, info?: StateInfo): void {
    if (s === this.state && s !== "reconnecting") return;
    this.state = s;
    this.emit("state", s, info);
  }

  // -- lifecycle ----------------------------------------------------------------------------
  /** Connect; resolves at the first `synced`, rejects if the client closes first
   * (close(), a refused token, 4010). Retryable failures are retried meanwhile. */
  connect(): Promise<void> {
    const p = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    if (this.state === "closed") {
      this.attempt = 0;
      this.refused = 0;
      this.setState("connecting");
      (globalThis as any).addEventListener?.("online", this.onOnline);
      void this.open();
    } else if (this.state === "synced") {
      this.settle(null);
    }
    return p;
  }

  /** Close for good: flushes the ack, persists state, fails pending requests with `closed`. */
  async close(): Promise<void> {
    if (this.state !== "closed") {
      this.flushAck();
      this.terminate(new SwitchboardError("closed", "the client was closed"), false);
    }
    this.persist();
    await this.saving;
  }

  private settle(err: SwitchboardError | null): void {
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) err ? w.reject(err) : w.resolve();
  }

  /** Go to "closed": no reconnect; every pending request fails with `err`. */
  private terminate(err: SwitchboardError, report: boolean, info?: StateInfo): void {
    this.gen++;
    this.live = false;
    const ws = this.ws;
    this.ws = null;
    if (ws) this.detach(ws, true);
    for (const t of [this.retryTimer, this.openTimer, this.ackTimer, this.saveTimer, this.refreshTimer]) if (t) clearTimeout(t);
    this.retryTimer = this.openTimer = this.ackTimer = this.saveTimer = this.refreshTimer = null;
    this.refreshing = false;
    this.nextToken = null;
    (globalThis as any).removeEventListener?.("online", this.onOnline);
    for (const p of this.pending.values()) this.finish(p, err);
    this.pending.clear();
    this.setState("closed", info);
    if (report) this.emit("error", err);
    this.settle(err);
  }

  private detach(ws: WebSocketLike, close: boolean): void {
    ws.onopen = ws.onmessage = ws.onclose = null;
    // Still listening: closing a socket that is not open yet reports an error
    // (node's `ws` throws an error event nobody listens to).
    ws.onerror = () => {};
    if (close) {
      try {
        ws.close(1000, "client closed");
      } catch {
        /* not open yet */
      }
    }
  }

  private async token(): Promise<string> {
    const t = this.o.token;
    return typeof t === "function" ? await t() : t;
  }

  private async open(): Promise<void> {
    const gen = ++this.gen;
    let token: string;
    try {
      token = this.nextToken ?? (await this.token());
      this.nextToken = null;
      if (gen !== this.gen) return;
      this.lastToken = token;
      if (token === this.refusedToken) {
        this.terminate(new SwitchboardError("unauthorized", UNAUTHORIZED_MESSAGE), true, { code: 4001 });
        return;
      }
      await this.useUser(this.explicitUser ?? tokenSubject(token));
      if (gen !== this.gen) return;
    } catch (err) {
      if (gen !== this.gen) return;
      this.emit("error", new SwitchboardError("token_failed", `could not get a token: ${(err as Error)?.message ?? err}`, true));
      this.retryLater(undefined, "token function failed");
      return;
    }
    const url = this.o.url + (this.o.url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
    let ws: WebSocketLike;
    try {
      ws = new this.WS(url);
    } catch (err) {
      this.retryLater(undefined, String((err as Error)?.message ?? err));
      return;
    }
    this.ws = ws;
    this.openTimer = setTimeout(() => {
      if (gen === this.gen && !this.live) this.lost(gen, 1006, "open timeout", true);
    }, OPEN_TIMEOUT_MS);
    ws.onopen = () => {
      if (gen !== this.gen) return;
      clearTimeout(this.openTimer!);
      this.live = true;
      this.write({ type: "hello", cursor: this.cursor, epoch: this.epoch });
      for (const [conv, seq] of this.unsentReads) this.write({ type: "read", conv, seq });
      this.unsentReads.clear();
      for (const p of this.pending.values()) if (p.resend || !p.on) this.writeReq(p);
    };
    ws.onmessage = (ev) => {
      if (gen !== this.gen) return;
      let f: Frame;
      try {
        f = JSON.parse(typeof ev.data === "string" ? ev.data : String(ev.data));
      } catch {
        return;
      }
      if (f && typeof f.type === "string") this.dispatch(f);
    };
    ws.onclose = (ev) => this.lost(gen, ev.code, ev.reason);
    ws.onerror = () => {}; // a close event follows
  }

  /** Key the stored state by `user` (the token's subject, or the welcome's). */
  private async useUser(user: string | null): Promise<boolean> {
    if (!user || (this.loaded && user === this.keyUser)) return false;
    if (this.loaded && user !== this.keyUser) {
      // Another user's token: nothing of the previous user's state applies.
      this.cursor = this.epoch = null;
      this.convs.clear();
      this.acked = 0;
    }
    this.keyUser = user;
    this.loaded = true;
    let raw: string | null = null;
    try {
      raw = await this.store.get(this.key());
    } catch {
      /* an unreadable store: start as a new device */
    }
    if (!raw) return false;
    try {
      const s = JSON.parse(raw);
      if (typeof s.cursor === "number" && (this.cursor === null || s.cursor > this.cursor)) this.cursor = s.cursor;
      if (typeof s.epoch === "string") this.epoch = this.epoch ?? s.epoch;
      this.savedCursor = this.cursor;
      this.savedEpoch = this.epoch;
      for (const [conv, seq] of Object.entries(s.seqs ?? {})) {
        const st = this.conv(conv);
        if (typeof seq === "number" && seq > st.seq) st.seq = seq;
      }
      return typeof s.cursor === "number";
    } catch {
      return false;
    }
  }

  private key(): string {
    return `switchboard:${this.keyUser}:state`;
  }

  /** Write cursor, epoch and per-conversation seqs to the store (coalesced,
   * in order). The cursor waits while resync ranges are being filled. */
  private persist(): void {
    if (!this.keyUser) return;
    if (this.dirty) return;
    this.dirty = true;
    this.saving = this.saving.then(async () => {
      this.dirty = false;
      const seqs: Record<string, number> = {};
      for (const [c, st] of this.convs) if (st.seq) seqs[c] = st.seq;
      if (!this.filling) {
        this.savedCursor = this.cursor;
        this.savedEpoch = this.epoch;
      }
      const state = { cursor: this.savedCursor, epoch: this.savedEpoch, seqs };
      try {
        await this.store.set(this.key(), JSON.stringify(state));
      } catch (err) {
        // Once: a full or forbidden storage (private mode) fails on every write.
        if (!this.storeFailed) this.emit("error", new SwitchboardError("store", `could not save the resume state: ${(err as Error)?.message ?? err}`, true));
        this.storeFailed = true;
      }
    });
  }

  /** The socket of generation `gen` closed (or never opened). */
  private lost(gen: number, code: number, reason: string, closeSocket = false): void {
    if (gen !== this.gen) return;
    const ws = this.ws;
    this.ws = null;
    if (ws) this.detach(ws, closeSocket);
    this.live = false;
    if (this.openTimer) clearTimeout(this.openTimer);
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = null;
    this.persist();
    if (this.syncedAt && Date.now() - this.syncedAt >= HEALTHY_MS) this.attempt = 0;
    this.syncedAt = 0;
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    // Requests written on that socket whose answer is lost and that cannot be resent.
    for (const [ref, p] of this.pending) {
      if (!p.resend && p.on === gen) {
        this.pending.delete(ref);
        this.finish(p, new SwitchboardError("connection_lost", "the connection was lost before the answer; retry", true));
      }
    }
    if (this.refreshing && reason === "token refresh") {
      // Planned: reconnect at once with the fresh token; the app sees no state change.
      this.retryTimer = setTimeout(() => {
        this.retryTimer = null;
        void this.open();
      }, 0);
      return;
    }
    this.refreshing = false;
    if (code === 4001) {
      this.refusedToken = typeof this.o.token === "string" ? this.o.token : this.lastToken;
      if (typeof this.o.token !== "function" || ++this.refused >= MAX_REFUSED) {
        this.terminate(new SwitchboardError("unauthorized", UNAUTHORIZED_MESSAGE), true, { code, reason });
        return;
      }
    } else if (code === 4010) {
      this.terminate(new SwitchboardError("replaced", REPLACED_MESSAGE), true, { code, reason });
      return;
    }
    this.retryLater(code, reason);
  }

  private lastToken: string | null = null;
  private nextToken: string | null = null; // fetched ahead by a refresh
  private refreshing = false; // a planned reconnect with a fresh token: no state events until synced
  private refreshTimer: ReturnType<typeof setTimeout> | null = null;

  /** Plan the renewal of this socket before its token expires (token functions only). */
  private planRefresh(): void {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    const exp = tokenClaims(this.lastToken ?? "").exp;
    if (typeof this.o.token !== "function" || typeof exp !== "number") return;
    const delay = exp * 1000 - REFRESH_AHEAD_MS - Date.now();
    // Already that close to expiry: no renewal (it could loop); the 4001 at
    // expiry gets a fresh token the ordinary way.
    if (delay < 1000 || delay > 2 ** 31 - 1) return;
    const gen = this.gen;
    this.refreshTimer = setTimeout(() => void this.refresh(gen), delay);
  }

  private async refresh(gen: number): Promise<void> {
    this.refreshTimer = null;
    if (gen !== this.gen || this.state !== "synced") return;
    let token: string;
    try {
      token = await this.token();
    } catch {
      return; // the ordinary path at expiry tries again
    }
    if (gen !== this.gen || this.state !== "synced" || token === this.lastToken) return;
    // A request that cannot be resent would fail with the socket: wait for it.
    if ([...this.pending.values()].some((p) => !p.resend && p.on === gen)) {
      this.refreshTimer = setTimeout(() => void this.refresh(gen), 1000);
      return;
    }
    this.nextToken = token;
    this.refreshing = true;
    this.lost(gen, 1000, "token refresh", true);
  }

  private retryLater(code?: number, reason?: string): void {
    this.refreshing = false;
    const delay = backoffDelay(this.attempt++, this.o.baseMs, this.o.maxMs);
    this.setState("reconnecting", { code, reason, retryInMs: delay });
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.open();
    }, delay);
  }

  private retryNow(): void {
    clearTimeout(this.retryTimer!);
    this.retryTimer = null;
    void this.open();
  }

  // -- incoming -------------------------------------------------------------------------------
  private dispatch(f: Frame): void {
    switch (f.type) {
      case "msg":
        f.kind ??= "user"; // a default the server may omit
        if (typeof f.cursor === "number") {
          if (f.cursor > (this.cursor ?? 0)) this.cursor = f.cursor;
          this.scheduleAck();
        }
        this.deliver(f as unknown as Message);
        return;
      case "sent":
        this.answer(f.id, f);
        return;
      case "error":
        this.onError(f);
        return;
      case "welcome":
        this.user = f.user;
        // Adopted at synced: a resync (new epoch) comes first, and a socket
        // lost before it must say hello with the old epoch again.
        this.welcomeEpoch = f.epoch;
        this.refused = 0;
        this.refusedToken = null;
        if (!this.refreshing) this.setState("connected");
        void this.checkUser(f.user);
        return;
      case "synced":
        this.onSynced(f);
        return;
      case "resync":
        this.onResync(f as unknown as Resync);
        return;
      case "receipt":
        for (const p of this.pending.values()) {
          if (p.frame.type === "receipts" && p.frame.conv === f.conv && p.got) {
            p.got.push(f);
            if (p.quiet) clearTimeout(p.quiet);
            p.quiet = setTimeout(() => this.answer(p.frame.id, p.got), RECEIPTS_QUIET_MS);
          }
        }
        this.emit("receipt", f as unknown as Receipt);
        return;
      case "presence":
        f.last_seen ??= null; // omitted when never seen
        this.emit("presence", f as unknown as Presence);
        for (const p of this.pending.values()) {
          if (p.frame.type === "presence.watch" && p.got && p.frame.users.includes(f.user)) {
            if (!p.got.some((x) => x.user === f.user)) p.got.push(f);
            if (p.got.length >= new Set(p.frame.users).size) this.answer(p.frame.id, p.got);
          }
        }
        return;
      case "typing":
        this.emit("typing", f as any);
        return;
      case "conv":
        if (f.ref && this.pending.has(f.ref)) this.answer(f.ref, f);
        this.emit("conv", { conv: f.conv, members: f.members, title: f.title ?? "" });
        return;
      default:
        if (f.ref) this.answer(f.ref, f); // history, conv.list, ok
    }
  }

  /** The welcome says who we are: if the stored state was keyed by another
   * user (an opaque token), load that user's state and resume from it. */
  private async checkUser(user: string): Promise<void> {
    if (user === this.keyUser) return;
    const gen = this.gen;
    const before = this.cursor;
    const hadState = await this.useUser(user);
    if (hadState && gen === this.gen && this.cursor !== before && this.ws) {
      this.attempt = 0;
      this.lost(gen, 1000, "resuming from the stored cursor", true);
    }
  }

  private welcomeEpoch: string | null = null;

  private onSynced(f: Frame): void {
    this.epoch = this.welcomeEpoch ?? this.epoch;
    // A synced cursor of 0 (a new fabric's empty INBOX) counts too: without it
    // the device would stay "new" (hello cursor null, no replay) forever.
    if (typeof f.cursor === "number" && (this.cursor === null || f.cursor > this.cursor)) this.cursor = f.cursor;
    for (const g of f.groups ?? []) {
      // Large groups (pull mode): fetch what was missed while away.
      const st = this.conv(g.conv);
      if (st.seq === 0) st.seq = g.upto;
      else if (g.upto > st.seq) void this.fill(g.conv, st.seq, g.upto);
    }
    // Presence watches belong to a socket: renew those not being (re)sent now.
    const asking = new Set<string>();
    for (const p of this.pending.values()) if (p.frame.type === "presence.watch") p.frame.users.forEach((u: string) => asking.add(u));
    const renew = this.watched.filter((u) => !asking.has(u));
    if (renew.length) this.write({ type: "presence.watch", users: renew });
    this.syncedAt = Date.now();
    this.persist();
    this.refreshing = false;
    this.planRefresh();
    this.setState("synced");
    this.settle(null);
  }

  private onResync(r: Resync): void {
    this.cursor = r.cursor;
    this.emit("resync", r);
    const ranges = r.ranges.length ? r.ranges : [...this.convs.keys()].map((conv) => ({ conv, after: 0, upto: 0 }));
    for (const range of ranges) {
      const after = Math.max(range.after ?? 0, this.convs.get(range.conv)?.seq ?? 0); // the server omits after: 0
      if (!range.upto || range.upto > after) {
        this.filling++;
        void this.fill(range.conv, after, range.upto || null).finally(() => {
          this.filling--;
          this.persist();
        });
      }
    }
  }

  private conv(conv: string): ConvState {
    let st = this.convs.get(conv);
    if (!st) this.convs.set(conv, (st = { seq: 0, held: new Map(), repairing: false, fills: 0 }));
    return st;
  }

  /** Hand messages to the application once each, in seq order per
   * conversation; a gap is waited for (gapWaitMs), then fetched from history. */
  private deliver(m: Message): void {
    const st = this.conv(m.conv);
    if (st.seq === 0 && m.seq > 1) {
      // First sight of a conversation mid-stream: it starts at the lowest seq
      // arriving within gapWaitMs.
      if (!st.held.has(m.seq)) {
        st.held.set(m.seq, m);
        this.repair(m.conv, st);
      }
      return;
    }
    if (m.seq <= st.seq || st.held.has(m.seq)) return; // duplicate
    if (m.seq !== st.seq + 1) {
      st.held.set(m.seq, m);
      if (st.held.size > MAX_HELD) this.skipGap(st);
      else this.repair(m.conv, st);
      return;
    }
    this.hand(st, m);
    this.drain(st);
  }

  private drain(st: ConvState): void {
    while (st.held.has(st.seq + 1)) {
      const next = st.held.get(st.seq + 1)!;
      st.held.delete(next.seq);
      this.hand(st, next);
    }
  }

  /** The app fetched a conversation this client has not followed yet (the
   * newest history page, or conv.list): it has everything up to `seq`, so live
   * messages after it are handed over at once instead of after gapWaitMs. */
  private startAt(conv: string, seq: number): void {
    const st = this.conv(conv);
    if (st.seq !== 0 || st.fills || !(seq > 0)) return;
    st.seq = seq;
    for (const k of [...st.held.keys()]) if (k <= seq) st.held.delete(k);
    this.drain(st);
  }

  private hand(st: ConvState, m: Message): void {
    st.seq = m.seq;
    this.saveTimer ??= setTimeout(() => {
      this.saveTimer = null;
      this.persist();
    }, this.o.ackIntervalMs);
    this.emit("message", m);
  }

  private skipGap(st: ConvState): void {
    for (const seq of [...st.held.keys()].sort((a, b) => a - b)) {
      const m = st.held.get(seq)!;
      st.held.delete(seq);
      this.hand(st, m);
    }
  }

  private repair(conv: string, st: ConvState): void {
    if (st.repairing) return;
    st.repairing = true;
    setTimeout(async () => {
      try {
        if (st.seq === 0 && st.held.size) {
          const first = Math.min(...st.held.keys());
          const m = st.held.get(first)!;
          st.held.delete(first);
          st.seq = first - 1;
          this.deliver(m);
        }
        while (st.held.size) {
          const before = st.seq;
          await this.fill(conv, st.seq, Math.max(...st.held.keys()));
          if (st.seq === before) break; // history could not help
        }
        if (st.held.size) this.skipGap(st);
      } finally {
        st.repairing = false;
      }
    }, this.o.gapWaitMs);
  }

  /** Deliver every message with after < seq <= upto (to the end if null) from history. */
  private async fill(conv: string, after: number, upto: number | null): Promise<void> {
    const st = this.conv(conv);
    if (st.seq === 0 && after > 0) st.seq = after;
    st.fills++;
    try {
      for (;;) {
        const page = await this.history(conv, { after, limit: 200 });
        for (const m of page.messages) {
          if (upto !== null && m.seq > upto) return;
          this.deliver(m);
          after = m.seq;
        }
        if (!page.more || !page.messages.length) return;
      }
    } catch {
      /* not reachable now: a later gap or resync fetches it */
    } finally {
      st.fills--;
    }
  }

  private onError(f: Frame): void {
    const p = f.ref ? this.pending.get(f.ref) : undefined;
    const err = new SwitchboardError(f.code ?? "internal", f.message ?? "error", !!f.retry);
    if (!p) {
      this.emit("error", err);
      return;
    }
    if (err.retry && p.resend && p.attempts < this.o.maxRetries) {
      // The same frame again (a send keeps its id: stored once) after a pause.
      p.lastError = err;
      const delay = backoffDelay(p.attempts++, this.o.baseMs, this.o.maxMs);
      p.again = setTimeout(() => this.pending.get(f.ref) === p && this.live && this.writeReq(p), delay);
      return;
    }
    this.pending.delete(f.ref);
    this.finish(p, err);
  }

  private answer(ref: string, value: any): void {
    const p = this.pending.get(ref);
    if (!p) return;
    this.pending.delete(ref);
    // A collected answer (receipts) ends with an `ok` carrying the ref: resolve with what was collected.
    this.finish(p, null, p.got ?? value);
  }

  private finish(p: Pending, err: SwitchboardError | null, value?: any): void {
    clearTimeout(p.timer);
    clearTimeout(p.quiet);
    clearTimeout(p.again);
    err ? p.reject(err) : p.resolve(value);
  }

  // -- acks -------------------------------------------------------------------------------------
  private scheduleAck(): void {
    if (++this.unacked >= ACK_EVERY) this.flushAck();
    else this.ackTimer ??= setTimeout(() => this.flushAck(), this.o.ackIntervalMs);
  }

  private flushAck(): void {
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = null;
    this.unacked = 0;
    if (this.live && this.cursor !== null && this.cursor > this.acked) {
      this.write({ type: "ack", cursor: this.cursor });
      this.acked = this.cursor;
      this.persist();
    }
  }

  // -- outgoing ---------------------------------------------------------------------------------
  private write(f: Frame): void {
    try {
      this.ws?.send(JSON.stringify(f));
    } catch {
      /* closing: the close event follows */
    }
  }

  private writeReq(p: Pending): void {
    p.on = this.gen;
    this.write(p.frame);
    if (p.frame.type === "receipts" && !p.got?.length) {
      clearTimeout(p.quiet);
      p.quiet = setTimeout(() => this.answer(p.frame.id, p.got), RECEIPTS_EMPTY_MS);
    }
  }

  private request<T>(frame: Frame, resend: boolean, collect = false): Promise<T> {
    if (this.state === "closed") return Promise.reject(new SwitchboardError("closed", "the client is closed: connect() first"));
    const ref = frame.id as string;
    return new Promise<T>((resolve, reject) => {
      const p: Pending = {
        frame, resolve, reject, resend, on: 0, attempts: 0,
        timer: setTimeout(() => {
          if (this.pending.get(ref) !== p) return;
          this.pending.delete(ref);
          if (collect && p.got?.length) this.finish(p, null, p.got);
          else this.finish(p, p.lastError ?? new SwitchboardError("timeout", `no answer to ${frame.type} within ${this.o.requestTimeoutMs} ms`, true));
        }, this.o.requestTimeoutMs),
        got: collect ? [] : undefined,
      };
      this.pending.set(ref, p);
      if (this.live) this.writeReq(p);
    });
  }

  /** Send a message; resolves with `sent` once it is durable. Resent with the
   * same id after a reconnect and on retryable errors, so it is stored once. */
  send(opts: SendOptions): Promise<Sent> {
    const id = opts.id ?? randomId();
    if (this.pending.has(id)) return Promise.reject(new SwitchboardError("conflict", `a send with id ${id} is in flight`));
    const f: Frame = { type: "send", id, body: opts.body };
    if (opts.conv != null) f.conv = opts.conv;
    if (opts.to != null) f.to = opts.to;
    if (opts.trace) f.trace = true;
    return this.request<Frame>(f, true).then((s) => ({ id: s.id, conv: s.conv, seq: s.seq, ts: s.ts }));
  }

  /** Create a group conversation (you are always a member). */
  createConversation(members: string[], title = ""): Promise<Conv> {
    return this.request<Frame>({ type: "conv.create", id: randomId(), members, title }, false)
      .then((c) => ({ conv: c.conv, members: c.members, title: c.title ?? "" }));
  }

  /** One page of a conversation's messages, ascending seq. */
  history(conv: string, opts: HistoryOptions = {}): Promise<HistoryPage> {
    const f: Frame = { type: "history", id: randomId(), conv, limit: opts.limit ?? 50 };
    if (opts.before != null) f.before = opts.before;
    if (opts.after != null) f.after = opts.after;
    return this.request<Frame>(f, true).then((h) => {
      const messages: Message[] = (h.messages ?? []).map(asMessage);
      if (opts.before == null && opts.after == null && messages.length) this.startAt(conv, messages[messages.length - 1].seq);
      return { conv: h.conv, messages, more: !!h.more };
    });
  }

  /** Your conversations, most recent activity first (`conv.list`). */
  listConversations(): Promise<ConvSummary[]> {
    return this.request<Frame>({ type: "conv.list", id: randomId() }, true)
      .then((r) => (r.convs ?? []).map((c: ConvSummary) => {
        this.startAt(c.conv, c.last_seq);
        return { ...c, title: c.title ?? "", last: c.last ? asMessage(c.last) : null };
      }));
  }

  /** Mark `conv` read up to `seq` (members get a receipt). */
  read(conv: string, seq: number): void {
    if (this.live) this.write({ type: "read", conv, seq });
    else if (seq > (this.unsentReads.get(conv) ?? -1)) this.unsentReads.set(conv, seq); // sent on the next connection
  }

  private unsentReads = new Map<string, number>();

  /** Tell the other members you are typing (the edge forwards about 1/s). */
  typing(conv: string): void {
    if (this.live) this.write({ type: "typing", conv });
  }

  /** Watch users' presence: resolves with their current presence; changes then
   * arrive as "presence" events. Watches are renewed after a reconnect. */
  watchPresence(users: string[]): Promise<Presence[]> {
    if (!users.length) return Promise.resolve([]);
    this.watched = [...new Set([...this.watched, ...users])];
    return this.request<Presence[]>({ type: "presence.watch", id: randomId(), users: [...new Set(users)] }, true, true);
  }

  private watched: string[] = [];

  /** Every member's current delivered/read watermarks of `conv`. */
  receipts(conv: string): Promise<Receipt[]> {
    return this.request<Receipt[]>({ type: "receipts", id: randomId(), conv }, true, true);
  }

  /** Register this device for push notifications (stored once per token). */
  registerPush(platform: PushPlatform, token: string): Promise<void> {
    return this.request<Frame>({ type: "push.register", id: randomId(), platform, token }, true).then(() => undefined);
  }

  /** Subscribe with the browser's PushManager (reusing an existing
   * subscription) and register it: platform "webpush", the subscription JSON. */
  async registerWebPush(registration: ServiceWorkerRegistration, vapidPublicKey: string | BufferSource): Promise<PushSubscription> {
    let sub = await registration.pushManager.getSubscription();
    if (!sub) {
      const key = typeof vapidPublicKey === "string" ? (base64UrlBytes(vapidPublicKey) as BufferSource) : vapidPublicKey;
      sub = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
    }
    await this.registerPush("webpush", JSON.stringify(sub));
    return sub;
  }

  /** The id of your 1:1 conversation with `other` (known before its first message). */
  dmConv(other: string): string {
    const me = this.user ?? this.keyUser;
    if (!me) throw new SwitchboardError("closed", "dmConv: the user is not known before the first welcome");
    return dmConv(me, other);
  }
}

/** A message as the app sees it: `kind` filled in where the server omitted its default. */
function asMessage(m: any): Message {
  m.kind ??= "user";
  return m;
}

/** The bytes of a base64url string (a VAPID public key). */
function base64UrlBytes(s: string): Uint8Array {
  const b64 = s.replace(/-/g, "+").replace(/_/g, "/");
  const bin = atob(b64 + "===".slice((b64.length + 3) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}
