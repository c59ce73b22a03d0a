"""Optional extras: say which one a setting needs before a role imports it.

``--store cassandra://…`` without cassandra-driver used to end in a
``ModuleNotFoundError`` traceback from deep inside the store. The CLI checks
here first, for the roles it is about to run, and stops with one line that
holds the install command. :func:`for_module` maps a ``ModuleNotFoundError``
that still gets through (a code path the check does not know) to the same
line.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from switchboard import trace_otel
from switchboard.config import Settings
from switchboard.errors import ConfigError


class MissingExtra(ConfigError):
    """A setting asks for an optional extra that is not installed."""


@dataclass(frozen=True)
class Extra:
    name: str  # the extra in pyproject.toml: pip install 'switchboard[<name>]'
    modules: tuple[str, ...]  # what it installs (import names), all needed
    roles: frozenset[str]  # the roles that would import it
    wanted: Callable[[Settings], bool]
    asked_by: str  # what asks for it, as an operator wrote it

    @property
    def install(self) -> str:
        return f"pip install 'switchboard[{self.name}]'"


EXTRAS = (
    Extra("cassandra", ("cassandra",), frozenset({"sequencer", "archiver"}),
          lambda s: s.store_url.startswith("cassandra://"), "store_url cassandra://… (--store)"),
    Extra("redis", ("redis",), frozenset({"presence"}),
          lambda s: s.presence_url.split("://", 1)[0] in ("redis", "rediss"), "presence_url redis://… (--presence)"),
    # The roles that record trace hops (switchboard/trace.py) export them when OTEL_* ask.
    Extra("otel", ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"),
          frozenset({"edge", "sequencer", "archiver", "pusher"}),
          lambda s: trace_otel.wanted(), "the OTEL_* variables (trace export)"),
)


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ModuleNotFoundError, ValueError):  # a parent package is missing / blocked
        return False


def check(settings: Settings, roles: Iterable[str]) -> None:
    """Raise :class:`MissingExtra` (one line, with the install command) if
    a setting these roles act on needs an extra that is not installed."""
    running = set(roles)
    for extra in EXTRAS:
        if running & extra.roles and extra.wanted(settings) and not all(map(installed, extra.modules)):
            raise MissingExtra(f"{extra.asked_by} needs the '{extra.name}' extra, which is not installed; "
                               f"install with: {extra.install}")


def for_module(exc: ModuleNotFoundError) -> MissingExtra | None:
    """The one-line error for a missing module that belongs to an extra, else None."""
    name = exc.name or ""
    for extra in EXTRAS:
        if any(name == m.split(".")[0] or name.startswith(m.split(".")[0] + ".") for m in extra.modules):
            return MissingExtra(f"module {name!r} is missing: it comes with the '{extra.name}' extra; "
                                f"install with: {extra.install}")
    return None


__all__ = ["EXTRAS", "Extra", "MissingExtra", "check", "for_module", "installed"]
