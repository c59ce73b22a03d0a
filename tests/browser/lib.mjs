// Helpers shared by the specs. Everything on the page is selected by the
// app's data-testid contract (docs/testing.md, "Browser tests"); nothing here
// depends on the app's markup or CSS classes.
import { execFileSync } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import { expect } from "@playwright/test";

export const BASE = process.env.SB_BASE_URL;
const DATA = process.env.SB_DATA;
const PYTHON = process.env.SB_PYTHON || "python3";
const REPO = process.env.SB_REPO;
export const UP_PID = Number(process.env.SB_UP_PID || 0);

/** A user id no other spec (or earlier run on the same data dir) uses. */
export function uid(prefix) {
  return `${prefix}${Math.random().toString(36).slice(2, 10)}`;
}

/** A token for `user`: the dev sign-in endpoint, else `switchboard token` on the fabric's data dir. */
export async function tokenFor(user) {
  const r = await fetch(`${BASE}/dev/token`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user }),
  });
  if (r.ok) return (await r.json()).token;
  return execFileSync(PYTHON, ["-m", "sbctl", "token", user, "--data", DATA], { cwd: REPO }).toString().trim();
}

/** Whether the fabric runs with the development sign-in (`switchboard up` on loopback). */
export async function devSignin() {
  const r = await fetch(`${BASE}/dev/config`);
  return r.ok && (await r.json()).dev_signin === true;
}

/** Opens the app as `user` in `context` (a new tab) with `/?token=`, and waits until it is online. */
export async function openAs(context, user, token) {
  const page = await context.newPage();
  await page.goto(`/?token=${encodeURIComponent(token ?? (await tokenFor(user)))}`);
  await expectOnline(page, user);
  return page;
}

/** A new browser context (own storage, like another device) with one tab signed in as `user`. */
export async function newUser(browser, user, options = {}) {
  const context = await browser.newContext(options);
  const token = await tokenFor(user);
  const page = await openAs(context, user, token);
  return { context, page, user, token };
}

export async function expectOnline(page, user) {
  if (user) await expect(page.getByTestId("me")).toHaveText(user);
  await expect(page.getByTestId("conn-state")).toHaveAttribute("data-state", "online");
}

/** Starts (or opens) the 1:1 conversation with `other` from the "new chat" form. */
export async function startDm(page, other) {
  await page.getByTestId("new-dm-user").fill(other);
  await page.getByTestId("new-dm-submit").click();
  await expect(page.getByTestId("conv-header")).toContainText(other);
  await expect(page.getByTestId("composer")).toBeVisible();
}

/** The conv id of the 1:1 conversation of the signed-in user and `other` (the SDK's dmConv). */
export async function dmConv(page, other) {
  return page.evaluate((o) => window.__sbApp.client.dmConv(o), other);
}

export function convItem(page, conv) {
  return page.locator(`[data-testid="conv-item"][data-conv="${conv}"]`);
}

export async function openConv(page, conv) {
  await convItem(page, conv).click();
  await expect(page.getByTestId("messages")).toBeVisible();
  await expect(page.getByTestId("composer")).toBeVisible();
}

/** Types `text` in the composer and presses Enter. */
export async function send(page, text) {
  const composer = page.getByTestId("composer");
  await composer.fill(text);
  await composer.press("Enter");
}

/** The messages shown in the open conversation, in DOM order. */
export function messages(page) {
  return page.getByTestId("messages").getByTestId("message");
}

/** The message with this body in the open conversation (exactly one). */
export function messageWith(page, body) {
  return messages(page).filter({ has: page.getByTestId("message-body").getByText(body, { exact: true }) });
}

/** [{seq, conv, own, kind, body}] of the open conversation, in DOM order. */
export async function shown(page) {
  return messages(page).evaluateAll((els) =>
    els.map((el) => ({
      seq: Number(el.getAttribute("data-seq")),
      conv: el.getAttribute("data-conv"),
      own: el.getAttribute("data-own"),
      kind: el.getAttribute("data-kind"),
      body: el.querySelector('[data-testid="message-body"]')?.textContent ?? null,
    })),
  );
}

/** Asserts the shown messages are strictly increasing in seq (ordered, no duplicates) and returns them. */
export async function expectOrdered(page) {
  const list = await shown(page);
  for (let i = 1; i < list.length; i++) {
    expect(list[i].seq, `message ${i} (${list[i].body}) after seq ${list[i - 1].seq}`).toBeGreaterThan(list[i - 1].seq);
  }
  return list;
}

/** The unread count of a conversation item as a number (hidden or empty = 0). */
export async function unread(page, conv) {
  const badge = convItem(page, conv).getByTestId("conv-unread");
  if ((await badge.count()) === 0 || !(await badge.isVisible())) return 0;
  const text = (await badge.textContent()).trim();
  return text === "" ? 0 : Number(text);
}

export async function expectUnread(page, conv, n) {
  await expect.poll(() => unread(page, conv), { message: `unread of ${conv}` }).toBe(n);
}

/** The pids of the children of `pid`, with their argv (from /proc). */
export function children(pid) {
  const out = [];
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    let list = "";
    try {
      list = readFileSync(`/proc/${pid}/task/${task}/children`, "utf8");
    } catch {
      continue;
    }
    for (const c of list.split(/\s+/).filter(Boolean)) {
      try {
        out.push({ pid: Number(c), argv: readFileSync(`/proc/${c}/cmdline`, "utf8").split("\0").filter(Boolean) });
      } catch {
        // exited meanwhile
      }
    }
  }
  return out;
}

/** The pid of the edge child of `switchboard up` (`python -m sbctl edge ...`), or null. */
export function edgePid(upPid = UP_PID) {
  const edge = children(upPid).find((c) => c.argv[1] === "-m" && c.argv[2] === "sbctl" && c.argv[3] === "edge");
  return edge ? edge.pid : null;
}
