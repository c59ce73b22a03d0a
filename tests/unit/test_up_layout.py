"""`switchboard up --layout`: which roles share a child process."""

from __future__ import annotations

import pytest

from sbctl.cli import build_parser
from sbctl.supervisor import DEFAULT_LAYOUT, parse_layout


def test_default_layout_is_sequencer_edge_and_the_light_roles_together():
    assert parse_layout(DEFAULT_LAYOUT) == [("sequencer",), ("edge",), ("archiver", "presence", "pusher")]
    assert build_parser().parse_args(["up"]).layout == DEFAULT_LAYOUT


def test_custom_layouts():
    assert parse_layout("sequencer+edge, archiver+presence+pusher") == [
        ("sequencer", "edge"), ("archiver", "presence", "pusher")]
    assert len(parse_layout("sequencer,edge,archiver,presence,pusher")) == 5


@pytest.mark.parametrize("text,error", [
    ("sequencer,edge,archiver+presence", "missing ['pusher']"),
    ("sequencer,edge,edge,archiver+presence+pusher", "named twice ['edge']"),
    ("sequencer,edge,archiver+presence+pusher+web", "unknown roles ['web']"),
])
def test_bad_layouts_say_what_is_wrong(text, error):
    with pytest.raises(ValueError, match=error.replace("[", r"\[").replace("]", r"\]")):
        parse_layout(text)
