/** GET /dev/config, fetched at most once: {dev_signin, vapid_public_key?}. */

export interface AppConfig {
  dev_signin?: boolean;
  /** The Web Push application server key (base64url), when the deployment has one. */
  vapid_public_key?: string;
}

let cached: Promise<AppConfig> | null = null;

export function config(): Promise<AppConfig> {
  cached ??= fetch("/dev/config", { headers: { accept: "application/json" } })
    .then((r) => (r.ok ? r.json() : {}))
    .then((c) => (c && typeof c === "object" ? (c as AppConfig) : {}), () => ({}));
  return cached;
}
