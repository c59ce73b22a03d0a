"""Guards on borrowed library internals (switchboard/compat/).

What it protects: a library upgrade that renames or drops something
Switchboard borrows (nats-py's ``Client._server_info`` and micro's STATS
dispatch, the websockets sans-I/O surface the edge drives) must stop the process at import with ONE
clear IncompatibleLibrary naming the library, its version and what is
missing, never let it run on with a feature quietly off (before the guards, a
rename of such an attribute silently disabled the code that read it). Also: the installed
versions pass, a version outside the supported range is refused, and each
module's supported range is the one pyproject.toml pins.

Table-driven: every entry of a module's BORROWED has a row in BREAKERS that
removes it (test_every_borrowed_name_has_a_breaker keeps them in step).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import re
import tomllib
import types
from collections.abc import Callable
from pathlib import Path

import pytest

from switchboard import compat
from switchboard.compat import cassandra_driver, natspy, websockets as ws_compat
from switchboard.errors import ConfigError, IncompatibleLibrary

ROOT = Path(__file__).resolve().parents[2]
MODULES = [natspy, ws_compat, cassandra_driver]


# -- the installed versions --------------------------------------------------------
@pytest.mark.parametrize("mod", MODULES, ids=lambda m: m.DIST)
def test_installed_versions_pass(mod):
    assert mod.check() == importlib.metadata.version(mod.DIST) == mod.VERSION


@pytest.mark.parametrize("mod", MODULES, ids=lambda m: m.DIST)
def test_supported_range_is_the_pyproject_pin(mod):
    """SUPPORTED and the requirement in pyproject.toml are one range: a pin
    widened in one place only would let an unchecked version in (or refuse
    the one pip installed)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    specs = [re.sub(r"\s+", "", d.split(";")[0])[len(mod.DIST):] for d in deps
             if re.match(rf"{re.escape(mod.DIST)}\s*[<>=!~]", d)]
    assert specs == [mod.SUPPORTED.replace(" ", "")]


# -- versions ------------------------------------------------------------------------
@pytest.mark.parametrize(("mod", "version"), [
    (natspy, "2.15.3"), (natspy, "2.17.0"), (natspy, "3.0.0"), (natspy, "2.17.0rc1"),
    (ws_compat, "16.0"), (ws_compat, "18.0"), (ws_compat, "18.0rc1"), (ws_compat, "9.1"),
    (cassandra_driver, "3.28.0"), (cassandra_driver, "3.31.0"), (cassandra_driver, "4.0.0"),
], ids=lambda v: getattr(v, "DIST", v))
def test_a_version_outside_the_range_is_refused(monkeypatch, mod, version):
    monkeypatch.setattr(compat, "installed_version", lambda dist: version)
    with pytest.raises(IncompatibleLibrary) as err:
        mod.check()
    assert mod.DIST in err.value.message and version in err.value.message and mod.SUPPORTED in err.value.message
    assert err.value.code == "incompatible_library"
    assert isinstance(err.value, ConfigError)  # the CLI prints it as one line, like any config error


@pytest.mark.parametrize(("mod", "version"), [
    (natspy, "2.16.0"), (natspy, "2.16.9"), (ws_compat, "17.0"), (ws_compat, "17.9.1"),
    (cassandra_driver, "3.29.0"), (cassandra_driver, "3.30.1"),
], ids=lambda v: getattr(v, "DIST", v))
def test_a_version_inside_the_range_passes(monkeypatch, mod, version):
    monkeypatch.setattr(compat, "installed_version", lambda dist: version)
    assert mod.check() == version


def test_a_library_that_is_not_installed_is_named():
    with pytest.raises(IncompatibleLibrary, match="no-such-dist-sb is not installed"):
        compat.installed_version("no-such-dist-sb")


@pytest.mark.parametrize("spec", [">=2.16", "<3", "==2.16.0", ">=2.16,<=2.17", "2.16"])
def test_a_range_needs_both_bounds(spec):
    with pytest.raises(ValueError):
        compat.parse_spec(spec)


# -- borrowed attributes -----------------------------------------------------------------
def _drop_server_info(mp: pytest.MonkeyPatch) -> None:
    """nats-py's Client no longer sets _server_info in __init__ (renamed)."""
    from nats.aio.client import Client

    init = Client.__init__

    def renamed(self, *a, **kw):
        init(self, *a, **kw)
        self._server_information = self.__dict__.pop("_server_info")

    mp.setattr(Client, "__init__", renamed)


def _stats_handler_renamed(mp: pytest.MonkeyPatch) -> None:
    """nats-py's micro Service renames its private STATS handler."""
    from nats.micro.service import Service

    mp.delattr(Service, "_handle_stats_request")


def _stats_handler_ignores_stats(mp: pytest.MonkeyPatch) -> None:
    """The handler is still there but builds its answer itself, not with
    self.stats(): rpc.stats.MicroService's counters would vanish from
    `nats micro stats` without a word (errors 0 again)."""
    from nats.micro.service import Service

    async def own_answer(self, msg) -> None:
        await msg.respond(data=b'{"endpoints": []}')

    mp.setattr(Service, "_handle_stats_request", own_answer)


def _endpoint_stats_without(field: str) -> Callable[[pytest.MonkeyPatch], None]:
    def drop(mp: pytest.MonkeyPatch) -> None:
        import nats.micro.service as micro

        keep = [(f.name, f.type, f) for f in dataclasses.fields(micro.EndpointStats) if f.name != field]
        mp.setattr(micro, "EndpointStats", dataclasses.make_dataclass("EndpointStats", keep))

    return drop


def _without(name: str) -> Callable[[pytest.MonkeyPatch], None]:
    """A websockets Protocol method/property gone (deleted where it is defined)."""

    def drop(mp: pytest.MonkeyPatch) -> None:
        owner = next(c for c in ws_compat.ServerProtocol.__mro__ if name in vars(c))
        mp.delattr(owner, name)

    return drop


def _state_without(member: str) -> Callable[[pytest.MonkeyPatch], None]:
    def drop(mp: pytest.MonkeyPatch) -> None:
        members = {m.name: m for m in ws_compat.State if m.name != member}
        mp.setattr(ws_compat, "State", types.SimpleNamespace(**members))

    return drop


def _request_without(field: str) -> Callable[[pytest.MonkeyPatch], None]:
    def drop(mp: pytest.MonkeyPatch) -> None:
        keep = [(f.name, f.type, f) for f in dataclasses.fields(ws_compat.Request) if f.name != field]
        mp.setattr(ws_compat, "Request", dataclasses.make_dataclass("Request", keep))

    return drop


BREAKERS: list[tuple[types.ModuleType, str, Callable[[pytest.MonkeyPatch], None]]] = [
    (natspy, "nats.aio.client.Client._server_info", _drop_server_info),
    (natspy, "nats.micro.service.Service._handle_stats_request -> self.stats()", _stats_handler_renamed),
    (natspy, "nats.micro.service.Service._handle_stats_request -> self.stats()", _stats_handler_ignores_stats),
    *((natspy, "nats.micro.service.EndpointStats fields", _endpoint_stats_without(f)) for f in natspy.STATS_FIELDS),
    (ws_compat, "websockets.protocol.State.CONNECTING", _state_without("CONNECTING")),
    (ws_compat, "websockets.protocol.State.OPEN", _state_without("OPEN")),
    (ws_compat, "websockets.protocol.SEND_EOF == b''", lambda mp: mp.setattr(ws_compat, "SEND_EOF", b"\0")),
    *((ws_compat, f"websockets.server.ServerProtocol.{n}", _without(n)) for n in ws_compat.PROTOCOL_SURFACE),
    (ws_compat, "websockets.http11.Request.method", _request_without("method")),
    (ws_compat, "websockets.http11.Request.protocol", _request_without("protocol")),
    # data_to_send() handing out a copy: frames the edge appends to writes would never be sent
    (ws_compat, "websockets.protocol.Protocol.writes (a list that data_to_send() hands out)",
     lambda mp: mp.setattr(ws_compat, "ServerProtocol", type("P", (ws_compat.ServerProtocol,),
                                                              {"data_to_send": lambda self: list(self.writes)}))),
    (cassandra_driver, "cassandra.query.BatchStatement._add_statement_and_params",
     lambda mp: mp.setattr(cassandra_driver, "BatchStatement", type("BatchStatement", (), {}))),
]


@pytest.mark.parametrize(("mod", "name", "breaker"), BREAKERS, ids=[b[1] for b in BREAKERS])
def test_a_missing_borrowed_attribute_is_named(monkeypatch, mod, name, breaker):
    breaker(monkeypatch)
    with pytest.raises(IncompatibleLibrary) as err:
        mod.check()
    msg = err.value.message
    assert name in msg and mod.DIST in msg and importlib.metadata.version(mod.DIST) in msg
    others = [n for n in mod.BORROWED if n != name and n not in name]
    assert not any(n in msg for n in others), msg  # the one that is gone, not a list of suspects


@pytest.mark.parametrize("mod", MODULES, ids=lambda m: m.DIST)
def test_every_borrowed_name_has_a_breaker(mod):
    assert {name for m, name, _ in BREAKERS if m is mod} == set(mod.BORROWED)


def test_the_check_runs_at_import(monkeypatch):
    """Importing the guard module is what checks: a process that imports it
    (switchboard.tls, edge.transport) cannot start on an unsupported library."""
    monkeypatch.setattr(compat, "installed_version", lambda dist: "99.0")
    with pytest.raises(IncompatibleLibrary, match="websockets 99.0"):
        importlib.reload(ws_compat)
    monkeypatch.undo()
    importlib.reload(ws_compat)
    assert ws_compat.OPEN is ws_compat.State.OPEN


# -- what callers use ------------------------------------------------------------------------
def test_server_info_reads_the_info_of_the_connection():
    from nats.aio.client import Client

    nc = Client()
    assert natspy.server_info(nc) == {}  # not connected: no INFO yet
    nc._server_info = {"tls_required": True}  # what nats-py stores on INFO (the borrowed attribute)
    assert natspy.server_info(nc) == {"tls_required": True}


def test_the_edge_uses_the_guarded_states():
    from websockets.protocol import State

    import edge.transport

    assert edge.transport.OPEN is State.OPEN and edge.transport.CONNECTING is State.CONNECTING


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_text_frame_is_what_websockets_serializes(size):
    """The edge writes its text frames itself (switchboard.compat.websockets.text_frame);
    each length class of the header (7-bit, 16-bit, 64-bit) must be byte for
    byte websockets' own unmasked frame, or clients would read garbage."""
    from websockets.frames import Frame, Opcode

    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert ws_compat.text_frame(data) == Frame(Opcode.TEXT, data).serialize(mask=False, extensions=[])


def test_frames_appended_to_writes_go_out_in_order_with_the_close():
    """What the edge appends to ``writes`` leaves in data_to_send() before a
    close sent after it, as send_text's frames would."""
    from websockets.frames import Close, Frame, Opcode
    from websockets.protocol import State
    from websockets.streams import StreamReader

    p = ws_compat.ServerProtocol()
    p.state = State.OPEN
    p.writes.append(ws_compat.text_frame(b'{"a":1}'))
    p.send_close(1000, "bye")
    wire = b"".join(p.data_to_send())
    reader = StreamReader()
    reader.feed_data(wire)
    frames = []
    for _ in range(2):
        gen = Frame.parse(reader.read_exact, mask=False)
        try:
            next(gen)
        except StopIteration as done:
            frames.append(done.value)
    assert [f.opcode for f in frames] == [Opcode.TEXT, Opcode.CLOSE]
    assert frames[0].data == b'{"a":1}' and Close.parse(frames[1].data).code == 1000
