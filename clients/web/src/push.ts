/** Web Push: offers "Enable notifications" only where the browser can (service
 * worker + PushManager + Notification) and the deployment names a VAPID key;
 * otherwise nothing is shown. sw.js shows the notifications. */

import type { Client } from "../../js/src/index.ts";
import { config } from "./config.ts";

export function offerPush(client: Client, btn: HTMLButtonElement): void {
  if (!("serviceWorker" in navigator) || !("PushManager" in window) || !("Notification" in window)) return;
  if (Notification.permission === "denied") return;
  config().then(async (cfg) => {
    const key = typeof cfg.vapid_public_key === "string" ? cfg.vapid_public_key : "";
    if (!key) return;
    const reg = await navigator.serviceWorker.register("/sw.js");
    if (Notification.permission === "granted" && (await reg.pushManager.getSubscription())) {
      await client.registerWebPush(reg, key); // the same subscription, registered again: harmless
      return;
    }
    btn.hidden = false;
    btn.onclick = async () => {
      btn.disabled = true;
      try {
        if ((await Notification.requestPermission()) === "granted") await client.registerWebPush(reg, key);
        btn.hidden = true;
      } catch {
        btn.textContent = "Notifications unavailable";
      }
    };
  }).catch(() => {});
}
