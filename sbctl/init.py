"""The admin step: create (or bring up to date) everything the roles use in
JetStream, so that no long-running role needs the JetStream management API.

- the streams MESSAGES, INBOX, PUSH, DEADLETTER, SB_TRACE (switchboard/bus/streams.py);
- the archiver's durable pull consumer on MESSAGES (archiver/consumer.py);
- the pusher's durable pull consumer on PUSH (pusher/service.py);
- the sequencers' partition lease bucket (sequencer/partitions.py).

Run by ``switchboard init`` (with an admin NATS user: ``admin`` in
nats/accounts.conf), by ``switchboard up`` before it starts the roles, and by
the in-process fabric (tests, ``up --layout single``) before its roles.
Idempotent: a second run changes nothing; a changed definition (e.g.
``SWITCHBOARD_REPLICAS``) is applied to the existing stream or consumer.
The roles only check that what they use exists and stop with one line naming
``switchboard init`` if not (switchboard/bus/streams.py ``NotInitialized``).
"""

from __future__ import annotations

from nats.aio.client import Client as NATS

from switchboard.bus import streams
from switchboard.config import Settings


async def init_fabric(nc: NATS, settings: Settings) -> list[str]:
    """Create or update every stream, consumer and KV bucket; returns one
    line per item for the operator."""
    from archiver.consumer import DURABLE, ensure_consumer
    from pusher.service import ensure_push_consumer
    from sequencer.partitions import bucket_name, ensure_bucket

    js = nc.jetstream()
    done: list[str] = []
    await streams.ensure_streams(js, settings)
    done += [f"stream {cfg.name}" for cfg in streams.definitions(settings)]
    messages, _, push = streams.names(settings)
    await ensure_consumer(js, messages, settings)
    done.append(f"consumer {messages}/{DURABLE}")
    durable = await ensure_push_consumer(js, settings)
    done.append(f"consumer {push}/{durable}")
    await ensure_bucket(nc, settings)
    done.append(f"kv bucket {bucket_name(settings)}")
    return done
