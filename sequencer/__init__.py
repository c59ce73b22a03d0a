"""The sequencer: orders each conversation, persists before delivering, fans out.

Conversations hash into partitions; each partition is written by exactly one
sequencer process at a time (a lease in a NATS KV bucket,
:mod:`sequencer.partitions`), which handles its sends serially through
:mod:`sequencer.pipeline`. Every write to MESSAGES is also fenced with
``Nats-Expected-Last-Subject-Sequence``, so two processes that both believe
they own a partition during a handover can never fork a conversation.
"""
