"""Every fenced code block of README.md and docs/*.md is checked, or says why not.

What a block is checked by comes from its info string and from an HTML
comment on the line before it (blank lines may sit between):

| block | check |
|---|---|
| ```python | runs as its own program against a live ``switchboard up``; it reads ``SB_URL``, ``SB_TOKEN_ALICE``, ``SB_TOKEN_BOB``, ``SB_NATS_URL`` and must exit 0 |
| ``<!-- run: up -->`` | its ``$ switchboard up ...`` line is how this test starts that deployment (data dir and ports replaced by free ones); the banner lines shown must be printed |
| ``<!-- run: up-output -->`` | lines ``switchboard up`` prints: each is in what it printed, any number standing for any number |
| ``<!-- run: transcript -->`` | each ``$ command`` runs against the deployment; its exit status must be the ``exit N`` shown after it (0 when none is shown); service and metric names in the shown output must be in the real one; ``switchboard trace`` timelines must list the same stages |
| ``<!-- run: client-frames -->`` / ``server-frames`` | each line (or the whole block) is a wire-protocol v1 frame of that direction, with no field its frame type lacks |
| ``<!-- run: settings -->`` | a settings file the loader accepts |
| ``<!-- run: pytest -->`` | a test module: pytest runs it with the e2e fixtures (tests/conftest.py, tests/e2e/conftest.py) and it passes |
| ``<!-- run: cassandra-schema -->`` | the tables are the CREATE TABLE statements of switchboard/store/cassandra.py |
| ``<!-- run: cli-flags -->`` | commands too long to run here (benchmarks): each ``switchboard ...`` command's subcommand exists and knows every ``--flag`` shown (its ``--help``); each ``scripts/...`` is an executable file |
| ``<!-- not-run: REASON -->`` | not a test item (CI allows no skips): test_not_run_blocks_say_why checks each has a reason and lists them all |

A block with none of these fails (test_block[...]), and so does an indented
code block (test_no_indented_code_blocks): a new block cannot slip into the
docs unchecked. The shown outputs of docs/operations.md come from a
deployment with the values in DEMO; the commands run with this test's values
put in their place. Commands of the NATS CLI need ``nats`` on PATH
(scripts/test installs it): without it, those blocks fail under ``CI=true``
and are skipped elsewhere (saying so). To refresh a shown output, run with
``SB_DOCS_CAPTURE=DIR``: each command's real output is written to DIR.
"""  # noqa: E501 - the table's rows are one line each

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import msgspec
import nats
import pytest

from sbctl.embedded import free_port
from switchboard import events, frames
from switchboard_client import Client
from tests.e2e.helpers import PYTHON, REPO, run_process, until
from tests.services.common import require_service

DOCS = ("README.md", *sorted(f"docs/{p.name}" for p in (REPO / "docs").glob("*.md")))
BLOCK_TIMEOUT = 60.0
COMMAND_TIMEOUT = 30.0
# The deployment docs/operations.md's outputs were captured on (its section 1
# says so): these values in a command or a shown output stand for the live one's.
DEMO_DATA_DIRS = ("/tmp/opsdemo/data", "/tmp/g-runbook/data")
DEMO_EDGE, DEMO_NATS, DEMO_MONITOR = "127.0.0.1:47497", "127.0.0.1:42629", "127.0.0.1:54709"
KINDS = ("python", "up", "up-output", "transcript", "client-frames", "server-frames", "settings", "pytest",
         "cassandra-schema", "cli-flags")
NATS_CLI = shutil.which("nats")

FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
MARKER = re.compile(r"^\s*<!--\s*(?P<what>run|not-run):\s*(?P<arg>.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    doc: str
    line: int  # of the opening fence, 1-based
    info: str
    code: str
    marker: tuple[str, str] | None  # ("run", kind) or ("not-run", reason)

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def kind(self) -> str | None:
        """How this block is checked; None: not at all (an error unless not-run)."""
        if self.marker is not None:
            return self.marker[1] if self.marker[0] == "run" else "not-run"
        return "python" if self.info.split()[:1] == ["python"] else None


def parse(text: str, doc: str = "<text>") -> list[Block]:
    """The fenced blocks of a Markdown text (fences may be indented, as in a
    list item; the body loses that indentation)."""
    lines = text.split("\n")
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = len(m["indent"]), m["fence"]
        close = re.compile(rf"^ *{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        body = "\n".join(ln[indent:] if ln[:indent].strip() == "" else ln for ln in lines[i + 1:j])
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        mk = MARKER.match(lines[k]) if k >= 0 else None
        out.append(Block(doc, i + 1, m["info"].strip(), body + "\n", (mk["what"], mk["arg"]) if mk else None))
        i = j + 1
    return out


ALL = [b for doc in DOCS for b in parse((REPO / doc).read_text(), doc)]


def test_the_parser():
    """A fence in a list item, a marker before a block, a block without one:
    a parser that missed any of them would let blocks through unchecked."""
    text = ("intro\n\n<!-- not-run: a reason -->\n```sh\nrm -rf /\n```\n\n1. step\n"
            "   ```\n   $ echo hi\n   hi\n   ```\n\n<!-- run: transcript -->\n\n~~~\n$ true\n~~~\n"
            "```python\nx = 1\n```\n")
    got = parse(text)
    assert [(b.line, b.kind) for b in got] == [(4, "not-run"), (9, None), (16, "transcript"), (19, "python")]
    assert got[0].marker == ("not-run", "a reason")
    assert got[1].code == "$ echo hi\nhi\n"


def indented_code_blocks(text: str) -> list[int]:
    """Lines starting an indented code block (4 spaces after a blank line,
    outside fences and list items): they cannot carry a marker."""
    lines, out, fence = text.split("\n"), [], None
    for i, ln in enumerate(lines):
        m = FENCE.match(ln)
        if m and fence is None:
            fence = m["fence"][0]
            continue
        if fence is not None:
            if re.match(rf"^ *{re.escape(fence)}{{3,}}\s*$", ln):
                fence = None
            continue
        if not ln.startswith("    ") or not ln.strip() or i == 0 or lines[i - 1].strip():
            continue
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        before = lines[k] if k >= 0 else ""
        if not before.startswith("  ") and not re.match(r"^\s*([-*+]|\d+\.)\s", before):
            out.append(i + 1)
    return out


def test_no_indented_code_blocks():
    """An indented block has no place for a marker, so it would go unchecked:
    fence it (```) and mark it."""
    found = [f"{doc}:{n}" for doc in DOCS for n in indented_code_blocks((REPO / doc).read_text())]
    assert not found, f"indented code blocks (fence and mark them): {found}"
    assert indented_code_blocks("text\n\n    code\n\n- item\n\n    continued\n") == [3]


def test_the_docs_have_blocks():
    """The extraction itself: a parser that matched nothing would pass vacuously."""
    by_kind = Counter(b.kind for b in ALL)
    assert by_kind["python"] >= 7 and by_kind["transcript"] >= 10, by_kind
    assert {b.doc for b in ALL if b.kind == "python"} >= {"README.md", "docs/sdk.md"}
    assert sum(1 for b in ALL if b.kind == "up") == 1, "one block says how the deployment starts"


# -- the live deployment ---------------------------------------------------------------
@dataclass
class Live:
    data: str
    edge: str  # host:port
    nats_url: str
    monitor: str  # host:port of nats-server's monitoring
    env: dict[str, str]  # for commands and programs
    banner: str  # what `up` printed
    clients: tuple[Client, ...] = ()  # the runbook's devices: closing one acks, so they stay open

    def substitute(self, text: str) -> str:
        for d in DEMO_DATA_DIRS:
            text = text.replace(d, self.data)
        nats_hostport = self.nats_url.removeprefix("nats://")
        return text.replace(DEMO_EDGE, self.edge).replace(DEMO_NATS, nats_hostport).replace(DEMO_MONITOR, self.monitor)


def up_block() -> Block:
    (b,) = [b for b in ALL if b.kind == "up"]
    return b


def commands(block: Block) -> list[tuple[str, list[str], int]]:
    """(command, shown output lines, shown exit status) of each ``$ `` line."""
    out: list[tuple[str, list[str], int]] = []
    for line in block.code.rstrip("\n").split("\n"):
        if line.startswith("$ "):
            out.append((line[2:], [], 0))
        elif out and re.fullmatch(r"exit (\d+)", line.strip()):
            cmd, shown, _ = out[-1]
            out[-1] = (cmd, shown, int(line.split()[1]))
        elif out:
            out[-1][1].append(line)
    return out


def strip_comment(cmd: str) -> str:
    """A shell command without its trailing ``# comment`` (none of ours quotes a #)."""
    return re.sub(r"\s+#\s.*$", "", cmd)


async def shell(cmd: str, env: dict[str, str], cwd: str, timeout: float = COMMAND_TIMEOUT) -> tuple[int, str]:
    return await run_process("bash", "-o", "pipefail", "-c", cmd, cwd=cwd, env=env, timeout=timeout)


@pytest.fixture(scope="module")
async def live(tmp_path_factory):
    """``switchboard up`` started by the command docs/operations.md shows, on a
    fresh data dir and free ports, then the runbook's messages (section 8)."""
    tmp = tmp_path_factory.mktemp("docs")
    data = str(tmp / "data")
    port, nats_port = free_port(), free_port()
    bindir = str(Path(sys.executable).parent)  # the `switchboard` console script
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SB_", "SWITCHBOARD_", "NATS_"))}
    env.update(PATH=f"{bindir}:{env.get('PATH', '')}", PYTHONUNBUFFERED="1", XDG_CONFIG_HOME=str(tmp / "xdg"))
    (cmd, shown, _), = commands(up_block())
    cmd = cmd.replace(DEMO_DATA_DIRS[0], data).replace(DEMO_NATS.split(":")[1], str(nats_port))
    cmd = cmd.replace(DEMO_EDGE.split(":")[1], str(port))
    log = open(tmp / "up.log", "w+")
    proc = await asyncio.create_subprocess_exec("bash", "-c", f"exec {cmd}", cwd=tmp, env=env, stdout=log,
                                                stderr=asyncio.subprocess.STDOUT)
    try:
        def up() -> bool:
            if "Switchboard is up" in (tmp / "up.log").read_text():
                return True
            assert proc.returncode is None, f"`{cmd}` exited:\n{(tmp / 'up.log').read_text()[-3000:]}"
            return False

        await until(up, 90, lambda: f"`{cmd}` to come up:\n{(tmp / 'up.log').read_text()[-3000:]}", every=0.2)
        await asyncio.sleep(0.5)  # the lines after the banner
        text = (tmp / "up.log").read_text()
        # where docs/operations.md section 1 says to look for it
        monitor = re.search(r"Starting http monitor on (\S+)", (Path(data) / "nats" / "nats-server.log").read_text())
        assert monitor, "nats-server's log does not say its monitoring port"
        nats_url = f"nats://127.0.0.1:{nats_port}"
        env.update(NATS_URL=nats_url)
        lv = Live(data=data, edge=f"127.0.0.1:{port}", nats_url=nats_url, monitor=monitor[1], env=env, banner=text)
        tokens = {}
        for user in ("alice", "bob"):
            code, out = await shell(f"switchboard token {user} --data {data}", env, str(tmp))
            assert code == 0, out
            tokens[user] = out.strip().splitlines()[-1]
        lv.env = {**env, "SB_URL": f"ws://{lv.edge}/ws", "SB_NATS_URL": nats_url, "SB_TOKEN_ALICE": tokens["alice"],
                  "SB_TOKEN_BOB": tokens["bob"], "PYTHONPATH": str(REPO)}
        lv.clients = await seed_runbook(lv)
        yield lv
        for c in lv.clients:
            await c.close()
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


async def seed_runbook(lv: Live) -> tuple[Client, ...]:
    """The messages docs/operations.md section 8 traces, sent as it tells:
    Alice to Bob (online on two devices that ack) m-1001 traced and m-1005
    not; to Carol (an Android phone registered, then offline) m-1002; to Erin
    (offline, no device) m-1003; to a group of Bob and Dave she is not in,
    m-1004. And one undecodable PUSH entry, which the pusher dead-letters
    (section 2, "Dead letters"). Returns the devices still connected."""
    url = lv.env["SB_URL"]

    async def sdk(user: str, **kw) -> Client:
        code, out = await shell(f"switchboard token {user} --data {lv.data}", lv.env, lv.data)
        assert code == 0, out
        return await Client(url=url, token=out.strip().splitlines()[-1], **kw).connect()

    nc = await nats.connect(lv.nats_url)
    try:
        carol = await sdk("carol")
        await carol.register_push("fcm", "fcm-token-of-carols-phone-0123456789")
        await carol.close()
        group = events.ConvCreateRequest(creator="bob", members=["bob", "dave"], title="",
                                         conv="g-nJ_jM3pQMcZT0lSRShWa")
        reply = await nc.request("sb.api.conv.create", events.encode(group), timeout=10)
        made = events.decoder(events.ConvReply).decode(reply.data)
        assert made.error is None, made.error
        alice = await sdk("alice", auto_ack=False)  # the documented timelines have no ack from the sender
        devices = (alice, await sdk("bob"), await sdk("bob"))
        await alice.send(to="bob", body="hi", id="m-1001", trace=True)
        await alice.send(to="carol", body="hi", id="m-1002", trace=True)
        await alice.send(to="erin", body="hi", id="m-1003", trace=True)
        with pytest.raises(Exception, match="member"):
            await alice.send(conv="g-nJ_jM3pQMcZT0lSRShWa", body="hi", id="m-1004", trace=True)
        await alice.send(to="bob", body="hi again", id="m-1005")
        await nc.publish("sb.push.nobody", b"not json")
        await nc.flush()
        return devices
    finally:
        await nc.close()


# -- the checks ---------------------------------------------------------------------------
LIVE_KINDS = {"python", "up", "up-output", "transcript"}  # need the deployment
LIVE = [b for b in ALL if b.kind in LIVE_KINDS]
# Not-run blocks are no items (a skip per block would make CI's "no skips"
# impossible): test_not_run_blocks_say_why covers them together.
NOT_RUN = [b for b in ALL if b.kind == "not-run"]
OTHERS = [b for b in ALL if b.kind not in LIVE_KINDS and b.kind != "not-run"]


def test_not_run_blocks_say_why():
    """Each ``<!-- not-run: REASON -->`` block gives a reason of a few words
    (what checks it instead, or why nothing can). The blocks and their
    reasons are printed (``pytest -rP`` shows them) and listed in the failure
    message, so a review sees at once everything the docs keep out of CI."""
    listing = "\n".join(f"  {b.id}: {b.marker[1] if b.marker else ''}" for b in NOT_RUN)
    print(f"{len(NOT_RUN)} blocks not run:\n{listing}")
    assert NOT_RUN, "no not-run block found: the parser would let them through unlisted"
    bad = [b.id for b in NOT_RUN if len((b.marker[1] if b.marker else "").split()) < 3]
    assert not bad, f"say why these are not run (a few words): {bad}\nevery not-run block:\n{listing}"


@pytest.mark.parametrize("block", OTHERS, ids=[b.id for b in OTHERS])
async def test_block(block: Block, tmp_path):
    kind = block.kind
    if kind is None:
        pytest.fail(f"{block.id}: a ```{block.info or ''} block with no marker. Put <!-- run: KIND --> (KIND one of "
                    f"{', '.join(KINDS[1:])}) or <!-- not-run: why --> on the line before it "
                    f"(tests/e2e/test_docs_snippets.py)")
    assert kind in KINDS, f"{block.id}: unknown kind {kind!r} (one of {', '.join(KINDS)})"
    if kind == "client-frames":
        check_frames(block, frames.decode_client_frame)
    elif kind == "server-frames":
        check_frames(block, frames.decode_server_frame)
    elif kind == "settings":
        check_settings(block, tmp_path)
    elif kind == "cassandra-schema":
        check_cassandra_schema(block)
    elif kind == "pytest":
        await run_pytest(block, tmp_path)
    elif kind == "cli-flags":
        await check_cli_flags(block)


@pytest.mark.parametrize("block", LIVE, ids=[b.id for b in LIVE])
async def test_block_live(block: Block, live, tmp_path):
    if block.kind == "python":
        await run_python(block, live, tmp_path)
    elif block.kind == "up":
        check_up(block, live)
    elif block.kind == "up-output":
        check_up_output(block, live)
    else:
        await run_transcript(block, live)


async def run_python(block: Block, lv: Live, tmp: Path) -> None:
    (tmp / "snippet.py").write_text(block.code)
    proc = await asyncio.create_subprocess_exec(PYTHON, "snippet.py", cwd=tmp, env=lv.env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), BLOCK_TIMEOUT)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        pytest.fail(f"{block.id} ran over {BLOCK_TIMEOUT:.0f} s:\n{out.decode(errors='replace')[-3000:]}")
    assert proc.returncode == 0, f"{block.id} failed:\n{out.decode(errors='replace')[-3000:]}"


def check_up(block: Block, lv: Live) -> None:
    """The banner lines the block shows (values substituted) are what `up` printed."""
    (_, shown, _), = commands(block)
    for line in shown:
        if line.startswith("..."):  # a log line, trimmed
            continue
        assert lv.substitute(line) in lv.banner, f"{block.id}: `up` no longer prints\n  {line}\nbut:\n{lv.banner}"


def check_up_output(block: Block, lv: Live) -> None:
    for line in block.code.strip().split("\n"):
        pattern = r"\d+".join(re.escape(part) for part in re.split(r"\d+", line.strip()))
        assert re.search(pattern, lv.banner), \
            f"{block.id}: `up` no longer prints a line like\n  {line}\nbut:\n{lv.banner}"


async def run_pytest(block: Block, tmp: Path) -> None:
    """The block as a test module, with the fixtures of the e2e tests (loaded as plugins)."""
    (tmp / "test_doc_block.py").write_text(block.code)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SB_", "SWITCHBOARD_"))}
    proc = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
        "-p", "tests.conftest", "-p", "tests.e2e.conftest",
        "-c", str(REPO / "pyproject.toml"), "--rootdir", str(REPO), str(tmp / "test_doc_block.py"),
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), BLOCK_TIMEOUT * 2)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    assert proc.returncode == 0 and " passed" in text, f"{block.id} as a test module:\n{text[-3000:]}"


NAMES = re.compile(r"\b(?:sb-[a-z]+|switchboard_[a-z_]+)")
STAGE_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3}\s+\+\d+ ms\s+(\S+)", re.M)


async def shell_showing(cmd: str, lv: Live, stages: list[str], where: str) -> tuple[int, str]:
    """``cmd``'s exit status and output; with ``stages``, run again until the
    output shows that timeline (trace records arrive over a second or so:
    acks, push, archive)."""
    got = list(await shell(cmd, lv.env, lv.data))

    async def timeline_shown() -> bool:
        if Counter(STAGE_LINE.findall(got[1])) != Counter(stages):
            got[:] = await shell(cmd, lv.env, lv.data)
        return Counter(STAGE_LINE.findall(got[1])) == Counter(stages)

    if stages:
        await until(timeline_shown, 20, lambda: f"{where}: `{cmd}` showing the doc's stages {stages}; "
                                                f"it shows:\n{got[1]}", every=0.5)
    return got[0], got[1]


async def run_transcript(block: Block, lv: Live) -> None:
    cmds = commands(block)
    assert cmds, f"{block.id}: a transcript without a `$ command` line"
    if NATS_CLI is None and any(c.startswith("nats ") for c, _, _ in cmds):
        # CI=true: a failure (CI allows no skips); scripts/test installs it
        require_service("the NATS CLI (nats)", f"not on PATH, and {block.id} runs it",
                        "run scripts/test, which installs it (natscli, with go install) and puts it on PATH")
    for cmd, shown, status in cmds:
        cmd = lv.substitute(strip_comment(cmd))
        stages = STAGE_LINE.findall("\n".join(shown))
        code, out = await shell_showing(cmd, lv, stages, block.id)
        if os.environ.get("SB_DOCS_CAPTURE"):
            with open(Path(os.environ["SB_DOCS_CAPTURE"]) / "captured.txt", "a") as fh:
                fh.write(f"### {block.id}\n$ {cmd}\n{out}\n")
        assert code == status, f"{block.id}: `{cmd}` exited {code}, the doc shows {status}:\n{out[-3000:]}"
        if stages:
            assert Counter(STAGE_LINE.findall(out)) == Counter(stages), \
                f"{block.id}: `{cmd}` shows other stages than the doc:\n{out}"
        missing = sorted({n for n in NAMES.findall("\n".join(shown)) if n not in out})
        assert not missing, f"{block.id}: `{cmd}` no longer shows {missing}:\n{out[-3000:]}"


def check_frames(block: Block, decode) -> None:
    lines = [ln for ln in block.code.split("\n") if ln.strip()]
    try:
        docs = [json.loads(ln) for ln in lines]
    except json.JSONDecodeError:
        docs = [json.loads(block.code)]  # one frame over several lines
    for doc in docs:
        frame = decode(json.dumps(doc))
        known = {f.encode_name for f in msgspec.structs.fields(type(frame))} | {"type"}
        unknown = set(doc) - known
        assert not unknown, f"{block.id}: {doc['type']} has no field {sorted(unknown)}"


def check_settings(block: Block, tmp: Path) -> None:
    from switchboard import configload

    tomllib.loads(block.code)  # a syntax error says where
    path = tmp / "settings.toml"
    path.write_text(block.code)
    configload.load(config_file=str(path), env={})


async def check_cli_flags(block: Block) -> None:
    lines = [ln for ln in block.code.split("\n") if ln.strip()]
    if any(ln.startswith("$ ") for ln in lines):
        lines = [ln[2:] for ln in lines if ln.startswith("$ ")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SB_", "SWITCHBOARD_"))}
    checked = 0
    for line in lines:
        words = strip_comment(line).split()
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value before the command
            words.pop(0)
        if words[:1] == ["switchboard"]:
            sub = [w for w in words[1:] if not w.startswith("-")][:2]
            code, out = await shell(f"{PYTHON} -m sbctl {' '.join(sub)} --help", env, str(REPO))
            assert code == 0, f"{block.id}: `switchboard {' '.join(sub)} --help` failed:\n{out[-2000:]}"
            shown = {w.split("=")[0] for w in words if w.startswith("--")}
            if sub[:1] == ["bench"] and len(sub) == 2 and shown - set(re.findall(r"--[\w-]+", out)):
                # `bench archiver|receipts` hand their options to their module, whose help lists them
                code, out = await shell(f"{PYTHON} -m sbctl.bench.{sub[1]} --help", env, str(REPO))
            flags = sorted(shown - set(re.findall(r"--[\w-]+", out)))
            assert not flags, f"{block.id}: `switchboard {' '.join(sub)}` has no {flags}"
        elif words[:1] and words[0].startswith("scripts/"):
            script = REPO / words[0]
            assert script.is_file() and os.access(script, os.X_OK), f"{block.id}: {words[0]} is not an executable file"
        else:
            pytest.fail(f"{block.id}: cannot check `{line}` (only switchboard and scripts/ commands)")
        checked += 1
    assert checked, f"{block.id}: no command"


def check_cassandra_schema(block: Block) -> None:
    source = (REPO / "switchboard/store/cassandra.py").read_text()
    code = {m[1]: " ".join(m[2].split()) for m in
            re.finditer(r'CREATE TABLE IF NOT EXISTS \{ks\}\.(\w+) \((.*?)"""', source, re.S)}
    doc = {}
    for m in re.finditer(r"^(\w+) \((.*?)(?=^\w+ \(|\Z)", block.code, re.S | re.M):
        doc[m[1]] = " ".join(m[2].split())
    assert code, "no CREATE TABLE found in switchboard/store/cassandra.py"
    assert doc == code, f"{block.id} differs from switchboard/store/cassandra.py:\n doc  {doc}\n code {code}"
