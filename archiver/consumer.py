"""The archiver's durable pull consumer on MESSAGES.

One durable (``archiver``) shared by every archiver instance: a fetch hands a
batch to exactly one of them, so instances scale out and a restarted one
resumes from the ack floor. ``nats consumer report MESSAGES`` shows its lag
(unprocessed + ack pending).

Created by the admin step (``switchboard init`` / ``up``:
sbctl/init.py); the archiver only checks it exists.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from switchboard.config import Settings

DURABLE = "archiver"


def consumer_config(settings: Settings) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=DURABLE,
        description="Copies every message into the long-term store",
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.archive_ack_wait_sec,  # how soon a crashed archiver's batch goes to another
        # Deliveries before JetStream gives up on a message. The writer
        # dead-letters a message that keeps failing before this is reached,
        # so the server never silently drops one.
        max_deliver=settings.archive_max_deliver,
        # Room for the batches being written (write_window) plus the one
        # fetched and waiting for a slot, per instance, for 4 instances;
        # bounds what a crash puts back in flight. A fifth instance would
        # get short batches, not stall.
        max_ack_pending=settings.archive_batch * (settings.archive_write_window + 1) * 4,
        filter_subject=settings.subjects.msg_all,
    )


async def ensure_consumer(js: JetStreamContext, stream: str, settings: Settings) -> None:
    """Create the durable, or bring an existing one to this definition."""
    await js.add_consumer(stream, consumer_config(settings))
