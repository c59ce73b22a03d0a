/** Full-jitter exponential backoff: the wait before attempt `n` (0-based) is
 * random(0, min(maxMs, baseMs * 2^n)). Spreads a reconnect storm when an edge dies. */
export function backoffDelay(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const cap = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * cap);
}

/** The claims of a JWT (`sub`, `exp`, ...), read without verifying (the
 * server verifies); {} when the token is not a readable JWT. */
export function tokenClaims(token: string): { sub?: unknown; exp?: unknown } {
  try {
    const part = token.split(".")[1];
    if (!part) return {};
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const json = decodeURIComponent(
      Array.from(atob(b64 + "===".slice((b64.length + 3) % 4)), (ch) => "%" + ch.charCodeAt(0).toString(16).padStart(2, "0")).join(""),
    );
    const claims = JSON.parse(json);
    return claims && typeof claims === "object" ? claims : {};
  } catch {
    return {};
  }
}

/** The `sub` claim of a JWT; null when there is none. */
export function tokenSubject(token: string): string | null {
  const sub = tokenClaims(token).sub;
  return typeof sub === "string" ? sub : null;
}
