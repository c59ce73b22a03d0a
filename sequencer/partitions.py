"""Partition leases: each conversation partition is written by one sequencer.

Conversations hash into ``settings.partitions`` partitions
(:func:`switchboard.subjects.partition_of`). Ownership lives in a NATS KV
bucket (``<stream_prefix>sb_partitions``) whose TTL is the lease lifetime:

- ``m.<instance>``: a live sequencer (rewritten every round);
- ``p.<n>``: partition ``n`` is owned by the instance named in the value.

A round runs every third of the TTL. It renews every owned key with a
revision compare-and-set (``update(key, last=revision)``), reads the whole
bucket in one batch direct get, and rebalances by rendezvous hashing: each
partition's preferred owner is the live member with the highest
``crc32(member:partition)``. A member releases owned partitions that prefer
someone else (after its in-flight writes drained) and takes free ones that
prefer it; a partition free for longer than :data:`GRACE_ROUNDS` rounds is
taken by anyone, so a slow preferred member cannot leave it orphaned. Taking
is ``create`` (succeeds only if the key does not exist): never two owners by
the bucket's word.

An owner that cannot renew stops writing at once: :meth:`owns` is false past
``valid_until``, computed from the moment the last successful renewal was
*sent* (the server's expiry counts from when it stored it, later), less a
margin. A process frozen with SIGSTOP wakes up past that moment and writes
nothing. The stream fence (Expected-Last-Subject-Sequence on every write) is
the safety net under all of this: two processes that both believe they own
a partition never fork a conversation; they only retry.

``nats kv ls <bucket>`` / ``nats kv get <bucket> p.7`` show who owns what.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from switchboard import log
from switchboard.bus.conn import encode_headers
from switchboard.bus.direct import direct_last_per_subject
from switchboard.bus.jsack import WRONG_LAST_SEQUENCE, decode_ack
from switchboard.bus.replies import Replies
from switchboard.bus.streams import NotInitialized
from switchboard.config import Settings
from switchboard.tasks import stop_task

# A free partition that its preferred member has not taken after this many
# rounds is taken by whoever sees it (the preferred one may be stuck).
GRACE_ROUNDS = 2
# Fraction of the TTL an owner trusts its last renewal for: the rest covers
# the round trip and clock-rate differences between this host and the server.
TRUST = 0.8
# A releasing owner waits at most this long for its in-flight writes of the
# partition before deleting the key (the fence covers anything later).
DRAIN_SEC = 1.0
# stop() waits this long for the renewal loop to end (one KV round trip, or
# the cancel of one): the release of the leases follows, not a loop still renewing.
STOP_WAIT_SEC = 2.0


def bucket_name(settings: Settings) -> str:
    return f"{settings.stream_prefix}sb_partitions"


def preferred(members: list[str], partition: int) -> str | None:
    """Rendezvous hashing: stable, and moves only 1/N of partitions when a
    member joins or leaves."""
    if not members:
        return None
    return max(members, key=lambda m: (zlib.crc32(f"{m}:{partition}".encode()), m))


async def ensure_bucket(nc: NATS, settings: Settings) -> None:
    """Create the lease bucket (idempotent): TTL = lease lifetime, one
    revision per key, direct gets for the one-request listing. The admin
    step's (sbctl/init.py): sequencers only open it."""
    js = nc.jetstream()
    storage = StorageType.FILE
    await js.create_key_value(KeyValueConfig(bucket=bucket_name(settings), ttl=settings.lease_ttl, history=1,
                                             replicas=settings.replicas, storage=storage, direct=True,
                                             description="Sequencer partition leases (p.<n>) and members (m.<id>)"))


@dataclass(slots=True)
class _Lease:
    revision: int
    valid_until: float  # time.monotonic()


class PartitionLeases:
    """Owns partitions for one sequencer process.

    ``on_acquire(p)`` runs when a partition becomes ours (subscribe, mark
    cached conversation state for reload); ``on_release(p)`` when it stops
    being ours (unsubscribe). ``inflight(p)`` says how many writes of ``p``
    are still awaiting acks (a release waits for them, up to DRAIN_SEC).
    """

    def __init__(self, *, nc: NATS, settings: Settings, instance: str,
                 on_acquire: Callable[[int], None], on_release: Callable[[int], None],
                 inflight: Callable[[int], int], replies: Replies | None = None) -> None:
        self._nc = nc
        # Renewals (one per owned partition per round) go through the lean
        # bus when given: nats-py's kv.update costs ~10x more per call, and a
        # round's burst delays the messages in flight meanwhile.
        self._replies = replies
        self._settings = settings
        self.instance = instance
        self._n = settings.partitions
        self._ttl = settings.lease_ttl
        self._on_acquire = on_acquire
        self._on_release = on_release
        self._inflight = inflight
        self._bucket = bucket_name(settings)
        self._leases: dict[int, _Lease] = {}
        self._releasing: set[int] = set()
        self._free_rounds: dict[int, int] = {}
        self._kv: KeyValue | None = None  # the lease bucket, from start()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._bg: set[asyncio.Task[None]] = set()
        self.members: list[str] = []
        self.owners: dict[int, str] = {}
        self.rounds = 0
        # Lease events for /metrics (sequencer/metrics.py): plain ints, a few per round.
        self.counts = {"renewals": 0, "renewal_failures": 0, "lost": 0, "lapsed": 0, "acquired": 0,
                       "released": 0, "round_failures": 0}
        self._log = log.get("sequencer.partitions", instance=instance)

    # -- the hot-path question --------------------------------------------------
    def owns(self, partition: int) -> bool:
        lease = self._leases.get(partition)
        return lease is not None and partition not in self._releasing and time.monotonic() < lease.valid_until

    @property
    def owned(self) -> list[int]:
        # list() first: a metrics scrape reads this from another thread while the loop may add a lease
        return sorted(p for p in list(self._leases) if self.owns(p))

    def _bucket_kv(self) -> KeyValue:
        assert self._kv is not None, "PartitionLeases.start() first"
        return self._kv

    # -- lifecycle ----------------------------------------------------------------
    async def start(self) -> None:
        try:  # created by the admin step (switchboard init / up), not here
            self._kv = await self._nc.jetstream().key_value(self._bucket)
        except nats.js.errors.NotFoundError:  # BucketNotFoundError
            raise NotInitialized(f"JetStream KV bucket {self._bucket}") from None
        await self.round()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stopping = True
        task, self._task = self._task, None
        # Awaited: nats-py turns a cancel inside a KV request into its own
        # TimeoutError, which the loop took for a failed round and went on
        # (logging "partition round failed" every second after the stop).
        await stop_task(task, timeout=STOP_WAIT_SEC)
        await self._release_many(sorted(self._leases), reason="stopping")
        if self._kv is None:
            return  # never started
        try:
            await self._kv.delete(f"m.{self.instance}")
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error):
            pass

    async def _run(self) -> None:
        interval = self._ttl / 3
        while not self._stopping:
            await asyncio.sleep(interval)
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - NATS away: leases lapse by themselves
                if self._stopping:
                    return  # the cancel of stop(), as nats-py reports it
                self.counts["round_failures"] += 1
                self._log.info("partition round failed", error=f"{type(exc).__name__}: {exc}")

    # -- one round ------------------------------------------------------------------
    async def round(self) -> None:
        kv = self._bucket_kv()
        t0 = time.monotonic()
        self.rounds += 1
        await kv.put(f"m.{self.instance}", self.instance.encode())
        await self._renew(t0)
        listing = await direct_last_per_subject(self._nc, stream=f"KV_{self._bucket}",
                                                subject=f"$KV.{self._bucket}.>", timeout=self._ttl / 3)
        members, owners = [], {}
        for _, headers, data in listing.entries:
            key = headers.get("Nats-Subject", "").split(".", 2)[-1]
            if not data or headers.get("KV-Operation"):
                continue  # a delete marker
            if key.startswith("m."):
                members.append(key[2:])
            elif key.startswith("p."):
                owners[int(key[2:])] = data.decode()
        if self.instance not in members:
            members.append(self.instance)
        self.members, self.owners = sorted(members), owners
        acquired: list[int] = []
        giving: list[int] = []
        for p in range(self._n):
            want = preferred(self.members, p)
            owner = owners.get(p)
            if owner == self.instance and p in self._leases:
                self._free_rounds.pop(p, None)
                if want != self.instance and p not in self._releasing:
                    giving.append(p)
            elif owner is None:
                free = self._free_rounds[p] = self._free_rounds.get(p, 0) + 1
                if (want == self.instance or free > GRACE_ROUNDS) and await self._acquire(p, t0):
                    acquired.append(p)
            else:
                self._free_rounds.pop(p, None)
        if giving:  # released in the background: each waits for its writes to drain
            task = asyncio.create_task(self._release_many(giving, reason="rebalance"))
            self._bg.add(task)
            task.add_done_callback(self._bg.discard)
        if acquired:  # one line per round, not per partition
            self._log.info("partitions acquired", partitions=_ranges(acquired), owned=len(self._leases),
                           members=len(self.members))

    async def _renew(self, t0: float) -> None:
        for p in [p for p, lease in self._leases.items() if p not in self._releasing and t0 > lease.valid_until]:
            # Not renewed in time (NATS away, or this process was frozen):
            # it stopped writing already; now let the subscription go too.
            self._log.warning("partition lease lapsed", partition=p)
            self.counts["lapsed"] += 1
            self._drop(p)
        owned = [p for p in self._leases if p not in self._releasing]
        if not owned:
            return
        results = await asyncio.gather(*(self._update(p) for p in owned), return_exceptions=True)
        for p, res in zip(owned, results):
            if isinstance(res, int):
                self.counts["renewals"] += 1
                self._leases[p] = _Lease(res, t0 + self._ttl * TRUST)
            elif isinstance(res, nats.js.errors.KeyWrongLastSequenceError):
                self._log.warning("partition lease lost", partition=p)
                self.counts["lost"] += 1
                self._drop(p)
            else:
                self.counts["renewal_failures"] += 1
            # Other errors (timeout, NATS away): keep the lease until it lapses.

    async def _update(self, p: int) -> int:
        """``kv.update(p.<n>, instance, last=revision)``: the new revision."""
        last = self._leases[p].revision
        if self._replies is None:
            revision: int = await self._bucket_kv().update(f"p.{p}", self.instance.encode(), last=last)
            return revision
        msg = await self._replies.call(f"$KV.{self._bucket}.p.{p}", self.instance.encode(),
                                       headers=encode_headers({"Nats-Expected-Last-Subject-Sequence": str(last)}),
                                       timeout=self._ttl / 3)
        ack = decode_ack(msg.data)
        if ack.error is not None:
            if ack.error.err_code == WRONG_LAST_SEQUENCE:
                raise nats.js.errors.KeyWrongLastSequenceError(description=ack.error.description)
            raise nats.js.errors.APIError(description=ack.error.description)
        return ack.seq

    async def _acquire(self, p: int, t0: float) -> bool:
        try:
            rev = await self._bucket_kv().create(f"p.{p}", self.instance.encode())
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.BadRequestError):
            return False  # someone else was faster
        except nats.js.errors.KeyNotFoundError:
            # nats-py's create, refused because the key held a value, reads the
            # key to tell a deleted one; that read finding nothing (the lease
            # expired in between) raised out of the round and ended the process
            # at its start (seen by bench faults, restart-all). Next round.
            return False
        self._leases[p] = _Lease(rev, t0 + self._ttl * TRUST)
        self._free_rounds.pop(p, None)
        self.owners[p] = self.instance
        self.counts["acquired"] += 1
        self._on_acquire(p)
        return True

    async def _release_many(self, ps: list[int], *, reason: str) -> None:
        for p in ps:
            self._on_release(p)  # stop taking sends for all of them first
        await asyncio.gather(*(self._release(p, drain=True) for p in ps))
        self.counts["released"] += len(ps)
        if ps:
            self._log.info("partitions released", partitions=_ranges(ps), reason=reason)

    async def _release(self, p: int, *, drain: bool) -> None:
        lease = self._leases.get(p)
        if lease is None or p in self._releasing:
            return
        self._releasing.add(p)
        self._on_release(p)
        try:
            deadline = time.monotonic() + DRAIN_SEC
            while drain and self._inflight(p) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            try:
                await self._bucket_kv().delete(f"p.{p}", last=lease.revision)
            except (TimeoutError, nats.errors.Error, nats.js.errors.Error):
                pass  # it lapses by itself
        finally:
            self._releasing.discard(p)
            self._leases.pop(p, None)

    def _drop(self, p: int) -> None:
        if self._leases.pop(p, None) is not None:
            self._on_release(p)


def _ranges(ps: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> "0-2,5,7-8": short log lines."""
    out: list[str] = []
    for p in sorted(ps):
        if out and out[-1].split("-")[-1] == str(p - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{p}"
        else:
            out.append(str(p))
    return ",".join(out)
