"""The sequencer: orders each conversation, persists before delivering, fans out.

Runs in a queue group on ``sb.send.*``; any number of instances stay correct
because every write to MESSAGES is fenced with
``Nats-Expected-Last-Subject-Sequence``.
"""

from sequencer.service import Sequencer

__all__ = ["Sequencer"]
