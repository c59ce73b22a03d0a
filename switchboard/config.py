"""Settings: one validated dataclass with documented defaults.

Sources, later ones winning: the defaults below, a TOML file
(``SWITCHBOARD_CONFIG`` or ``--config``; keys are the field names), environment
variables ``SWITCHBOARD_<FIELD>`` (upper case), then command-line flags.
Backends are chosen by URL scheme and unknown schemes are rejected.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from switchboard.errors import ConfigError
from switchboard.log import redact_url
from switchboard.subjects import Subjects

STORE_SCHEMES = ("sqlite", "cassandra")
PRESENCE_SCHEMES = ("memory", "redis")


@dataclass(frozen=True, kw_only=True)
class Settings:
    # -- where things are ---------------------------------------------------
    nats_url: str = "nats://127.0.0.1:4222"
    subject_prefix: str = "sb"  # several deployments can share one NATS with distinct prefixes
    stream_prefix: str = ""  # prepended to MESSAGES/INBOX/PUSH, likewise
    store_url: str = "sqlite:///switchboard.db"
    presence_url: str = "memory://"
    data_dir: str = ".sbdata"

    # -- edge ---------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8080
    edge_id: str = ""  # default: generated per process; names the heartbeat subject
    jwt_secret: str = ""  # HS256 secret; `switchboard up` generates one under data_dir
    # 64 KiB: a chat frame is small; anything larger is abuse or a bug, and the
    # limit bounds the memory one frame can pin while it is parsed.
    max_frame_bytes: int = 64 * 1024
    # 16 KiB of UTF-8 per message body: room for long messages, small enough
    # that a 50-message history page stays under 1 MiB.
    max_body_bytes: int = 16 * 1024
    # Frames a socket may have in flight for receipts and replay: the replay
    # reads at most half of it per batch, and the delivered receipts of at
    # most twice it are remembered until acked. Memory is bounded in bytes
    # by send_queue_bytes, not by this.
    send_queue_frames: int = 2048
    # Bytes a socket may hold for a client that does not read (what waits in
    # its outbox plus what its transport held when it backed up). 1 MiB is
    # ~3,000 chat frames or 60 maximal ones: a healthy client drains it in
    # milliseconds; one that lets it fill is closed (4008) and catches up from
    # its cursor. The hello replay reads INBOX in batches of at most half of it.
    send_queue_bytes: int = 1024 * 1024
    # Sockets one user may hold on one edge. Ten covers phones, tablets,
    # desktops and browser tabs; more is a leak or abuse (each costs up to
    # send_queue_bytes). A new socket beyond it closes the user's oldest one
    # (4010): the device in use is the newest, a forgotten tab the oldest.
    max_sockets_per_user: int = 10
    # Bytes all backed-up sockets of an edge may hold together. Over it the
    # socket holding the most is closed as a slow consumer (4008): 256 MiB is
    # 256 full send queues, far above what healthy traffic holds (nearly
    # nothing: clients drain in milliseconds), well below a small host's RAM.
    edge_send_queue_bytes: int = 256 * 1024 * 1024
    # Token bucket per connection: a human types far below 20 frames/s; the
    # burst lets a reconnecting client flush its unsent queue.
    rate_per_sec: float = 50.0
    rate_burst: int = 200
    # Replay on hello is read from INBOX in batches of this many entries: big
    # enough to amortise round trips, small enough not to flood the socket queue.
    replay_batch: int = 256
    # Seconds the edge waits for the first frame (hello) before closing: a
    # socket that never speaks only costs memory.
    hello_timeout: float = 10.0
    # WebSocket ping interval/timeout: detects dead peers behind NATs.
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    # Edge-side admission limit: new connections accepted per second, so a
    # reconnect storm after an edge dies cannot starve the live sockets.
    admit_per_sec: float = 2000.0
    # Development sign-in: GET /dev/config says whether it is on, POST
    # /dev/token {"user": "alice"} hands out a token for any user id (the web
    # app's sign-in form). Off by default: whoever reaches it can act as
    # anyone. `switchboard up` turns it on when it binds a loopback host
    # (unless --no-dev-signin), where only this machine reaches it.
    dev_signin: bool = False
    # Bytes of body a plain HTTP request to the edge may carry (POST
    # /dev/token is ~20 bytes); more is refused with 413 before it is read.
    http_body_bytes: int = 4096

    # -- sequencer ----------------------------------------------------------
    # Seconds an edge waits for the sequencer before answering `unavailable`
    # (retry: true). Covers a JetStream write at p99.9 with a wide margin.
    send_timeout: float = 5.0
    # Groups larger than this are not fanned out to INBOX copies; members'
    # edges read the conversation subject instead (pull mode).
    fanout_max_members: int = 500
    # Hard cap on members of one conversation.
    max_group_members: int = 5000
    # Conversations hash into this many partitions, each written by exactly
    # one sequencer at a time (a lease in a KV bucket). More partitions than
    # sequencer processes lets ownership spread evenly; every process of a
    # deployment must use the same number.
    partitions: int = 64
    # Partition lease lifetime (seconds). An owner renews every third of it;
    # a dead owner's partitions are free again after at most this long.
    lease_ttl: float = 3.0

    # Per-user bounds on what one account can make the fabric do (0: off).
    # conv.create requests per user per minute (per sequencer process): a
    # person starts a few groups a day; 30 lets a client create its groups
    # in a burst and stops a script minting thousands of member lists.
    max_groups_per_min: int = 30
    # Message copies a user's sends may cause per minute: each send costs the
    # members of its conversation (INBOX + PUSH entries). 20,000 is 200
    # messages a minute into a 100-member group, or a 5000-member group's
    # message every 15 s; over it a send gets rate_limited (retry).
    max_fanout_per_min: int = 20_000
    # Conversations a `conv.list` answer holds at most (the most recently
    # active): 500 is more than any chat list screen shows and bounds the
    # store reads of one request. The answer is also cut to half of
    # send_queue_bytes (least recent left out, `more: true`), so a list of
    # long last messages or big member lists never closes the socket as a
    # slow consumer.
    conv_list_max: int = 500
    # conv.list requests per user per minute on one edge (half of it may come
    # at once): an app asks at start and after a reconnect, a few tabs at
    # once. An answer costs the sequencer ~50 ms at 500 conversations
    # (measured), so a client asking in a loop gets 1 s of it a minute;
    # beyond: rate_limited (retry later).
    conv_list_per_min: int = 20

    # -- streams (JetStream) -----------------------------------------------
    replicas: int = 1  # 3 in a cluster
    # Client retries land inside this window and are stored once.
    dedup_window_sec: float = 120.0
    # MESSAGES is the recent log; the archive keeps everything forever.
    messages_max_age_sec: float = 7 * 86400
    # INBOX per user: a device offline longer, or further behind, resyncs from history.
    inbox_max_age_sec: float = 7 * 86400
    inbox_max_per_user: int = 10_000

    # -- presence -----------------------------------------------------------
    # An edge sends one heartbeat per interval with all its users: 10 s keeps
    # 20k users at 0.1 msg/s; TTL = interval x factor, so two heartbeats may be
    # lost before a user goes offline (an edge that dies: offline within ~30 s).
    presence_heartbeat_sec: float = 10.0
    presence_ttl_factor: float = 3.0
    presence_sweep_sec: float = 1.0  # how often the tracker expires dead entries
    # Distinct users one user may watch at once (until it goes offline): a
    # contact list is a few hundred; the bound caps the tracker's state per
    # user and the presence events one user can draw.
    presence_max_watches_per_user: int = 1000

    # -- archiver -----------------------------------------------------------
    archive_batch: int = 500  # messages written per store round trip
    archive_max_deliver: int = 10  # tries before a message goes to the dead-letter subject

    # -- push -----------------------------------------------------------------
    push_provider: str = "log"  # log, or a comma list of apns,fcm,webpush
    push_config: str = ""  # TOML file with provider credentials (never logged)

    # -- per-message trace (switchboard/trace.py) ----------------------------
    # Fraction of user messages traced without asking (a countdown: 1 in
    # round(1 / trace_sample)); 0 disables sampling (a send frame with
    # "trace": true is traced anyway). 1 in 1,000 keeps a trace of recent
    # traffic at any rate for the cost of a few small records per thousand
    # messages.
    trace_sample: float = 0.001
    # How long trace records are kept (stream SB_TRACE): one hour covers the
    # window in which a "my message did not arrive" complaint comes in; the
    # records are small and only the traced messages write any.
    trace_max_age_sec: float = 3600.0
    # This process's name in trace records (empty: the edge id for an edge,
    # the sequencer's instance id, else <role>-<host>-<pid>).
    instance: str = ""

    # Prometheus metrics of the non-edge roles on this port (0: off); the edge
    # serves its own on /metrics of its WebSocket port.
    metrics_port: int = 0

    # -- TLS (switchboard/tls.py, docs/security.md) -------------------------
    # wss:// on the edge: PEM certificate chain and private key, both or
    # neither (empty: plain ws://, for development or behind a proxy that
    # terminates TLS). Re-read on SIGHUP: new handshakes get the renewed
    # certificate, open connections are not dropped.
    tls_cert: str = ""
    tls_key: str = ""
    # TLS to NATS, for every connection of the process (nats-py and the lean
    # bus). Any of these set: TLS required (a server without it is refused),
    # the server verified against nats_tls_ca (empty: the system's CAs);
    # nats_tls_cert/nats_tls_key: the client certificate, both or neither,
    # for servers that verify clients. Empty: TLS only if a URL says tls://
    # or the server requires it.
    nats_tls_ca: str = ""
    nats_tls_cert: str = ""
    nats_tls_key: str = ""

    # -- logging ------------------------------------------------------------
    log_level: str = "info"
    log_json: bool = False

    def __post_init__(self) -> None:
        try:
            Subjects(self.subject_prefix)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        scheme = self.store_url.split("://", 1)[0]
        if "://" not in self.store_url or scheme not in STORE_SCHEMES:
            raise ConfigError(f"store_url {redact_url(self.store_url)!r}: scheme must be one of {STORE_SCHEMES}")
        pscheme = self.presence_url.split("://", 1)[0]
        if "://" not in self.presence_url or pscheme not in PRESENCE_SCHEMES:
            raise ConfigError(f"presence_url {redact_url(self.presence_url)!r}: "
                              f"scheme must be one of {PRESENCE_SCHEMES}")
        for name in ("max_frame_bytes", "max_body_bytes", "send_queue_frames", "send_queue_bytes",
                     "max_sockets_per_user", "edge_send_queue_bytes", "rate_burst", "replay_batch",
                     "replicas", "inbox_max_per_user", "archive_batch", "archive_max_deliver",
                     "fanout_max_members", "max_group_members", "partitions", "http_body_bytes",
                     "conv_list_max", "conv_list_per_min"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        for name in ("max_groups_per_min", "max_fanout_per_min"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0 (0: no limit)")
        if self.presence_max_watches_per_user < 1:
            raise ConfigError("presence_max_watches_per_user must be >= 1")
        if self.presence_ttl_factor < 1.5:
            raise ConfigError("presence_ttl_factor must be >= 1.5 (a heartbeat must arrive before the TTL ends)")
        if not 0.0 <= self.trace_sample <= 1.0:
            raise ConfigError("trace_sample must be in [0, 1] (0: no sampling)")
        if self.trace_max_age_sec <= 0:
            raise ConfigError("trace_max_age_sec must be > 0")
        if self.lease_ttl < 1.0:
            raise ConfigError("lease_ttl must be >= 1 s (renewals every third of it must fit a round trip)")
        for name in ("rate_per_sec", "send_timeout", "hello_timeout", "dedup_window_sec", "admit_per_sec",
                     "presence_heartbeat_sec", "presence_sweep_sec"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0")
        if not 0 < self.port < 65536:
            raise ConfigError("port must be in 1..65535")
        if self.max_body_bytes >= self.max_frame_bytes:
            raise ConfigError("max_body_bytes must be smaller than max_frame_bytes")
        if self.send_queue_bytes < 2 * self.max_frame_bytes:
            raise ConfigError("send_queue_bytes must hold at least two maximal frames (2 x max_frame_bytes)")
        if self.edge_send_queue_bytes < self.send_queue_bytes:
            raise ConfigError("edge_send_queue_bytes must be at least send_queue_bytes")
        for cert, key in (("tls_cert", "tls_key"), ("nats_tls_cert", "nats_tls_key")):
            if bool(getattr(self, cert)) != bool(getattr(self, key)):
                raise ConfigError(f"{cert} and {key} go together: set both or neither")

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.subject_prefix)

    @property
    def nats_servers(self) -> list[str]:
        """``nats_url`` as a list: a comma list names seeds of one cluster."""
        return [u.strip() for u in self.nats_url.split(",") if u.strip()]

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    @classmethod
    def load(cls, *, config_file: str | None = None, env: Mapping[str, str] | None = None,
             overrides: Mapping[str, Any] | None = None) -> "Settings":
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        path = config_file or env.get("SWITCHBOARD_CONFIG")
        if path:
            with open(path, "rb") as fh:
                values.update(_coerce_all(tomllib.load(fh), source=str(path)))
        for f in fields(cls):
            raw = env.get(f"SWITCHBOARD_{f.name.upper()}")
            if raw is not None:
                values[f.name] = _coerce(f, raw, source=f"SWITCHBOARD_{f.name.upper()}")
        for k, v in (overrides or {}).items():
            if v is not None:
                values[k] = v
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown settings: {sorted(unknown)}")
        return cls(**values)


def _coerce_all(data: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    by_name = {f.name: f for f in fields(Settings)}
    out = {}
    for k, v in data.items():
        if k not in by_name:
            raise ConfigError(f"{source}: unknown setting {k!r}")
        out[k] = _coerce(by_name[k], v, source=source) if isinstance(v, str) else v
    return out


def _coerce(f: dataclasses.Field, raw: str, *, source: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ConfigError(f"{source}: {f.name}={raw!r} is not a {kind}") from None
    return raw


def data_path(settings: Settings, *parts: str) -> Path:
    p = Path(settings.data_dir).joinpath(*parts)
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


