"""The pusher's config file (TOML, path in Settings.push_config).

Sections: ``[worker]`` (retry policy, device store), ``[apns]``, ``[fcm]``,
``[webpush]`` (credentials are paths to files; their content is never
logged). Unknown keys are rejected so a typo cannot silently disable a
provider. docs/push.md shows a full example.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from typing import Any

from pusher.providers import PushProvider
from pusher.providers.apns import ApnsConfig, ApnsProvider
from pusher.providers.fcm import FcmConfig, FcmProvider
from pusher.providers.log import LogProvider
from pusher.providers.webpush import WebPushConfig, WebPushProvider
from switchboard.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    # Deliveries of one entry before it goes to the dead-letter subject. With
    # the backoff below that is ~2+4+8+16 s of retrying on top of any
    # Retry-After: a notification later than that is stale anyway.
    max_deliver: int = 5
    backoff_base: float = 2.0  # seconds before the 2nd delivery; doubles each time
    backoff_max: float = 300.0  # a longer Retry-After is honoured, the backoff alone never exceeds this
    # Seconds the server waits for an ack before redelivering: several sends at
    # the providers' 10 s timeout, with margin.
    ack_wait: float = 60.0
    # Entries handled at once (fetch batch); each may send to a few devices.
    concurrency: int = 16
    device_store: str = "sqlite:///.sbdata/devices.db"  # or memory://
    durable: str = "sb-pusher"  # JetStream consumer name

    def __post_init__(self) -> None:
        if self.max_deliver < 1 or self.concurrency < 1:
            raise ConfigError("worker.max_deliver and worker.concurrency must be >= 1")
        if self.backoff_base < 0 or self.backoff_max < self.backoff_base or self.ack_wait <= 0:
            raise ConfigError("worker: need 0 <= backoff_base <= backoff_max and ack_wait > 0")


@dataclass(frozen=True, kw_only=True)
class PushConfig:
    worker: WorkerConfig = WorkerConfig()
    apns: ApnsConfig | None = None
    fcm: FcmConfig | None = None
    webpush: WebPushConfig | None = None

    @classmethod
    def load(cls, path: str | None) -> PushConfig:
        if not path:
            return cls()
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
        return cls.from_dict(data, source=path)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "push config") -> PushConfig:
        kinds = {"worker": WorkerConfig, "apns": ApnsConfig, "fcm": FcmConfig, "webpush": WebPushConfig}
        unknown = set(data) - set(kinds)
        if unknown:
            raise ConfigError(f"{source}: unknown sections {sorted(unknown)}")
        values = {}
        for name, section in data.items():
            kind = kinds[name]
            allowed = {f.name for f in fields(kind)}
            bad = set(section) - allowed
            if bad:
                raise ConfigError(f"{source}: [{name}] unknown keys {sorted(bad)}")
            try:
                values[name] = kind(**section)
            except (TypeError, ValueError) as exc:  # missing keys, bad values; the message names no secret
                raise ConfigError(f"{source}: [{name}] {exc}") from None
        return cls(**values)

    def providers(self, names: str) -> dict[str, PushProvider]:
        """Providers by platform for Settings.push_provider ("log" or e.g. "apns,fcm,webpush")."""
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        if wanted == ["log"]:
            log = LogProvider()
            return {"apns": log, "fcm": log, "webpush": log}
        out: dict[str, PushProvider] = {}
        for name in wanted:
            if name == "apns" and self.apns:
                out[name] = ApnsProvider(config=self.apns)
            elif name == "fcm" and self.fcm:
                out[name] = FcmProvider(config=self.fcm)
            elif name == "webpush" and self.webpush:
                out[name] = WebPushProvider(config=self.webpush)
            elif name in ("apns", "fcm", "webpush"):
                raise ConfigError(f"push provider {name!r} is enabled but the config has no [{name}] section")
            else:
                raise ConfigError(f"unknown push provider {name!r}; use log or a list of apns, fcm, webpush")
        return out
