/** Times and days as a person reads them, in the browser's time zone. */

const pad = (n: number): string => (n < 10 ? "0" : "") + n;

/** HH:MM (24 h, always two digits each). */
export function hhmm(ts: number): string {
  const d = new Date(ts);
  return pad(d.getHours()) + ":" + pad(d.getMinutes());
}

/** A key that is equal for two times of the same local day. */
export function dayKey(ts: number): string {
  const d = new Date(ts);
  return d.getFullYear() + "-" + d.getMonth() + "-" + d.getDate();
}

/** "Today", "Yesterday", or the date (e.g. "Tue, 3 Nov 2026"). */
export function dayLabel(ts: number, now = Date.now()): string {
  if (dayKey(ts) === dayKey(now)) return "Today";
  if (dayKey(ts) === dayKey(now - 86400000)) return "Yesterday";
  return new Date(ts).toLocaleDateString(undefined, { weekday: "short", day: "numeric", month: "short", year: "numeric" });
}

/** For the 1:1 header: "last seen HH:MM" today, with the date on other days. */
export function lastSeen(online: boolean, ts: number | null, now = Date.now()): string {
  if (online) return "online";
  if (ts == null) return "offline";
  if (dayKey(ts) === dayKey(now)) return "last seen " + hhmm(ts);
  return "last seen " + new Date(ts).toLocaleDateString(undefined, { day: "numeric", month: "short" }) + " " + hhmm(ts);
}

/** For the conversation list: time today, else a short date. */
export function listTime(ts: number, now = Date.now()): string {
  if (dayKey(ts) === dayKey(now)) return hhmm(ts);
  return new Date(ts).toLocaleDateString(undefined, { day: "numeric", month: "short" });
}
