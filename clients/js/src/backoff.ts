/** Full-jitter exponential backoff: the wait before attempt `n` (0-based) is
 * random(0, min(maxMs, baseMs * 2^n)). Spreads a reconnect storm when an edge dies. */
export function backoffDelay(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const cap = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * cap);
}

/** The `sub` claim of a JWT, read without verifying (the server verifies);
 * null when the token is not a readable JWT. */
export function tokenSubject(token: string): string | null {
  try {
    const part = token.split(".")[1];
    if (!part) return null;
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const json = decodeURIComponent(
      Array.from(atob(b64 + "===".slice((b64.length + 3) % 4)), (ch) => "%" + ch.charCodeAt(0).toString(16).padStart(2, "0")).join(""),
    );
    const sub = JSON.parse(json).sub;
    return typeof sub === "string" ? sub : null;
  } catch {
    return null;
  }
}
