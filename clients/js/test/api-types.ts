// Type-level check of the public API as the issue-10 contract spells it
// (compiled with `tsc --noEmit` by `npm test`; never run). A renamed method,
// event or field breaks the build here before it breaks the web app.
import {
  Client, IndexedDBStore, LocalStorageStore, MemoryStore, SwitchboardError, dmConv,
  type ConnState, type Conv, type ConvSummary, type HistoryPage, type Message, type Presence, type Receipt,
  type Resync, type Sent, type StateInfo, type Store, type Typing,
} from "../dist/index.js";

export async function contract(ws: typeof WebSocket, reg: ServiceWorkerRegistration): Promise<void> {
  const store: Store = new MemoryStore();
  const stores: Store[] = [store, new LocalStorageStore(), new IndexedDBStore()];
  const client = new Client({
    url: "ws://127.0.0.1:8080/ws",
    token: () => Promise.resolve("JWT"),
    store: stores[0],
    WebSocket: ws,
    ackIntervalMs: 250,
    gapWaitMs: 300,
    backoff: { baseMs: 100, maxMs: 10000 },
  });
  new Client({ url: "ws://x/ws", token: "JWT" });
  new Client({ url: "ws://x/ws", token: () => "JWT" });
  const off: () => void = client.on("state", (s: ConnState, info?: StateInfo) => {
    const code: number | undefined = info?.code;
    const reason: string | undefined = info?.reason;
    const retryInMs: number | undefined = info?.retryInMs;
    const states: ConnState[] = ["connecting", "connected", "synced", "reconnecting", "closed", s];
    void [code, reason, retryInMs, states];
  });
  off();
  client.on("message", (m: Message) => {
    const fields: [string, number, string, string, string, number, string] = [m.conv, m.seq, m.id, m.from, m.body, m.ts, m.kind];
    void fields;
  });
  client.on("receipt", (r: Receipt) => void [r.conv, r.user, r.delivered, r.read]);
  client.on("typing", (t: Typing) => void [t.conv, t.user]);
  client.on("presence", (p: Presence) => void [p.user, p.online, p.last_seen]);
  client.on("conv", (c: Conv) => void [c.conv, c.members, c.title]);
  client.on("resync", (r: Resync) => void [r.reason, r.cursor, r.ranges]);
  client.on("error", (e: SwitchboardError) => void [e.code, e.message, e.retry]);
  await client.connect();
  const sent: Sent = await client.send({ conv: "c", body: "hi", id: "0123456789abcdef", trace: true });
  await client.send({ to: "bob", body: "hi" });
  void [sent.id, sent.conv, sent.seq, sent.ts];
  const conv: Conv = await client.createConversation(["bob", "carol"], "lunch");
  const page: HistoryPage = await client.history(conv.conv, { before: 10, after: null, limit: 50 });
  const more: boolean = page.more;
  const messages: Message[] = page.messages;
  const convs: ConvSummary[] = await client.listConversations();
  const c0 = convs[0];
  void [more, messages, c0.last_seq, c0.read, c0.last?.body, c0.members, c0.title];
  client.read(conv.conv, 3);
  client.typing(conv.conv);
  await client.watchPresence(["bob"]);
  const receipts: Receipt[] = await client.receipts(conv.conv);
  await client.registerPush("webpush", "{}");
  await client.registerPush("apns", "ab");
  await client.registerPush("fcm", "x");
  const sub: PushSubscription = await client.registerWebPush(reg, "BASE64URL");
  const id: string = client.dmConv("bob");
  const id2: string = dmConv("alice", "bob");
  const user: string | null = client.user;
  const state: ConnState = client.state;
  await client.close();
  const err = new SwitchboardError("timeout", "no answer", true);
  void [receipts, sub, id, id2, user, state, err instanceof Error];
}
