"""Settings: one tree of validated dataclasses with documented defaults.

The tree has one section per reader: ``[nats]`` (every role's bus),
``[streams]`` (JetStream, made by ``switchboard init``), ``[store]``,
``[edge]``, ``[sequencer]``, ``[archiver]``, ``[presence]``, ``[pusher]``
(with ``[pusher.apns]``, ``[pusher.fcm]``, ``[pusher.webpush]``),
``[trace]``, ``[metrics]``, ``[log]``; ``data_dir`` sits at the top.

Sources, later ones winning (switchboard/configload.py): the defaults below,
one TOML file (``--config`` or ``SWITCHBOARD_CONFIG``), the environment
``SWITCHBOARD_<SECTION>__<KEY>`` (``SWITCHBOARD_EDGE__PORT``; the older flat
``SWITCHBOARD_<FIELD>``, ``SWITCHBOARD_PORT``, is read when the sectioned one
is not set), then command-line flags. ``switchboard config show`` prints the
result and where each value came from; ``switchboard config check FILE``
validates a file.

In code :class:`Settings` is every section at once: a field is read as
``settings.<field>`` (field names are unique across sections, so the code
reads a plain attribute, at construction, never a lookup per message). The
section classes say where a field lives in the file; a field whose key there
differs from its name says so with :func:`_key` (``nats_url`` is ``[nats]
url``). Paths default to places under ``data_dir``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import Field, dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from switchboard.errors import ConfigError
from switchboard.log import redact_url
from switchboard.subjects import Subjects

STORE_SCHEMES = ("sqlite", "cassandra")
PRESENCE_SCHEMES = ("memory", "redis")
DEVICE_STORE_SCHEMES = ("sqlite", "memory", "cassandra")
PUSH_PROVIDERS = ("apns", "fcm", "webpush")


def _key(key: str, default: Any, **meta: Any) -> Any:
    """A field whose key in its section is not its name (``nats_url`` -> ``[nats] url``)."""
    return field(default=default, metadata={"key": key, **meta})


def _secret(default: str) -> Any:
    """A field never printed: ``config show`` and ``repr`` mask it."""
    return field(default=default, repr=False, metadata={"secret": True})


class _Section:
    """Validation shared by every section class: each class's own ``_check``
    runs once, whether the section is used alone or as part of Settings."""

    section: ClassVar[str] = ""
    # Every section class is a dataclass (dataclasses.fields() reads them).
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    def __post_init__(self) -> None:
        for cls in reversed(type(self).__mro__):
            check = cls.__dict__.get("_check")
            if check is not None:
                check(self)


def _at_least(obj: object, minimum: float, *names: str) -> None:
    for name in names:
        if getattr(obj, name) < minimum:
            raise ConfigError(f"{name} must be >= {minimum:g}")


def _positive(obj: object, *names: str) -> None:
    for name in names:
        if getattr(obj, name) <= 0:
            raise ConfigError(f"{name} must be > 0")


# A Go duration as nats-server reads it ("2m", "1m30s", "100ms"): what
# jetstream { sync_interval } accepts besides "always".
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_SEC = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_sec(text: str) -> float | None:
    """Seconds of a Go duration string, or None when it is not one."""
    parts = list(_DURATION_PART.finditer(text))
    if not parts or "".join(m.group(0) for m in parts) != text:
        return None
    return sum(float(m.group(1)) * _DURATION_SEC[m.group(2)] for m in parts)


def _scheme(name: str, url: str, allowed: tuple[str, ...]) -> None:
    scheme = url.split("://", 1)[0]
    if "://" not in url or scheme not in allowed:
        raise ConfigError(f"{name} {redact_url(url)!r}: scheme must be one of {allowed}")


# -- top level ------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class RootSettings(_Section):
    """Keys outside any section."""

    section: ClassVar[str] = ""
    # Where this process keeps its local files: the dev JWT secret, the
    # embedded nats-server's store, and (unless set) the SQLite store and
    # device tokens. Relative to the working directory, like a checkout's.
    data_dir: str = ".sbdata"


# -- [nats] ---------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class NatsSettings(_Section):
    """The bus: read by every role and by ``switchboard init``."""

    section: ClassVar[str] = "nats"
    # One server, or a comma list of seeds of one cluster. The default is a
    # local nats-server on its standard port (`switchboard up` starts one).
    nats_url: str = _key("url", "nats://127.0.0.1:4222", url=True)
    # Several deployments can share one NATS with distinct prefixes.
    subject_prefix: str = "sb"
    # Prepended to MESSAGES/INBOX/PUSH, for the same reason.
    stream_prefix: str = ""
    # How often the nats-server that `switchboard up` starts fsyncs its
    # JetStream files: a duration ("2m", "10s") or "always" (fsync every
    # write before the ack). JetStream acks a write once it is in the OS page
    # cache, so a crash of the whole machine (power, kernel) can lose up to
    # this much acknowledged writes on one node; a crash of nats-server alone
    # loses none. 2m is nats-server's own default: the loss it risks is
    # covered by R3 streams on three machines, and "always" costs throughput
    # (docs/operations.md, Durability). A nats-server of your own (--nats)
    # reads this from its config file instead (nats/single.conf).
    sync_interval: str = "2m"
    # TLS to NATS, for every connection of the process (nats-py and the lean
    # bus). Any of these set: TLS required (a server without it is refused),
    # the server verified against tls_ca (empty: the system's CAs);
    # tls_cert/tls_key: the client certificate, both or neither, for servers
    # that verify clients. Empty: TLS only if a URL says tls:// or the server
    # requires it.
    nats_tls_ca: str = _key("tls_ca", "")
    # The client certificate (PEM) for servers that verify clients; empty: none.
    nats_tls_cert: str = _key("tls_cert", "")
    # Its private key (PEM): set with tls_cert or not at all.
    nats_tls_key: str = _key("tls_key", "")
    # Seconds a process waits for NATS at start (retrying with backoff, a log
    # line every few seconds) before it exits 69 with one line. nats-server
    # listens within a second of starting: 60 s outlasts a server restart or a
    # rescheduled pod, and a wrong URL still shows as a failed process within
    # a minute. 0: wait forever (no supervisor to restart the process).
    nats_connect_timeout_sec: float = _key("connect_timeout_sec", 60.0)

    def _check(self) -> None:
        _at_least(self, 0, "nats_connect_timeout_sec")
        try:
            Subjects(self.subject_prefix)
        except ValueError as exc:
            raise ConfigError(f"subject_prefix: {exc}") from None
        if bool(self.nats_tls_cert) != bool(self.nats_tls_key):
            raise ConfigError("nats_tls_cert and nats_tls_key go together: set both or neither")
        if self.sync_interval != "always" and not duration_sec(self.sync_interval):
            raise ConfigError(f"sync_interval {self.sync_interval!r} must be \"always\" or a duration "
                              "above zero such as \"2m\", \"10s\" or \"100ms\"")


# -- [streams] ------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class StreamSettings(_Section):
    """JetStream streams: made by ``switchboard init``, checked by the roles."""

    section: ClassVar[str] = "streams"
    # Copies of each stream: 1 on one server, 3 in a cluster.
    replicas: int = 1
    # Client retries land inside this window and are stored once.
    dedup_window_sec: float = 120.0
    # MESSAGES is the recent log; the archive keeps everything forever.
    messages_max_age_sec: float = 7 * 86400.0
    # INBOX per user: a device offline longer, or further behind, resyncs from history.
    inbox_max_age_sec: float = 7 * 86400.0
    # Entries kept per user: 10,000 is days of a busy user's messages; a
    # device further behind resyncs from history (cursor_expired).
    inbox_max_per_user: int = 10_000
    # Seconds between two path ticks each sequencer writes to INBOX (a reserved
    # subject, republished to the edges like a user's entry): an edge that
    # sees a tick skipped (or ticks back after 3 intervals without one)
    # re-reads INBOX for every socket, since entries republished meanwhile
    # were lost on the way (a gateway or route cut that its own connection
    # did not notice). Set the same on sequencers and edges. 0.5 s:
    # a dropped route or gateway takes about a second to come back, so a cut
    # that loses entries loses a tick too; 2 stored entries a second per
    # sequencer. 0: no ticks (one nats-server, where that path cannot break).
    tick_interval: float = 0.5

    def _check(self) -> None:
        _at_least(self, 1, "replicas", "inbox_max_per_user")
        _at_least(self, 0, "tick_interval")
        _positive(self, "dedup_window_sec")


# -- [store] --------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class StoreSettings(_Section):
    """The archive store: read by the sequencer and the archiver."""

    section: ClassVar[str] = "store"
    # sqlite:///path.db or cassandra://h1,h2/keyspace?... Empty: SQLite in
    # data_dir (switchboard.db), so a fresh checkout needs no database.
    store_url: str = _key("url", "", url=True)
    # Seconds a role waits for its store at start (the sequencer and the
    # archiver: this one; the pusher: its device store) before it exits 69
    # with one line. A Cassandra node answers 12-45 s after its JVM starts
    # (docs/storage.md): 120 s lets roles started alongside it (compose up, a
    # host reboot) outwait that on a loaded host. 0: wait forever.
    store_connect_timeout_sec: float = _key("connect_timeout_sec", 120.0)

    def _check(self) -> None:
        _at_least(self, 0, "store_connect_timeout_sec")
        if self.store_url:  # empty: Settings derives it from data_dir
            _scheme("store_url", self.store_url, STORE_SCHEMES)


# -- [edge] ---------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class EdgeSettings(_Section):
    """The WebSocket gateway."""

    section: ClassVar[str] = "edge"
    # Loopback: a development edge is not reachable from the network unless
    # asked (the image sets 0.0.0.0).
    host: str = "127.0.0.1"
    # WebSocket and HTTP (/healthz, /metrics, the web app) on one port; 8080
    # needs no privileges.
    port: int = 8080
    # Names the heartbeat subject; empty: generated per process (edge-<hex>).
    edge_id: str = _key("id", "")
    # HS256 secret of client tokens. Empty: `switchboard up` and the roles use
    # (or create) data_dir/jwt.secret.
    jwt_secret: str = _secret("")
    # wss:// on the edge: PEM certificate chain and private key, both or
    # neither (empty: plain ws://, for development or behind a proxy that
    # terminates TLS). Re-read on SIGHUP: new handshakes get the renewed
    # certificate, open connections are not dropped.
    tls_cert: str = ""
    # The certificate's private key (PEM): set with tls_cert or not at all.
    tls_key: str = ""
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
    # The bucket's size: 200 frames let a client that was offline send what
    # it queued at once.
    rate_burst: int = 200
    # Typing indicators a connection may send per second (beyond: dropped
    # silently): a client sends one every few seconds while the user types,
    # so 1/s sustained covers it and drops floods to the members.
    typing_per_sec: float = 1.0
    # Typing indicators at once: 3 covers switching between conversations.
    typing_burst: int = 3
    # Replay on hello is read from INBOX in batches of this many entries: big
    # enough to amortise round trips, small enough not to flood the socket queue.
    replay_batch: int = 256
    # Seconds a new TCP connection has to send its HTTP request: a socket
    # that never speaks would otherwise hold a file descriptor forever; 10 s
    # is far above a slow mobile handshake.
    open_timeout: float = 10.0
    # Seconds the edge waits for the first frame (hello) before closing: a
    # socket that never speaks only costs memory.
    hello_timeout: float = 10.0
    # WebSocket ping interval/timeout: detects dead peers behind NATs.
    ping_interval: float = 20.0
    # Seconds a pinged peer has to answer (any input counts) before close 1011:
    # as long as the interval, so a slow mobile link is not cut.
    ping_timeout: float = 20.0
    # Edge-side admission limit: new connections accepted per second, so a
    # reconnect storm after an edge dies cannot starve the live sockets.
    admit_per_sec: float = 2000.0
    # Connections upgraded and not yet synced (hello, INBOX replay, large
    # groups) an edge works on at once; an upgrade beyond is refused like one
    # over admit_per_sec (503). The rate alone does not bound the work: an
    # edge that completes fewer hellos per second than it admits (a busy
    # host) queues them until clients give up (their 10 s open timeout) and
    # retry, and then does work nobody waits for (bench storm: 20,000 clients,
    # none synced in 90 s). An opening mostly waits (INBOX read, sequencer
    # request): 800 keeps enough in progress to fill the host (bench storm on
    # 2 cores: 20,000 back in 43 s; 71 s with 200, the host not busy) and a
    # hello's wait ~2 s where one costs up to 5 ms of a starved core, well
    # under the clients' 10 s open timeout (2,000: open timeouts, wasted work).
    admit_max_opening: int = 800
    # Seconds an upgrade refused for admit_max_opening may instead wait on
    # its open connection for a free place (the edge's lobby), when its turn
    # at the rate the edge completes openings (the Retry-After appointment it
    # would be given) is at most this far: it then needs no second TCP
    # connection, request and refusal. Beyond, or when it has waited twice
    # this long, it gets the 503 with its appointment. Well under clients' open
    # timeout (the SDK's: 10 s, which covers the wait). 0: refuse at once.
    admit_hold_sec: float = 3.0
    # Seconds a live socket's INBOX re-read (after a gap, a bus reconnect or a
    # lost path tick) is retried with backoff when it fails, before the
    # socket is closed with 1013 to replay from its cursor elsewhere. The
    # usual causes pass in seconds (an INBOX leader election, a gateway or
    # route re-forming after a restart); closing at the first failure turned
    # every such blip into a reconnect of all the edge's sockets at once.
    reread_retry_sec: float = 15.0
    # Seconds an edge waits for the sequencer before answering `unavailable`
    # (retry: true). Covers a JetStream write at p99.9 with a wide margin. The
    # sequencer retries a system send through a partition handover as long.
    send_timeout: float = 5.0
    # Sends one edge has in flight to the sequencers, all sockets together;
    # at this many, sockets that send stop being read until half were
    # answered (edge/sends.py, SendBudget). It bounds the sequencers' queue,
    # so a fabric offered more than it can do keeps delivering at capacity
    # instead of timing sends out into a storm of resends. 1024 is ~0.1 s of
    # work at the 1:1 rate of a 2-core box and 100x what 2,000 msgs/s keeps
    # in flight (p99 7 ms).
    max_inflight_sends: int = 1024
    # conv.list requests per user per minute on one edge (half of it may come
    # at once): an app asks at start and after a reconnect, a few tabs at
    # once. An answer costs the sequencer ~50 ms at 500 conversations
    # (measured), so a client asking in a loop gets 1 s of it a minute;
    # beyond: rate_limited (retry later).
    conv_list_per_min: int = 20
    # Receipts of every socket are gathered this long (seconds), one per
    # socket and conversation (an ack and a read that follow each other
    # become one), and sent in one request per 512: the sequencer coalesces
    # for as long again, so a receipt shows within ~0.1 s.
    edge_receipt_flush_sec: float = _key("receipt_flush_sec", 0.05)
    # Seconds the INBOX bounds (and epoch) a hello reads are reused: hellos
    # in a reconnect storm share one stream-info request. Half a second is
    # far below any reconnect backoff.
    inbox_bounds_ttl: float = 0.5
    # How often a running edge checks that INBOX is still the same stream
    # (seconds): a recreated INBOX is noticed within this long even when no
    # one says hello; one stream-info request each time.
    epoch_check_sec: float = 5.0
    # After a bus reconnect every session reads INBOX after its cursor (one
    # direct get each): recheck_batch sessions per recheck_pause_sec, so
    # 20,000 sessions spread over ~5 s instead of 20,000 requests hitting
    # NATS in the same instant.
    recheck_batch: int = 200
    # The pause between two such batches (seconds).
    recheck_pause_sec: float = 0.05
    # Development sign-in: GET /dev/config says whether it is on, POST
    # /dev/token {"user": "alice"} hands out a token for any user id (the web
    # app's sign-in form). Off by default: whoever reaches it can act as
    # anyone. `switchboard up` turns it on when it binds a loopback host
    # (unless --no-dev-signin), where only this machine reaches it.
    dev_signin: bool = False
    # Bytes of body a plain HTTP request to the edge may carry (POST
    # /dev/token is ~20 bytes); more is refused with 413 before it is read.
    http_body_bytes: int = 4096

    def _check(self) -> None:
        _at_least(self, 1, "max_frame_bytes", "max_body_bytes", "send_queue_frames", "send_queue_bytes",
                  "max_sockets_per_user", "edge_send_queue_bytes", "rate_burst", "replay_batch", "http_body_bytes",
                  "conv_list_per_min", "recheck_batch", "typing_burst", "admit_max_opening",
                  "max_inflight_sends")
        _positive(self, "rate_per_sec", "typing_per_sec", "send_timeout", "reread_retry_sec", "hello_timeout",
                  "open_timeout",
                  "admit_per_sec", "edge_receipt_flush_sec", "epoch_check_sec")
        _at_least(self, 0, "inbox_bounds_ttl", "recheck_pause_sec", "admit_hold_sec")
        if not 0 < self.port < 65536:
            raise ConfigError("port must be in 1..65535")
        if self.max_body_bytes >= self.max_frame_bytes:
            raise ConfigError("max_body_bytes must be smaller than max_frame_bytes")
        if self.send_queue_bytes < 2 * self.max_frame_bytes:
            raise ConfigError("send_queue_bytes must hold at least two maximal frames (2 x max_frame_bytes)")
        if self.edge_send_queue_bytes < self.send_queue_bytes:
            raise ConfigError("edge_send_queue_bytes must be at least send_queue_bytes")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls_cert and tls_key go together: set both or neither")


# -- [sequencer] ----------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class SequencerSettings(_Section):
    """Ordering, storage and fan-out; ``partitions`` is read by the edge too."""

    section: ClassVar[str] = "sequencer"
    # Conversations hash into this many partitions, each written by exactly
    # one sequencer at a time (a lease in a KV bucket). More partitions than
    # sequencer processes lets ownership spread evenly; every process of a
    # deployment (edges included) must use the same number.
    partitions: int = 64
    # Partition lease lifetime (seconds). An owner renews every third of it;
    # a dead owner's partitions are free again after at most this long.
    lease_ttl: float = 3.0
    # Groups larger than this are not fanned out to INBOX copies; members'
    # edges read the conversation subject instead (pull mode).
    fanout_max_members: int = 500
    # Receipts (delivered/read watermarks) are broadcast to every member only
    # in conversations of at most this many members; in bigger ones they are
    # stored and members ask with a `receipts` frame. A broadcast costs one
    # frame per member per raised watermark, so an active group of N members
    # acking 4 times a second costs up to 4*N*N frames/s: 40,000 at 100
    # members, more than a busy group's own deliveries (docs/benchmarks.md).
    # 32 keeps live ticks for small groups and every 1:1 conversation.
    receipt_broadcast_max_members: int = 32
    # Hard cap on members of one conversation.
    max_group_members: int = 5000
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
    # Receipts are written and broadcast once per this many seconds: short
    # enough that a "read" tick looks instant to a person, long enough to
    # merge the receipts of a busy conversation into one frame and one write.
    sequencer_receipt_flush_sec: float = _key("receipt_flush_sec", 0.05)
    # API requests (conversation queries, receipts, system sends) one
    # sequencer handles at once; beyond it a request is answered
    # `unavailable` (retry) at once, so a flood of expensive queries cannot
    # starve the lease renewals and the send pipeline sharing its event loop.
    # 256 keeps a few hundred concurrent app starts in flight.
    api_max_inflight: int = 256
    # Seconds between tries of a system send that finds no owner of its
    # partition (a handover), until send_timeout: a lease moves within a few
    # round trips, so 0.1 s retries soon without spinning.
    handover_retry_sec: float = 0.1
    # Seconds a send waits for the presence tracker's answer (who is offline,
    # for push) before it is sent without: a later answer is not worth
    # delaying `sent`; the tracker answers in about a millisecond.
    sequencer_presence_timeout_sec: float = _key("presence_timeout_sec", 1.0)

    def _check(self) -> None:
        _at_least(self, 1, "fanout_max_members", "receipt_broadcast_max_members", "max_group_members", "partitions",
                  "conv_list_max", "api_max_inflight")
        _at_least(self, 0, "max_groups_per_min", "max_fanout_per_min")
        _positive(self, "sequencer_receipt_flush_sec", "handover_retry_sec", "sequencer_presence_timeout_sec")
        if self.lease_ttl < 1.0:
            raise ConfigError("lease_ttl must be >= 1 s (renewals every third of it must fit a round trip)")


# -- [archiver] -----------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ArchiverSettings(_Section):
    """Copies MESSAGES into the store; serves history."""

    section: ClassVar[str] = "archiver"
    # Messages fetched per batch and written per store write (at most). A
    # write's fixed costs (a SQLite transaction; into Cassandra one request
    # per conversation partition it touches) are shared by its messages:
    # 2000 took half the archiver CPU per message of 500 into Cassandra
    # (100 conversations: 20 rows per request instead of 5) and a quarter
    # less into SQLite (docs/benchmarks.md). A live stream is written in
    # smaller batches anyway (linger_sec).
    archive_batch: int = _key("batch", 2000)
    # Tries before a message goes to the dead-letter subject.
    archive_max_deliver: int = _key("max_deliver", 10)
    # Batches one archiver writes to the store at once (each acked when its
    # own write returns). A write is a round trip to Cassandra: with one at a
    # time the process idles while the store works, and the store idles
    # while the next batch is decoded and bound. 4 keeps the store busy while
    # the next batches are prepared; more only holds more messages unacked
    # (the consumer's max_ack_pending grows with it). SQLite's one writer
    # thread takes them one after another.
    archive_write_window: int = _key("write_window", 4)
    # Seconds a fetch lingers for a fuller batch (at most one short batch per
    # linger): at 8,000 msgs/s that is ~400 messages per store write instead
    # of ~80, a third less CPU per message. History reads unarchived messages
    # from the stream, so archiving 50 ms later costs nothing visible.
    archive_linger_sec: float = _key("linger_sec", 0.05)
    # A fetch waits this long for messages when the stream is idle: short
    # enough that a stop is prompt, long enough not to spin on an idle stream.
    archive_fetch_wait_sec: float = _key("fetch_wait_sec", 1.0)
    # Seconds between consumer-info reads for the lag gauge (and the ack
    # floor history uses); a scrape every 15 s sees a value at most this old.
    archive_lag_interval_sec: float = _key("lag_interval_sec", 2.0)
    # Seconds a delivered batch may stay unacked before JetStream redelivers
    # it (the consumer's ack wait, set by `switchboard init`). A write takes
    # milliseconds to a few seconds; during a store outage the writer keeps
    # its batch with in-progress acks, so this only decides how soon a
    # crashed archiver's batch reaches another instance.
    archive_ack_wait_sec: float = _key("ack_wait_sec", 30.0)
    # A store outage: seconds before the first retry of a failed batch write
    # (most store hiccups are a failover or a timeout, over soon), doubling
    # up to store_backoff_cap_sec.
    archive_store_backoff_sec: float = _key("store_backoff_sec", 0.1)
    # The longest wait between two write retries: a recovered store is used
    # again within 5 s, and the in-progress ack sent at each retry stays well
    # inside ack_wait_sec.
    archive_store_backoff_cap_sec: float = _key("store_backoff_cap_sec", 5.0)

    def _check(self) -> None:
        _at_least(self, 1, "archive_batch", "archive_max_deliver", "archive_write_window")
        _at_least(self, 0, "archive_linger_sec")
        _positive(self, "archive_fetch_wait_sec", "archive_lag_interval_sec", "archive_ack_wait_sec",
                  "archive_store_backoff_sec")
        if self.archive_store_backoff_cap_sec < self.archive_store_backoff_sec:
            raise ConfigError("archive_store_backoff_cap_sec must be >= archive_store_backoff_sec")


# -- [presence] -----------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class PresenceSettings(_Section):
    """Online state: the tracker's backend; the heartbeat is the edges' too."""

    section: ClassVar[str] = "presence"
    # memory:// (one tracker process) or redis://host:port/db (several).
    presence_url: str = _key("url", "memory://", url=True)
    # Seconds the tracker waits for its backend (Redis) at start before it
    # exits 69 with one line: Redis listens within a second of starting, so
    # 60 s outlasts a restart and still reports a wrong URL within a minute.
    # 0: wait forever.
    presence_connect_timeout_sec: float = _key("connect_timeout_sec", 60.0)
    # An edge sends one heartbeat per interval with all its users: 10 s keeps
    # 20k users at 0.1 msg/s; TTL = interval x factor, so two heartbeats may be
    # lost before a user goes offline (an edge that dies: offline within ~30 s).
    presence_heartbeat_sec: float = _key("heartbeat_sec", 10.0)
    # A user's entry lives heartbeat_sec x this: 3 survives two lost heartbeats.
    presence_ttl_factor: float = _key("ttl_factor", 3.0)
    # How often the tracker expires dead entries: 1 s is cheap (one O(1)
    # check in memory, one script call on Redis) and small next to the TTL.
    presence_sweep_sec: float = _key("sweep_sec", 1.0)
    # Distinct users one user may watch at once (until it goes offline): a
    # contact list is a few hundred; the bound caps the tracker's state per
    # user and the presence events one user can draw.
    presence_max_watches_per_user: int = _key("max_watches_per_user", 1000)

    def _check(self) -> None:
        _scheme("presence_url", self.presence_url, PRESENCE_SCHEMES)
        _at_least(self, 0, "presence_connect_timeout_sec")
        _at_least(self, 1, "presence_max_watches_per_user")
        _positive(self, "presence_heartbeat_sec", "presence_sweep_sec")
        if self.presence_ttl_factor < 1.5:
            raise ConfigError("presence_ttl_factor must be >= 1.5 (a heartbeat must arrive before the TTL ends)")


# -- [pusher] and its providers ---------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ApnsSettings:
    """``[pusher.apns]``: Apple Push Notification service."""

    key_file: str  # the .p8 signing key from the developer account (its content is never logged)
    key_id: str  # the key's id (10 characters), shown next to it in the developer account
    team_id: str  # the developer team's id: the issuer of the provider token
    topic: str  # the app's bundle id
    base_url: str = "https://api.push.apple.com"  # sandbox: https://api.sandbox.push.apple.com
    ca_file: str | None = None  # extra CA to trust (the tests' local fake)
    # 10 s: APNs answers in well under a second; a hung connection must not hold an entry long.
    timeout: float = 10.0
    priority: int = 10  # 10: deliver now (alert); 5 would let iOS batch it


@dataclass(frozen=True, kw_only=True)
class FcmSettings:
    """``[pusher.fcm]``: Firebase Cloud Messaging (HTTP v1)."""

    service_account_file: str  # the JSON downloaded from the Firebase console (never logged)
    base_url: str = "https://fcm.googleapis.com"  # FCM's API; a test points it at a local fake
    token_uri: str | None = None  # default: the service account's token_uri
    ca_file: str | None = None  # extra CA to trust (the tests' local fake)
    timeout: float = 10.0  # a hung connection must not hold an entry long


@dataclass(frozen=True, kw_only=True)
class WebPushSettings:
    """``[pusher.webpush]``: Web Push with VAPID (RFC 8030/8291/8292)."""

    vapid_private_key_file: str  # PEM (PKCS8 or SEC1) P-256 key; its public key is the app server key
    subject: str  # "mailto:ops@example.com" or an https URL: who push services contact about abuse
    ttl: int = 86400  # seconds a push service keeps an undelivered message (a day: later, it is stale)
    urgency: str = "high"  # RFC 8030 5.3: chat messages are worth waking the device for
    ca_file: str | None = None  # extra CA to trust (the tests' local fake)
    timeout: float = 10.0  # a hung connection must not hold an entry long
    # Push services a subscription may point at (host, or ".suffix"). A
    # subscription is a URL the *user* gives us: without a list, the pusher
    # would POST to any host, internal ones included. Defaults: the services
    # of Chrome/Android, Firefox, Edge/Windows and Safari.
    allowed_hosts: tuple[str, ...] = (".googleapis.com", ".push.services.mozilla.com", ".notify.windows.com",
                                      ".push.apple.com")

    def allows(self, endpoint: str) -> bool:
        host = (urlsplit(endpoint).hostname or "").lower()
        return any(host == h.lstrip(".") or (h.startswith(".") and host.endswith(h)) for h in self.allowed_hosts)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_hosts", tuple(self.allowed_hosts))
        if not (self.subject.startswith("mailto:") or self.subject.startswith("https://")):
            raise ConfigError("webpush subject must be a mailto: or https: URL")
        if self.urgency not in ("very-low", "low", "normal", "high"):
            raise ConfigError("webpush urgency must be very-low, low, normal or high")


@dataclass(frozen=True, kw_only=True)
class PusherSettings(_Section):
    """Push notifications: the worker's policy, the device store, the providers."""

    section: ClassVar[str] = "pusher"
    # "log" (the development provider: notifications are logged) or a comma
    # list of apns,fcm,webpush, each with its [pusher.<name>] section.
    push_provider: str = _key("provider", "log")
    # Deliveries of one entry before it goes to the dead-letter subject. With
    # the backoff below that is ~2+4+8+16 s of retrying on top of any
    # Retry-After: a notification later than that is stale anyway.
    push_max_deliver: int = _key("max_deliver", 5)
    # Seconds before the 2nd delivery; doubles each time (+-20% jitter).
    push_backoff_base: float = _key("backoff_base", 2.0)
    # A longer Retry-After is honoured; the backoff alone never exceeds this.
    push_backoff_max: float = _key("backoff_max", 300.0)
    # Seconds the server waits for an ack before redelivering: several sends
    # at the providers' 10 s timeout, with margin.
    push_ack_wait: float = _key("ack_wait", 60.0)
    # Entries handled at once (fetch batch); each may send to a few devices.
    push_concurrency: int = _key("concurrency", 16)
    # Where device tokens live: sqlite:///path, memory://, or
    # cassandra://... when several pushers run. Empty: SQLite in data_dir
    # (devices.db).
    push_device_store: str = _key("device_store", "", url=True)
    # The JetStream consumer's name (nats/accounts.conf allows the pusher
    # user this one).
    push_durable: str = _key("durable", "sb-pusher")
    # Seconds one fetch of the PUSH queue waits for work when it is idle:
    # short, so a stop (which waits for the fetch to end) is quick.
    push_fetch_timeout_sec: float = _key("fetch_timeout_sec", 1.0)
    # Seconds between reads of the queue depth (switchboard_pusher_queue_*
    # gauges): a scrape every 15 s sees a value at most this old, for one
    # small request.
    push_queue_poll_sec: float = _key("queue_poll_sec", 2.0)
    # Seconds the pusher waits for the sequencer's read watermark or unread
    # count of a notification: a slower answer is skipped (sent anyway, no
    # badge), since the notification matters more.
    push_lookup_timeout_sec: float = _key("lookup_timeout_sec", 1.0)
    push_apns: ApnsSettings | None = _key("apns", None)
    push_fcm: FcmSettings | None = _key("fcm", None)
    push_webpush: WebPushSettings | None = _key("webpush", None)

    @property
    def push_providers(self) -> tuple[str, ...]:
        """``push_provider`` as names ("log", or some of apns/fcm/webpush)."""
        return tuple(n.strip() for n in self.push_provider.split(",") if n.strip())

    def _check(self) -> None:
        _at_least(self, 1, "push_max_deliver", "push_concurrency")
        if self.push_backoff_base < 0 or self.push_backoff_max < self.push_backoff_base:
            raise ConfigError("push_backoff_base and push_backoff_max: need 0 <= backoff_base <= backoff_max")
        _positive(self, "push_ack_wait", "push_fetch_timeout_sec", "push_queue_poll_sec", "push_lookup_timeout_sec")
        if self.push_device_store:
            _scheme("push_device_store", self.push_device_store, DEVICE_STORE_SCHEMES)
        names = self.push_providers
        if names != ("log",):
            for name in names:
                if name not in PUSH_PROVIDERS:
                    raise ConfigError(f"push_provider: unknown push provider {name!r}; use log or a list of "
                                      f"apns, fcm, webpush")
                if getattr(self, f"push_{name}") is None:
                    raise ConfigError(f"push_provider: {name!r} is enabled but there is no [pusher.{name}] section")


# -- [trace], [metrics], [log] --------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class TraceSettings(_Section):
    """Per-message traces (switchboard/trace.py), written by every role."""

    section: ClassVar[str] = "trace"
    # Fraction of user messages traced without asking (a countdown: 1 in
    # round(1 / sample)); 0 disables sampling (a send frame with
    # "trace": true is traced anyway). 1 in 1,000 keeps a trace of recent
    # traffic at any rate for the cost of a few small records per thousand
    # messages.
    trace_sample: float = _key("sample", 0.001)
    # How long trace records are kept (stream SB_TRACE): one hour covers the
    # window in which a "my message did not arrive" complaint comes in; the
    # records are small and only the traced messages write any.
    trace_max_age_sec: float = _key("max_age_sec", 3600.0)
    # This process's name in trace records (empty: the edge id for an edge,
    # the sequencer's instance id, else <role>-<host>-<pid>).
    instance: str = ""

    def _check(self) -> None:
        if not 0.0 <= self.trace_sample <= 1.0:
            raise ConfigError("trace_sample must be in [0, 1] (0: no sampling)")
        _positive(self, "trace_max_age_sec")


@dataclass(frozen=True, kw_only=True)
class MetricsSettings(_Section):
    """Prometheus metrics of every role process."""

    section: ClassVar[str] = "metrics"
    # Port of this process's metrics page: its roles' series and its
    # process's (0: off, nothing listens unless asked); an edge also serves
    # its own on /metrics of its WebSocket port. `switchboard up` serves the
    # edge's page here and gives its children the next ports.
    metrics_port: int = _key("port", 0)

    def _check(self) -> None:
        if not 0 <= self.metrics_port < 65536:
            raise ConfigError("metrics_port must be in 0..65535 (0: off)")


@dataclass(frozen=True, kw_only=True)
class LogSettings(_Section):
    """Every process's log."""

    section: ClassVar[str] = "log"
    # info: one line per connection-level event, never one per message.
    log_level: str = _key("level", "info")
    # JSON lines for a log collector; off: readable lines on a terminal.
    log_json: bool = _key("json", False)


# -- the whole tree -------------------------------------------------------------
SECTIONS: tuple[type[_Section], ...] = (RootSettings, NatsSettings, StreamSettings, StoreSettings, EdgeSettings,
                                        SequencerSettings, ArchiverSettings, PresenceSettings, PusherSettings,
                                        TraceSettings, MetricsSettings, LogSettings)
# The nested tables of a section (a dataclass per table, None when absent).
TABLES: dict[str, type] = {"push_apns": ApnsSettings, "push_fcm": FcmSettings, "push_webpush": WebPushSettings}


@dataclass(frozen=True, kw_only=True)
class Settings(LogSettings, MetricsSettings, TraceSettings, PusherSettings, PresenceSettings, ArchiverSettings,
               SequencerSettings, EdgeSettings, StoreSettings, StreamSettings, NatsSettings, RootSettings):
    """Every section at once (see the module docstring)."""

    # The fields derived from data_dir in this instance (set in __post_init__).
    _derived: ClassVar[frozenset[str]] = frozenset()

    def __post_init__(self) -> None:
        # Paths not set go under data_dir. Which fields were derived is kept,
        # so replace(data_dir=...) moves them along (see replace).
        derived = []
        for name, leaf in DERIVED.items():
            if not getattr(self, name):
                object.__setattr__(self, name, f"sqlite:///{Path(self.data_dir) / leaf}")
                derived.append(name)
        object.__setattr__(self, "_derived", frozenset(derived))
        super().__post_init__()

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.subject_prefix)

    @property
    def nats_servers(self) -> list[str]:
        """``nats_url`` as a list: a comma list names seeds of one cluster."""
        return [u.strip() for u in self.nats_url.split(",") if u.strip()]

    def derived(self, name: str) -> bool:
        """True if field ``name`` was not set and took its place under data_dir."""
        return name in self._derived

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (field names); validated again. A new
        ``data_dir`` moves the paths that were derived from the old one."""
        if "data_dir" in changes:
            for name in self._derived:
                changes.setdefault(name, "")
        return dataclasses.replace(self, **changes)

    @classmethod
    def load(cls, *, config_file: str | None = None, env: Mapping[str, str] | None = None,
             overrides: Mapping[str, Any] | None = None) -> Settings:
        """Defaults < TOML file < environment < ``overrides`` (flags; a None
        value is a flag not given). ``env`` defaults to ``os.environ``."""
        from switchboard.configload import load

        return load(config_file=config_file, env=env, overrides=overrides).settings


# Fields derived from data_dir when empty: field -> file under data_dir.
DERIVED = {"store_url": "switchboard.db", "push_device_store": "devices.db"}


def data_path(settings: Settings, *parts: str) -> Path:
    p = Path(settings.data_dir).joinpath(*parts)
    p.parent.mkdir(parents=True, exist_ok=True)
    return p
