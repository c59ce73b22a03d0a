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


def test_a_reserved_port_is_never_planned_for_a_child(monkeypatch):
    # CI once saw `up` plan a child's metrics port on the edge's own --port
    # (chosen by the test process, still unbound): the child bound it first
    # and the edge died with "address in use" at each restart. serve_up
    # reserves --port before it plans; the planner must then skip it even
    # when the random pick lands on it.
    from sbctl import embedded
    from sbctl.supervisor import metrics_plan

    picks = iter([24_001, 24_002, 24_003, 24_004])
    monkeypatch.setattr(embedded.random, "randrange", lambda lo, hi: next(picks))
    monkeypatch.setattr(embedded, "_handed", set())
    embedded.reserve(24_001)
    plan = metrics_plan([("sequencer",), ("edge",)], 0)
    assert [listen for _, listen in plan] == ["127.0.0.1:24002", "127.0.0.1:24003"]
