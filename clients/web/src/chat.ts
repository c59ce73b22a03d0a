/** The chat screen: conversation list, open conversation, composer, and the
 * SDK events that keep them current. */

import { Client, LocalStorageStore } from "../../js/src/index.ts";
import type { ConnState, Conv, Message, Presence, Receipt, StateInfo, Typing } from "../../js/src/index.ts";
import { $, h, setText, show } from "./dom.ts";
import { lastSeen } from "./format.ts";
import type { ConvState, Entry } from "./model.ts";
import { addMessage, applyReceipt, DM_RE, floor, ID_RE, newConv, newestSeq, oldestSeq, ordered, tick, unread } from "./model.ts";
import { daySeparator, initial, listItem, messageEl, title, updateListItem, updateMessage } from "./render.ts";
import { dayKey } from "./format.ts";
import { offerPush } from "./push.ts";

/** Typing is sent at most this often while typing. */
const TYPING_EVERY_MS = 2000;
/** "X is typing…" shows this long after a typing event. */
const TYPING_SHOW_MS = 4000;
const PAGE = 50;
/** Reads of a busy open conversation go out at most this often (like the
 * SDK's batched acks): each one makes receipts for every member's devices. */
const READ_THROTTLE_MS = 200;
const MAX_BODY_BYTES = 16384;
const MAX_TIMINGS = 10000;
/** Scrolled this close to the top loads older messages; this close to the bottom keeps following. */
const EDGE_PX = 48;

export interface Timing {
  conv: string;
  seq: number | null;
  id: string;
  /** The sender's send() call (ms since the epoch), in the sending tab only. */
  sentAt: number | null;
  /** Inserted in the DOM (ms since the epoch). */
  visibleAt: number | null;
  /** The message's server time. */
  ts: number | null;
}

export type Fatal = "unauthorized" | "expired" | "replaced";

const now = (): number => performance.timeOrigin + performance.now();

function newId(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  let s = "w";
  for (const x of b) s += (x < 16 ? "0" : "") + x.toString(16);
  return s;
}

function human(err: unknown): string {
  const m = err && typeof err === "object" && "message" in err ? (err as { message: unknown }).message : null;
  return typeof m === "string" && m && m !== "undefined" ? m : "something went wrong; try again";
}

export class Chat {
  readonly client: Client;
  readonly timings: Timing[] = [];
  private convs = new Map<string, ConvState>();
  private open: ConvState | null = null;
  private presence = new Map<string, Presence>();
  private watched = new Set<string>();
  private typingUntil = new Map<string, Map<string, number>>();
  private typingTimer = 0;
  private lastTypingSent = 0;
  private everSynced = false;
  private readTimer = 0;
  private lastReadAt = 0;
  private unsentReads = new Map<string, ConvState>();
  private listTimer = 0;
  private wantHash: string | null;
  private fatal = false;
  private pushOffered = false;

  private list = $("conv-list");
  private msgs = $("messages");
  private older = $<HTMLButtonElement>("load-older");
  private composer = $<HTMLTextAreaElement>("composer");
  private sendBtn = $<HTMLButtonElement>("send");

  constructor(private me: string, token: string, private onFatal: (why: Fatal) => void) {
    this.client = new Client({
      url: (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws",
      token,
      store: new LocalStorageStore(),
    });
    this.wantHash = decodeURIComponent(location.hash.slice(1)) || null;
    const c = this.client;
    c.on("state", (s, info) => this.onState(s, info));
    c.on("message", (m) => this.onMessage(m));
    c.on("receipt", (r) => this.onReceipt(r));
    c.on("typing", (t) => this.onTyping(t));
    c.on("presence", (p) => this.onPresence(p));
    c.on("conv", (cv) => this.onConv(cv));
    c.on("error", (e) => {
      if (e.code === "unauthorized") this.die("unauthorized");
      else if (e.code === "replaced") this.die("replaced");
    });
    this.wire();
    this.showMe();
    // unread counts wait for the first conversation list (a replay before it
    // knows the messages but not our read watermarks)
    document.body.classList.add("listing");
    c.connect().catch((e) => {
      if (e && e.code === "unauthorized") this.die("unauthorized");
      else if (e && e.code === "replaced") this.die("replaced");
    });
  }

  // -- connection -------------------------------------------------------------------------
  private onState(s: ConnState, info?: StateInfo): void {
    const el = $("conn-state");
    let ui: string;
    if (s === "synced") ui = "online";
    else if (s === "closed") ui = "offline";
    else if (s === "reconnecting" || this.everSynced) ui = "reconnecting";
    else ui = "connecting";
    el.dataset.state = ui;
    setText(el, { online: "Online", offline: "Offline", reconnecting: "Reconnecting…", connecting: "Connecting…" }[ui]!);
    const banner = $("reconnecting");
    show(banner, ui === "reconnecting");
    if (ui === "reconnecting") {
      const secs = info?.retryInMs ? Math.ceil(info.retryInMs / 1000) : 0;
      const what = this.everSynced ? "Connection lost." : "Cannot reach the server.";
      setText(banner, secs > 1 ? `${what} Reconnecting in ${secs} s…` : `${what} Reconnecting…`);
    }
    if (s === "closed" && info?.code === 4001) this.die(info.reason === "token expired" ? "expired" : "unauthorized");
    else if (s === "closed" && info?.code === 4010) this.die("replaced");
    if (s !== "synced") return;
    if (this.client.user && this.client.user !== this.me) {
      this.me = this.client.user;
      this.showMe();
    }
    this.everSynced = true;
    this.refreshList();
    if (!this.pushOffered) {
      this.pushOffered = true;
      offerPush(this.client, $<HTMLButtonElement>("notify"));
    }
    if (this.open) {
      this.loadReceipts(this.open);
      if (!this.open.loaded) this.loadPage(this.open, true); // it failed while the connection was down
    }
  }

  private showMe(): void {
    setText($("me"), this.me);
    setText(document.querySelector(".me-avatar")!, initial(this.me));
  }

  private die(why: Fatal): void {
    if (this.fatal) return;
    this.fatal = true;
    this.onFatal(why);
  }

  /** conv.list at start and after every reconnect: unread counts and last
   * messages that this tab did not see arrive. */
  private refreshList(): void {
    this.client.listConversations().then((list) => {
      document.body.classList.remove("listing");
      for (const s of list) {
        const c = this.upsert(s.conv, s.members, s.title);
        if (s.last_seq > c.lastSeq) c.lastSeq = s.last_seq;
        if (s.read > c.readSeq) c.readSeq = s.read;
        if (s.read > (c.toldRead ?? 0)) c.toldRead = s.read;
        if (s.last && (!c.last || (c.last.seq !== 0 && s.last.seq > c.last.seq))) {
          c.last = c.bySeq.get(s.last.seq) ?? { ...s.last, conv: s.conv, kind: s.last.kind || "user" };
          if (s.last.ts > c.activity) c.activity = s.last.ts;
        }
      }
      this.renderList();
      this.watch(this.convs.values());
      if (this.wantHash) {
        const c = this.convs.get(this.wantHash);
        this.wantHash = null;
        if (c && !this.open) this.openConv(c, false);
      }
      if (this.open) this.markRead();
    }, (e) => {
      document.body.classList.remove("listing");
      console.warn("conversation list unavailable:", human(e));
    });
  }

  /** A conversation appeared that the list does not describe: ask again (debounced). */
  private refreshListSoon(): void {
    if (this.listTimer) return;
    this.listTimer = window.setTimeout(() => {
      this.listTimer = 0;
      if (this.client.state === "synced") this.refreshList();
    }, 300);
  }

  /** Presence of 1:1 peers (the SDK renews the watches after a reconnect).
   * The fabric answers "offline" about a user who shares no conversation with
   * us, so a peer watched before the first message is asked again after it. */
  private watch(cs: Iterable<ConvState>): void {
    const todo = new Set<string>();
    for (const c of cs) {
      if (!c.peer) continue;
      const first = c.lastSeq > 0 && !c.shared;
      if (c.lastSeq > 0) c.shared = true;
      if (first || !this.watched.has(c.peer)) todo.add(c.peer);
    }
    if (!todo.size) return;
    for (const u of todo) this.watched.add(u);
    this.client.watchPresence([...todo]).then((ps) => {
      for (const p of ps) this.onPresence(p);
    }, () => {
      for (const u of todo) this.watched.delete(u);
    });
  }

  // -- model updates ----------------------------------------------------------------------
  private upsert(conv: string, members?: string[], t?: string): ConvState {
    let c = this.convs.get(conv);
    if (!c) {
      c = newConv(conv);
      this.convs.set(conv, c);
    }
    if (members && members.length) c.members = members;
    if (t !== undefined && t !== null) c.title = t;
    if (DM_RE.test(conv) && !c.peer && c.members.length) {
      c.peer = c.members.find((u) => u !== this.me) ?? c.members[0]!;
    }
    return c;
  }

  private onMessage(m: Message): void {
    const c = this.upsert(m.conv);
    if (DM_RE.test(m.conv) && !c.peer && m.from !== this.me) {
      c.peer = m.from;
    }
    if (!c.members.length) this.refreshListSoon();
    const wasOpen = this.open === c;
    const atBottom = wasOpen && this.atBottom();
    const e = addMessage(c, m, this.me);
    if (c.peer) this.watch([c]);
    this.clearTyping(m.conv, m.from);
    if (wasOpen) {
      this.placeMessage(c, c.bySeq.get(m.seq)!, atBottom);
      this.markRead();
    }
    this.updateItem(c, true);
    if (e && m.from !== this.me) this.record({ conv: m.conv, seq: m.seq, id: m.id, sentAt: null, visibleAt: now(), ts: m.ts });
  }

  private record(t: Timing): void {
    if (this.timings.length >= MAX_TIMINGS) this.timings.shift();
    this.timings.push(t);
  }

  private onReceipt(r: Receipt): void {
    const c = this.upsert(r.conv);
    if (r.user === this.me) {
      // read on another tab or device of ours
      if (r.read > (c.toldRead ?? 0)) c.toldRead = r.read;
      if (r.read > c.readSeq) {
        c.readSeq = r.read;
        this.updateItem(c);
      }
      return;
    }
    applyReceipt(c, r);
    if (c === this.open) this.updateTicks(c);
  }

  private onConv(cv: Conv): void {
    const known = this.convs.has(cv.conv);
    const c = this.upsert(cv.conv, cv.members, cv.title);
    if (!known && !c.activity) c.activity = Date.now();
    this.watch([c]);
    this.updateItem(c, !known);
    if (c === this.open) this.renderHeader();
  }

  private onPresence(p: Presence): void {
    this.presence.set(p.user, p);
    for (const c of this.convs.values()) if (c.peer === p.user) this.updateItem(c);
    if (this.open && this.open.peer === p.user) this.renderHeader();
  }

  private onTyping(t: Typing): void {
    if (t.user === this.me) return;
    let m = this.typingUntil.get(t.conv);
    if (!m) this.typingUntil.set(t.conv, (m = new Map()));
    m.set(t.user, Date.now() + TYPING_SHOW_MS);
    if (this.open && this.open.conv === t.conv) this.renderTyping();
  }

  private clearTyping(conv: string, user: string): void {
    const m = this.typingUntil.get(conv);
    if (m && m.delete(user) && this.open && this.open.conv === conv) this.renderTyping();
  }

  // -- conversation list ------------------------------------------------------------------
  private online(c: ConvState): boolean | null {
    if (!c.peer) return null;
    return this.presence.get(c.peer)?.online ?? false;
  }

  private updateItem(c: ConvState, toTop = false): void {
    let li = c.li;
    if (!li) {
      li = c.li = listItem(c);
      this.list.prepend(li);
      toTop = false;
      this.sortList();
    }
    updateListItem(li, c, this.me, this.online(c), c === this.open);
    this.renderTitle();
    if (toTop && this.list.firstElementChild !== li) {
      const first = this.convs.get((this.list.firstElementChild as HTMLElement | null)?.dataset.conv ?? "");
      if (!first || c.activity >= first.activity) this.list.prepend(li);
      else this.sortList();
    }
    this.renderEmptyList();
  }

  private sortList(): void {
    const all = [...this.convs.values()].filter((c) => c.li).sort((a, b) => b.activity - a.activity);
    const kids = this.list.children;
    if (all.every((c, i) => kids[i] === c.li)) return;
    this.list.replaceChildren(...all.map((c) => c.li!));
  }

  private renderList(): void {
    for (const c of this.convs.values()) {
      if (!c.li) {
        c.li = listItem(c);
        this.list.append(c.li);
      }
      updateListItem(c.li, c, this.me, this.online(c), c === this.open);
    }
    this.sortList();
    this.renderEmptyList();
    this.renderTitle();
  }

  /** "(3) Switchboard": unread messages over all conversations, for a tab in the background. */
  private renderTitle(): void {
    let n = 0;
    for (const c of this.convs.values()) n += unread(c);
    const t = (n ? `(${n}) ` : "") + "Switchboard";
    if (document.title !== t) document.title = t;
  }

  private renderEmptyList(): void {
    show($("list-empty"), this.convs.size === 0);
  }

  // -- open conversation ------------------------------------------------------------------
  openConv(c: ConvState, push = true): void {
    const prev = this.open;
    if (prev) {
      prev.draft = this.composer.value;
      prev.newFrom = 0;
    }
    this.open = c;
    // where "New messages" goes: after what was read before this visit
    if (prev !== c) c.newFrom = c.lastSeq > c.readSeq ? c.readSeq + 1 : 0;
    document.body.dataset.screen = "conv";
    show($("conv-empty"), false);
    show($("conv-pane"), true);
    if (prev && prev !== c && prev.li) updateListItem(prev.li, prev, this.me, this.online(prev), false);
    this.updateItem(c);
    if (push) {
      const url = location.pathname + location.search + "#" + encodeURIComponent(c.conv);
      if (history.state && history.state.sbConv) history.replaceState({ sbConv: c.conv }, "", url);
      else history.pushState({ sbConv: c.conv }, "", url);
    }
    this.composer.value = c.draft ?? "";
    this.composerInput(false);
    setText($("composer-error"), "");
    this.renderHeader();
    this.renderMessages(true);
    this.scrollToNew();
    this.loadReceipts(c);
    this.watch([c]);
    if (!c.loaded) this.loadPage(c, true);
    else this.markRead();
    if (matchMedia("(min-width: 721px)").matches) this.composer.focus();
  }

  showList(): void {
    const prev = this.open;
    if (prev) {
      prev.draft = this.composer.value;
      prev.newFrom = 0;
    }
    this.open = null;
    if (location.hash && !(history.state && history.state.sbConv)) history.replaceState(null, "", location.pathname + location.search);
    document.body.dataset.screen = "list";
    show($("conv-pane"), false);
    show($("conv-empty"), true);
    if (prev?.li) updateListItem(prev.li, prev, this.me, this.online(prev), false);
  }

  private renderHeader(): void {
    const c = this.open;
    if (!c) return;
    setText($("conv-header"), title(c, this.me));
    setText($("conv-avatar"), initial(title(c, this.me)));
    const ls = $("last-seen");
    if (c.peer) {
      const p = this.presence.get(c.peer);
      setText(ls, p ? lastSeen(p.online, p.last_seen) : "");
      ls.dataset.online = p?.online ? "true" : "false";
      show(ls, !!p);
    } else {
      setText(ls, c.members.length ? c.members.length + " members" : "");
      delete ls.dataset.online;
      show(ls, c.members.length > 0);
    }
    this.renderTyping();
  }

  private renderTyping(): void {
    const el = $("typing");
    const c = this.open;
    const m = c && this.typingUntil.get(c.conv);
    const t = Date.now();
    const users: string[] = [];
    let next = Infinity;
    if (m) for (const [u, until] of m) {
      if (until > t) {
        users.push(u);
        next = Math.min(next, until);
      } else m.delete(u);
    }
    let text = "";
    if (users.length === 1) text = users[0] + " is typing…";
    else if (users.length === 2) text = users[0] + " and " + users[1] + " are typing…";
    else if (users.length > 2) text = users.length + " people are typing…";
    setText(el, text);
    show(el, !!text);
    $("conv-sub").classList.toggle("is-typing", !!text);
    clearTimeout(this.typingTimer);
    if (next !== Infinity) this.typingTimer = window.setTimeout(() => this.renderTyping(), next - t + 20);
  }

  private atBottom(): boolean {
    const m = this.msgs;
    return m.scrollHeight - m.scrollTop - m.clientHeight < EDGE_PX;
  }

  private toBottom(): void {
    this.msgs.scrollTop = this.msgs.scrollHeight;
  }

  /** Rebuilds the message pane from the conversation's entries (elements are reused). */
  private renderMessages(scrollEnd: boolean): void {
    const c = this.open;
    if (!c) return;
    const group = !c.peer;
    const w = floor(c, this.me);
    const nodes: HTMLElement[] = [];
    let day = "";
    let divider = !!c.newFrom;
    for (const e of ordered(c)) {
      const d = dayKey(e.ts);
      if (d !== day) {
        nodes.push(daySeparator(e.ts));
        day = d;
      }
      if (divider && e.seq >= c.newFrom! && e.from !== this.me) {
        nodes.push(h("div", { "data-testid": "new-divider", class: "new-divider", role: "separator" }, "New messages"));
        divider = false;
      }
      if (!e.el) e.el = messageEl(e, this.me, group);
      updateMessage(e, e.from === this.me && e.kind !== "system" ? tick(e, w) : null);
      nodes.push(e.el);
    }
    this.msgs.replaceChildren(...nodes);
    this.renderOlder();
    show($("messages-empty"), c.loaded && nodes.length === 0);
    if (scrollEnd) this.toBottom();
  }

  /** Opening a conversation shows the end, or the first unread message if it is above that. */
  private scrollToNew(): void {
    const d = this.msgs.querySelector('[data-testid="new-divider"]') as HTMLElement | null;
    if (d && d.offsetTop - this.msgs.offsetTop < this.msgs.scrollTop) this.msgs.scrollTop = d.offsetTop - this.msgs.offsetTop - 8;
  }

  private renderOlder(): void {
    const c = this.open;
    if (!c) return;
    const more = c.more && oldestSeq(c) !== 1 && (c.loaded || c.bySeq.size > 0);
    show(this.older, more);
    this.older.disabled = c.loading;
    setText(this.older, c.loading ? "Loading…" : "Load older messages");
  }

  /** Puts one new or changed entry in place: appended when it is the newest
   * (the usual case), else the pane is rebuilt. */
  private placeMessage(c: ConvState, e: Entry, follow: boolean): void {
    const last = this.msgs.lastElementChild as HTMLElement | null;
    const w = floor(c, this.me);
    const st = e.from === this.me && e.kind !== "system" ? tick(e, w) : null;
    if (e.el && e.el.parentNode === this.msgs) {
      updateMessage(e, st);
      // a send that got its seq sorts before messages that arrived meanwhile
      const next = e.el.nextElementSibling as HTMLElement | null;
      if (next && next.dataset.seq && Number(next.dataset.seq) < e.seq) this.renderMessages(follow);
      return;
    }
    // new: appended when it sorts last (pending sends stay last), else a rebuild
    const lastSeq = last && last.dataset.testid === "message" ? last.dataset.seq! : null;
    if (e.seq && lastSeq != null && (lastSeq === "" || Number(lastSeq) > e.seq)) {
      this.renderMessages(follow);
      return;
    }
    const prev = last && last.dataset.testid === "message" ? last : null;
    const prevTs = prev ? Date.parse(prev.querySelector("time")!.getAttribute("datetime")!) : NaN;
    if (!prev || dayKey(prevTs) !== dayKey(e.ts)) this.msgs.append(daySeparator(e.ts));
    e.el = messageEl(e, this.me, !c.peer);
    updateMessage(e, st);
    this.msgs.append(e.el);
    show($("messages-empty"), false);
    if (follow) this.toBottom();
  }

  private updateTicks(c: ConvState): void {
    const w = floor(c, this.me);
    for (const e of c.bySeq.values()) {
      if (!e.el || e.from !== this.me || e.kind === "system") continue;
      const t = tick(e, w);
      if (t !== e.el.dataset.tick) updateMessage(e, t);
    }
  }

  private loadReceipts(c: ConvState): void {
    if (!c.lastSeq) return; // nothing to tick yet (a 1:1 made here does not exist on the server)
    this.client.receipts(c.conv).then((rs) => {
      for (const r of rs) {
        if (r.user === this.me) {
          if (r.read > c.readSeq) {
            c.readSeq = r.read;
            this.updateItem(c);
          }
        } else applyReceipt(c, r);
      }
      if (c === this.open) this.updateTicks(c);
    }, () => {});
  }

  /** The newest page (first open), or the page before the oldest shown. */
  private loadPage(c: ConvState, newest: boolean): void {
    if (c.loading) return;
    const before = newest ? null : oldestSeq(c) || null;
    if (!newest && (!c.more || before === 1)) return;
    c.loading = true;
    if (c === this.open) this.renderOlder();
    const m = this.msgs;
    const fromBottom = m.scrollHeight - m.scrollTop;
    this.client.history(c.conv, { before, limit: PAGE }).then((page) => {
      for (const msg of page.messages) addMessage(c, msg, this.me, false);
      if (newest || !page.more || page.messages.length === 0) c.more = page.more;
      else c.more = true;
      c.loaded = true;
    }, (e) => {
      // a 1:1 created here has no messages on the server yet
      if (e && (e.code === "not_found" || e.code === "not_member")) {
        c.loaded = true;
        c.more = false;
      } else console.warn("history unavailable:", human(e));
    }).finally(() => {
      c.loading = false;
      if (c !== this.open) return;
      this.renderMessages(false);
      if (newest) {
        this.toBottom();
        this.scrollToNew();
      }
      else m.scrollTop = m.scrollHeight - fromBottom; // keep what was on screen in place
      this.updateItem(c);
      this.markRead();
    });
  }

  /** Sends `read` for the newest message shown (debounced), when the page is visible. */
  private markRead(): void {
    const c = this.open;
    if (!c || document.visibilityState !== "visible") return;
    const seq = newestSeq(c);
    if (seq > c.readSeq) {
      c.readSeq = seq; // the badge clears at once
      this.updateItem(c);
    }
    if (seq <= (c.toldRead ?? 0)) return;
    this.unsentReads.set(c.conv, c);
    if (this.readTimer) return;
    // the first read goes out at once, those of a busy conversation at most every READ_THROTTLE_MS
    const wait = this.lastReadAt + READ_THROTTLE_MS - Date.now();
    if (wait <= 0) this.flushReads();
    else this.readTimer = window.setTimeout(() => this.flushReads(), wait);
  }

  private flushReads(): void {
    clearTimeout(this.readTimer);
    this.readTimer = 0;
    if (this.client.state !== "synced") return; // told again after the next sync (refreshList)
    for (const cv of this.unsentReads.values()) {
      const n = newestSeq(cv);
      if (n > (cv.toldRead ?? 0)) {
        this.client.read(cv.conv, n);
        cv.toldRead = n;
        this.lastReadAt = Date.now();
      }
    }
    this.unsentReads.clear();
  }

  // -- composer ---------------------------------------------------------------------------
  private composerInput(typed = true): void {
    const t = this.composer;
    const empty = t.value.trim() === "";
    this.sendBtn.disabled = empty;
    t.style.height = "auto";
    t.style.height = Math.min(t.scrollHeight, 160) + "px";
    const c = this.open;
    if (typed && !empty && c && (c.lastSeq > 0 || !c.peer) && Date.now() - this.lastTypingSent >= TYPING_EVERY_MS) {
      this.lastTypingSent = Date.now();
      try {
        this.client.typing(c.conv);
      } catch {
        /* not connected: nobody to tell */
      }
    }
  }

  private send(): void {
    const c = this.open;
    const body = this.composer.value.trim();
    if (!c || !body) return;
    if (new TextEncoder().encode(body).length > MAX_BODY_BYTES) {
      setText($("composer-error"), "This message is too long (at most 16 KiB).");
      return;
    }
    setText($("composer-error"), "");
    this.composer.value = "";
    c.draft = "";
    this.composerInput(false);
    const id = newId();
    const e: Entry = { id, conv: c.conv, seq: 0, from: this.me, body, ts: Date.now(), kind: "user" };
    const t: Timing = { conv: c.conv, seq: null, id, sentAt: now(), visibleAt: null, ts: null };
    this.record(t);
    c.pending.set(id, e);
    c.last = e;
    c.activity = e.ts;
    this.deliver(c, e, t); // the frame leaves first, then the page updates
    this.placeMessage(c, e, true);
    t.visibleAt = now();
    this.toBottom();
    this.updateItem(c, true);
  }

  private deliver(c: ConvState, e: Entry, t: Timing | null): void {
    const opts = c.peer ? { to: c.peer, body: e.body, id: e.id } : { conv: c.conv, body: e.body, id: e.id };
    this.client.send(opts).then((s) => {
      if (t) {
        t.seq = s.seq;
        t.ts = s.ts;
      }
      if (c.pending.get(e.id) === e) {
        // the send's answer came before our own msg echo
        addMessage(c, { conv: c.conv, seq: s.seq, id: e.id, from: this.me, body: e.body, ts: s.ts, kind: "user" }, this.me);
      }
      if (this.open === c) this.placeMessage(c, e, this.atBottom());
      this.updateItem(c);
      this.watch([c]);
    }, (err) => {
      e.failed = human(err);
      if (this.open === c && e.el) updateMessage(e, "failed");
    });
  }

  private retry(id: string): void {
    const c = this.open;
    const e = c?.pending.get(id);
    if (!c || !e || !e.failed) return;
    delete e.failed;
    updateMessage(e, "sending");
    this.deliver(c, e, null);
  }

  // -- new conversations ------------------------------------------------------------------
  private newError(text: string): void {
    const el = $("new-chat-error");
    setText(el, text);
    show(el, !!text);
  }

  private startDm(user: string): void {
    if (!ID_RE.test(user)) {
      this.newError("A user id is 1 to 64 letters, digits, _ or -.");
      return;
    }
    this.newError("");
    const id = this.client.dmConv(user);
    const known = this.convs.has(id);
    const c = this.upsert(id, [...new Set([this.me, user])], undefined);
    c.peer = user;
    if (!known) c.activity = Date.now();
    this.updateItem(c, !known);
    this.watch([c]);
    this.openConv(c);
  }

  private async startGroup(membersText: string, name: string): Promise<void> {
    const members = [...new Set(membersText.split(/[\s,;]+/).filter(Boolean))];
    const bad = members.find((u) => !ID_RE.test(u));
    if (!members.length) return this.newError("Name at least one member (user ids, comma separated).");
    if (bad) return this.newError(`"${bad}" is not a user id (1 to 64 letters, digits, _ or -).`);
    this.newError("");
    const btn = $<HTMLButtonElement>("new-group-submit");
    btn.disabled = true;
    try {
      const cv = await this.client.createConversation(members, name);
      const known = this.convs.has(cv.conv);
      const c = this.upsert(cv.conv, cv.members, cv.title);
      if (!known) c.activity = Date.now();
      this.updateItem(c, true);
      $<HTMLInputElement>("new-group-members").value = "";
      $<HTMLInputElement>("new-group-title").value = "";
      this.openConv(c);
    } catch (e) {
      this.newError("Could not create the group: " + human(e));
    } finally {
      btn.disabled = false;
    }
  }

  // -- wiring -----------------------------------------------------------------------------
  private wire(): void {
    this.list.addEventListener("click", (ev) => {
      const li = (ev.target as HTMLElement).closest("[data-conv]") as HTMLElement | null;
      const c = li && this.convs.get(li.dataset.conv!);
      if (c) this.openConv(c);
    });
    this.list.addEventListener("keydown", (ev) => {
      if (ev.key !== "Enter" && ev.key !== " ") return;
      const li = (ev.target as HTMLElement).closest("[data-conv]") as HTMLElement | null;
      const c = li && this.convs.get(li.dataset.conv!);
      if (c) {
        ev.preventDefault();
        this.openConv(c);
      }
    });
    $("back").addEventListener("click", () => {
      if (history.state && history.state.sbConv) history.back();
      else this.showList();
    });
    document.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape" && this.open && !ev.isComposing) $("back").click();
    });
    window.addEventListener("popstate", () => {
      const id = decodeURIComponent(location.hash.slice(1));
      const c = id ? this.convs.get(id) : undefined;
      if (c) this.openConv(c, false);
      else this.showList();
    });
    $("new-dm").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const input = $<HTMLInputElement>("new-dm-user");
      const user = input.value.trim();
      if (!user) return;
      input.value = "";
      this.startDm(user);
    });
    $("new-group").addEventListener("submit", (ev) => {
      ev.preventDefault();
      void this.startGroup($<HTMLInputElement>("new-group-members").value, $<HTMLInputElement>("new-group-title").value.trim());
    });
    this.composer.addEventListener("input", () => this.composerInput());
    this.composer.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing && ev.keyCode !== 229) {
        ev.preventDefault();
        this.send();
      }
    });
    $("composer-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.send();
    });
    this.older.addEventListener("click", () => this.open && this.loadPage(this.open, false));
    this.msgs.addEventListener("scroll", () => {
      const c = this.open;
      if (c && c.loaded && c.more && !c.loading && this.msgs.scrollTop < EDGE_PX) this.loadPage(c, false);
    }, { passive: true });
    this.msgs.addEventListener("click", (ev) => {
      const b = (ev.target as HTMLElement).closest(".retry");
      const m = b && (b.closest("[data-id]") as HTMLElement | null);
      if (m) this.retry(m.dataset.id!);
    });
    window.addEventListener("pagehide", () => this.flushReads()); // a tab closed right after a message arrived
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && this.open) this.markRead();
      else if (document.visibilityState === "hidden") this.flushReads();
    });
  }
}
