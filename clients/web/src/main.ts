/** Boot: find a token (the host application's `/?token=`, this tab's session,
 * or the development sign-in), then start the chat. index.html has already
 * painted the shell; nothing here blocks it. */

import { Chat } from "./chat.ts";
import type { Fatal } from "./chat.ts";
import { config } from "./config.ts";
import { $, setText, show } from "./dom.ts";
import { ID_RE } from "./model.ts";

const TOKEN_KEY = "switchboard.token";

type View = "app" | "signin" | "needed" | "loading" | "error" | "replaced";

function view(v: View): void {
  document.body.dataset.view = v;
}

function session(): Storage | null {
  try {
    return window.sessionStorage;
  } catch {
    return null; // storage disabled: the tab works until it is reloaded
  }
}

/** The `sub` of a JWT, shown at once (the welcome confirms it). */
function subject(token: string): string {
  try {
    const part = token.split(".")[1]!.replace(/-/g, "+").replace(/_/g, "/");
    const sub = JSON.parse(atob(part + "===".slice((part.length + 3) % 4))).sub;
    return typeof sub === "string" ? sub : "";
  } catch {
    return "";
  }
}

function boot(): void {
  const url = new URL(location.href);
  const fromUrl = url.searchParams.get("token");
  if (fromUrl !== null) {
    // a link from the host application: keep the token for this tab, out of the address bar and history
    url.searchParams.delete("token");
    history.replaceState(history.state, "", url.pathname + url.search + url.hash);
    if (fromUrl) session()?.setItem(TOKEN_KEY, fromUrl);
  }
  const token = fromUrl || session()?.getItem(TOKEN_KEY);
  $("sign-out").addEventListener("click", signOut);
  $("signin-again").addEventListener("click", signOut);
  if (token) start(token);
  else void signinOrExplain();
}

function start(token: string): void {
  view("app");
  const chat = new Chat(subject(token), token, fatal);
  (window as any).__sbApp = { client: chat.client, timings: chat.timings, chat };
}

async function signinOrExplain(): Promise<void> {
  view("loading");
  const cfg = await config();
  if (!cfg.dev_signin) {
    view("needed");
    return;
  }
  view("signin");
  const input = $<HTMLInputElement>("signin-user");
  const err = $("signin-error");
  const btn = $<HTMLButtonElement>("signin-submit");
  input.focus();
  $("signin-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const user = input.value.trim();
    const fail = (text: string) => {
      setText(err, text);
      show(err, true);
    };
    if (!ID_RE.test(user)) return fail("A user name is 1 to 64 letters, digits, _ or - (no spaces).");
    btn.disabled = true;
    try {
      const r = await fetch("/dev/token", {
        method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ user }),
      });
      const body = await r.json().catch(() => null);
      if (!r.ok || !body || typeof body.token !== "string") {
        const msg = body && typeof body.message === "string" && body.message ? body.message : `sign-in failed (HTTP ${r.status})`;
        return fail("Could not sign in: " + msg);
      }
      show(err, false);
      session()?.setItem(TOKEN_KEY, body.token);
      start(body.token);
    } catch {
      fail("Could not reach the server. Try again.");
    } finally {
      btn.disabled = false;
    }
  });
}

const FATAL_TEXT: Record<Fatal, string> = {
  unauthorized: "Your session token was refused, so you are not connected. Sign in again.",
  expired: "Your session has expired. Sign in again to continue.",
  replaced: "This chat was opened in too many other tabs or devices, so this one was disconnected.",
};

function fatal(why: Fatal): void {
  if (why === "replaced") {
    setText($("replaced-text"), FATAL_TEXT.replaced);
    $("reconnect").onclick = () => location.reload();
    view("replaced");
    return;
  }
  session()?.removeItem(TOKEN_KEY); // a reload must not try the refused token again
  const text = $("auth-error-text");
  setText(text, FATAL_TEXT[why]);
  $("auth-error").dataset.reason = why;
  view("error");
  void config().then((cfg) => {
    if (cfg.dev_signin) return;
    setText(text, FATAL_TEXT[why].replace("Sign in again", "Open the chat again from your application"));
    setText($("signin-again"), "Start over");
  });
}

function signOut(): void {
  const app = (window as any).__sbApp;
  session()?.removeItem(TOKEN_KEY);
  const done = () => location.replace(location.pathname);
  if (app?.client) app.client.close().then(done, done);
  else done();
}

boot();
