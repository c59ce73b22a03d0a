// Switchboard service worker: shows a notification for each Web Push message
// (payload {title, body, conv, seq, id, badge?} from the pusher) and opens the
// conversation when it is clicked. No caching: the app is always fetched fresh.
self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch {
    data = { body: event.data ? event.data.text() : "" };
  }
  const title = typeof data.title === "string" && data.title ? data.title : "New message";
  const options = {
    body: typeof data.body === "string" ? data.body : "",
    tag: typeof data.conv === "string" ? data.conv : undefined,
    renotify: typeof data.conv === "string",
    data: { conv: typeof data.conv === "string" ? data.conv : "" },
  };
  event.waitUntil(self.registration.showNotification(title, options));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const conv = event.notification.data && event.notification.data.conv;
  const url = "/" + (conv ? "#" + encodeURIComponent(conv) : "");
  event.waitUntil((async () => {
    const wins = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    for (const w of wins) {
      if (new URL(w.url).origin === self.location.origin && "focus" in w) {
        if (conv && "navigate" in w) await w.navigate(url).catch(() => {});
        return w.focus();
      }
    }
    return self.clients.openWindow(url);
  })());
});
