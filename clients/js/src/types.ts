/** Public types of the SDK: the frames of wire protocol v1 as the application sees them. */

/** Connection state. "closed" is where a client starts, and where it ends after
 * close(), a refused token it cannot replace (4001) or a replacement by another
 * socket of the same user (4010): no automatic reconnect from there. */
export type ConnState = "connecting" | "connected" | "synced" | "reconnecting" | "closed";

/** Detail of a state change: the close code and reason that caused it, and the
 * delay before the next attempt when reconnecting. */
export interface StateInfo {
  code?: number;
  reason?: string;
  retryInMs?: number;
}

/** A message (`msg` frame, or an entry of a history page). */
export interface Message {
  conv: string;
  seq: number;
  /** The sender's message id. */
  id: string;
  from: string;
  body: string;
  /** Server time, ms since the epoch. */
  ts: number;
  kind: "user" | "system" | string;
  /** INBOX cursor (live and replayed messages; absent in history and large groups). */
  cursor?: number | null;
}

/** The answer to send(): the message is durable. */
export interface Sent {
  id: string;
  conv: string;
  seq: number;
  ts: number;
}

export interface Receipt {
  conv: string;
  user: string;
  delivered: number;
  read: number;
}

export interface Typing {
  conv: string;
  user: string;
}

export interface Presence {
  user: string;
  online: boolean;
  /** ms since the epoch, null if never seen. */
  last_seen: number | null;
}

export interface Conv {
  conv: string;
  members: string[];
  title: string;
}

/** An entry of listConversations() (`conv.list`). */
export interface ConvSummary extends Conv {
  last_seq: number;
  /** Your own read watermark: unread = last_seq - read. */
  read: number;
  /** The conversation's last message, or null. */
  last: Message | null;
}

export interface ResyncRange {
  conv: string;
  after: number;
  upto: number;
}

export interface Resync {
  reason: "epoch_changed" | "cursor_expired" | "cursor_unknown" | string;
  cursor: number;
  ranges: ResyncRange[];
}

export interface HistoryPage {
  conv: string;
  /** Ascending seq. */
  messages: Message[];
  more: boolean;
}

export interface HistoryOptions {
  before?: number | null;
  after?: number | null;
  /** 1..200, default 50. */
  limit?: number;
}

export interface SendOptions {
  /** A conversation id; or `to`. */
  conv?: string;
  /** A user id: the 1:1 conversation with that user. */
  to?: string;
  body: string;
  /** Your own message id ([A-Za-z0-9_-]{16,64}); by default a random one. */
  id?: string;
  /** Ask the fabric to trace this message (optional field of the send frame). */
  trace?: boolean;
}

export type PushPlatform = "webpush" | "apns" | "fcm";

/** Pluggable async key/value storage for the client's resume state. */
export interface Store {
  get(key: string): Promise<string | null>;
  set(key: string, value: string): Promise<void>;
  delete(key: string): Promise<void>;
}

export type TokenSource = string | (() => string | Promise<string>);

/** A WebSocket constructor with the browser API (globalThis.WebSocket, or `ws` in node). */
export type WebSocketCtor = new (url: string) => WebSocketLike;

export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: any }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export interface BackoffOptions {
  /** First retry waits random(0, baseMs); default 100. */
  baseMs?: number;
  /** Upper bound of the wait; default 10000. */
  maxMs?: number;
}

export interface ClientOptions {
  /** ws(s)://HOST:PORT/ws */
  url: string;
  /** A token, or a function called on every (re)connect for a fresh one. */
  token: TokenSource;
  /** Where cursor, epoch and per-conversation seqs persist; default MemoryStore. */
  store?: Store;
  /** The user the stored state is keyed by; default the token's `sub` claim. */
  user?: string;
  /** Default globalThis.WebSocket. */
  WebSocket?: WebSocketCtor | typeof WebSocket;
  /** Acks are batched: one per this interval (or per 100 messages); default 250. */
  ackIntervalMs?: number;
  /** A missing seq is waited for this long, then fetched from history; default 300. */
  gapWaitMs?: number;
  backoff?: BackoffOptions;
  /** Requests (and send) fail with `timeout` after this long; default 30000. */
  requestTimeoutMs?: number;
  /** A send answered with a retryable error is resent at most this often; default 20. */
  maxRetries?: number;
}

export interface ClientEvents {
  state: (state: ConnState, info?: StateInfo) => void;
  message: (m: Message) => void;
  receipt: (r: Receipt) => void;
  typing: (t: Typing) => void;
  presence: (p: Presence) => void;
  conv: (c: Conv) => void;
  resync: (r: Resync) => void;
  error: (e: import("./errors.js").SwitchboardError) => void;
}
