/** Elements of the conversation list and of the message pane (the DOM
 * contract of the browser tests: data-testid names and data-* attributes). */

import { h, setText } from "./dom.ts";
import { dayLabel, hhmm, listTime } from "./format.ts";
import type { ConvState, Entry, TickState } from "./model.ts";
import { unread } from "./model.ts";

const TICK_TEXT: Record<TickState, string> = { sending: "🕓", sent: "✓", delivered: "✓✓", read: "✓✓", failed: "!" };
const TICK_LABEL: Record<TickState, string> = {
  sending: "sending", sent: "sent", delivered: "delivered", read: "read", failed: "not sent",
};

export function title(c: ConvState, me: string): string {
  if (c.title) return c.title;
  if (c.peer) return c.peer;
  const o = c.members.filter((u) => u !== me);
  if (o.length) return o.join(", ");
  return c.members.length ? me : "Conversation";
}

export function initial(text: string): string {
  return (text.trim()[0] || "?").toUpperCase();
}

/** A list entry; update() fills it in. */
export function listItem(c: ConvState): HTMLElement {
  const li = h("li", { "data-testid": "conv-item", "data-conv": c.conv, class: "item", tabindex: "0", role: "button" });
  const avatar = h("span", { class: "avatar", "aria-hidden": "true" });
  const main = h("span", { class: "item-main" });
  const top = h("span", { class: "item-top" });
  top.append(h("span", { "data-testid": "conv-title", class: "item-title" }), h("span", { class: "item-time" }));
  const bottom = h("span", { class: "item-bottom" });
  const preview = h("span", { class: "item-preview" });
  preview.append(h("span", { class: "item-who" }), h("span", { "data-testid": "conv-last", class: "item-last" }));
  bottom.append(preview, h("span", { "data-testid": "conv-unread", class: "badge", hidden: true }, "0"));
  main.append(top, bottom);
  li.append(avatar, main);
  return li;
}

export function updateListItem(li: HTMLElement, c: ConvState, me: string, online: boolean | null, selected: boolean): void {
  const name = title(c, me);
  setText(li.querySelector(".avatar")!, initial(name));
  setText(li.querySelector('[data-testid="conv-title"]')!, name);
  const last = c.last;
  setText(li.querySelector(".item-time")!, last ? listTime(last.ts) : "");
  let who = "";
  if (last && last.kind !== "system") {
    if (last.from === me) who = "You: ";
    else if (!c.peer) who = last.from + ": ";
  }
  setText(li.querySelector(".item-who")!, who);
  const lastEl = li.querySelector('[data-testid="conv-last"]') as HTMLElement;
  setText(lastEl, last ? last.body : c.peer ? "New chat" : "No messages yet");
  lastEl.classList.toggle("muted", !last || last.kind === "system");
  const n = unread(c);
  const badge = li.querySelector('[data-testid="conv-unread"]') as HTMLElement;
  setText(badge, String(n));
  badge.hidden = n === 0;
  li.classList.toggle("unread", n > 0);
  li.classList.toggle("selected", selected);
  if (selected) li.setAttribute("aria-current", "true");
  else li.removeAttribute("aria-current");
  let dot = li.querySelector('[data-testid="presence-dot"]') as HTMLElement | null;
  if (online === null) dot?.remove();
  else {
    if (!dot) {
      dot = h("span", { "data-testid": "presence-dot", class: "dot" });
      li.querySelector(".avatar")!.after(dot);
    }
    const v = online ? "true" : "false";
    if (dot.dataset.online !== v) {
      dot.dataset.online = v;
      dot.title = online ? "online" : "offline";
    }
  }
}

export function daySeparator(ts: number): HTMLElement {
  const d = h("div", { "data-testid": "day-separator", class: "day", role: "separator" });
  d.append(h("span", null, dayLabel(ts)));
  return d;
}

/** A message element (built once per entry, then patched by updateMessage). */
export function messageEl(e: Entry, me: string, group: boolean): HTMLElement {
  const own = e.from === me;
  const system = e.kind === "system";
  const el = h("div", {
    "data-testid": "message", "data-conv": e.conv, "data-seq": e.seq ? String(e.seq) : "", "data-id": e.id,
    "data-own": own ? "true" : "false", "data-kind": system ? "system" : "user",
    class: system ? "msg system" : own ? "msg own" : "msg",
  });
  const bubble = h("div", { class: "bubble" });
  if (group && !own && !system) bubble.append(h("div", { "data-testid": "message-sender", class: "sender" }, e.from));
  bubble.append(h("div", { "data-testid": "message-body", class: "body" }, e.body));
  const meta = h("div", { class: "meta" });
  meta.append(h("time", { "data-testid": "message-time", datetime: new Date(e.ts).toISOString() }, hhmm(e.ts)));
  if (own && !system) meta.append(h("span", { "data-testid": "tick", class: "tick" }));
  bubble.append(meta);
  el.append(bubble);
  return el;
}

export function updateMessage(e: Entry, state: TickState | null): void {
  const el = e.el!;
  const seq = e.seq ? String(e.seq) : "";
  if (el.dataset.seq !== seq) {
    el.dataset.seq = seq;
    const t = el.querySelector("time")!;
    setText(t, hhmm(e.ts));
    t.setAttribute("datetime", new Date(e.ts).toISOString());
  }
  if (!state) return;
  el.dataset.tick = state;
  const tk = el.querySelector('[data-testid="tick"]') as HTMLElement | null;
  if (tk && tk.dataset.state !== state) {
    tk.dataset.state = state;
    tk.textContent = TICK_TEXT[state];
    tk.title = TICK_LABEL[state];
    tk.setAttribute("aria-label", TICK_LABEL[state]);
  }
  let err = el.querySelector(".failed") as HTMLElement | null;
  if (e.failed) {
    if (!err) {
      err = h("div", { class: "failed", role: "alert" });
      err.append(h("span", { class: "failed-text" }), h("button", { type: "button", class: "retry", "data-testid": "retry" }, "Retry"));
      el.querySelector(".bubble")!.append(err);
    }
    setText(err.querySelector(".failed-text")!, "Not sent: " + e.failed + " ");
  } else err?.remove();
}
