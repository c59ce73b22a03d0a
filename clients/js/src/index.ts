/** switchboard-client: the browser/node SDK of the Switchboard wire protocol v1. */
export { Client } from "./client.js";
export { SwitchboardError } from "./errors.js";
export { MemoryStore, LocalStorageStore, IndexedDBStore } from "./stores.js";
export type { StorageLike } from "./stores.js";
export { dmConv } from "./ids.js";
export type {
  BackoffOptions, ClientEvents, ClientOptions, ConnState, Conv, ConvSummary, HistoryOptions, HistoryPage, Message,
  Presence, PushPlatform, Receipt, Resync, ResyncRange, SendOptions, Sent, StateInfo, Store, TokenSource, Typing,
  WebSocketCtor, WebSocketLike,
} from "./types.js";
