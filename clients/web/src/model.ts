/** What the app knows about each conversation: the list entry (unread, last
 * message) and the messages it has shown or fetched. The SDK stores no
 * messages: history comes back from the server on demand. */

import type { Message, Receipt } from "../../js/src/index.ts";

/** A message as the app shows it. `seq` is 0 while one of ours is being sent. */
export interface Entry {
  id: string;
  conv: string;
  seq: number;
  from: string;
  body: string;
  ts: number;
  kind: string;
  /** Why sending failed (a human sentence); the message offers a retry. */
  failed?: string;
  /** Its element once rendered (reused across renders). */
  el?: HTMLElement;
}

export interface Watermarks {
  delivered: number;
  read: number;
}

export interface ConvState {
  conv: string;
  members: string[];
  title: string;
  /** The other user of a 1:1 conversation (dm-… id), null for groups or when unknown. */
  peer: string | null;
  /** The newest seq known (from the list, messages, sends). */
  lastSeq: number;
  /** Our own read watermark: unread = lastSeq - readSeq. */
  readSeq: number;
  /** The highest seq a `read` frame told the server (or the server told us). */
  toldRead?: number;
  last: Entry | null;
  /** ms since the epoch of the last activity (sort key of the list). */
  activity: number;
  bySeq: Map<number, Entry>;
  /** Our own sends that have no seq yet, by message id. */
  pending: Map<string, Entry>;
  /** The newest history page was fetched. */
  loaded: boolean;
  /** Older history exists on the server. */
  more: boolean;
  loading: boolean;
  /** Other members' delivered/read watermarks (receipt events, receipts()). */
  receipts: Map<string, Watermarks>;
  /** The peer's presence was asked while this conversation existed. */
  shared?: boolean;
  /** While open: the first seq unread when it was opened ("New messages" goes before it), 0 if none. */
  newFrom?: number;
  /** What was typed in the composer and not sent when another conversation was opened. */
  draft?: string;
  li?: HTMLElement;
}

export const DM_RE = /^dm-[0-9a-f]{40}$/;
export const ID_RE = /^[A-Za-z0-9_-]{1,64}$/;

export function newConv(conv: string): ConvState {
  return {
    conv, members: [], title: "", peer: null, lastSeq: 0, readSeq: 0, last: null, activity: 0,
    bySeq: new Map(), pending: new Map(), loaded: false, more: true, loading: false, receipts: new Map(),
  };
}

export function toEntry(m: Message): Entry {
  return { id: m.id, conv: m.conv, seq: m.seq, from: m.from, body: m.body, ts: m.ts, kind: m.kind || "user" };
}

export function unread(c: ConvState): number {
  return Math.max(0, c.lastSeq - c.readSeq);
}

/** Adds a message unless it is known; returns the entry when it is new to
 * this conversation (our own pending send counts as known: it gets its seq). */
export function addMessage(c: ConvState, m: Message, me: string, live = true): Entry | null {
  if (c.bySeq.has(m.seq)) return null;
  let e: Entry | undefined = m.from === me ? c.pending.get(m.id) : undefined;
  let fresh = true;
  if (e) {
    c.pending.delete(m.id);
    e.seq = m.seq;
    e.ts = m.ts;
    fresh = false;
  } else {
    e = toEntry(m);
  }
  c.bySeq.set(m.seq, e);
  if (m.seq > c.lastSeq) c.lastSeq = m.seq;
  if (m.from === me && m.seq > c.readSeq) c.readSeq = m.seq; // sending marks read
  // the list shows the newest: a live arrival is newer than our send in flight
  if (!c.last || (c.last.seq === 0 ? live || c.last === e : m.seq >= c.last.seq)) c.last = e;
  if (m.ts > c.activity) c.activity = m.ts;
  return fresh ? e : null;
}

/** Messages in display order: by seq, then our sends still without one. */
export function ordered(c: ConvState): Entry[] {
  const out = [...c.bySeq.values()].sort((a, b) => a.seq - b.seq);
  for (const e of c.pending.values()) out.push(e);
  return out;
}

export function oldestSeq(c: ConvState): number {
  let min = 0;
  for (const s of c.bySeq.keys()) if (min === 0 || s < min) min = s;
  return min;
}

export function newestSeq(c: ConvState): number {
  let max = 0;
  for (const s of c.bySeq.keys()) if (s > max) max = s;
  return max;
}

/** Other members (everyone but me; those with receipts when members are unknown). */
export function others(c: ConvState, me: string): string[] {
  if (c.members.length) {
    const o = c.members.filter((u) => u !== me);
    return o.length ? o : c.members; // a 1:1 with oneself
  }
  return [...c.receipts.keys()];
}

export type TickState = "sending" | "sent" | "delivered" | "read" | "failed";

/** Lowest delivered and read watermark over the other members: a message is
 * delivered/read when everyone else has it. */
export function floor(c: ConvState, me: string): Watermarks {
  const users = others(c, me);
  if (!users.length) return { delivered: 0, read: 0 };
  let delivered = Infinity, read = Infinity;
  for (const u of users) {
    const w = c.receipts.get(u);
    const r = w ? w.read : 0;
    const d = w ? Math.max(w.delivered, r) : 0;
    if (d < delivered) delivered = d;
    if (r < read) read = r;
  }
  return { delivered, read };
}

export function tick(e: Entry, w: Watermarks): TickState {
  if (e.failed) return "failed";
  if (!e.seq) return "sending";
  if (w.read >= e.seq) return "read";
  if (w.delivered >= e.seq) return "delivered";
  return "sent";
}

export function applyReceipt(c: ConvState, r: Receipt): void {
  const w = c.receipts.get(r.user);
  if (!w) c.receipts.set(r.user, { delivered: r.delivered, read: r.read });
  else {
    if (r.delivered > w.delivered) w.delivered = r.delivered;
    if (r.read > w.read) w.read = r.read;
  }
}
