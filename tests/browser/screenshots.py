"""Screenshots of the web app for the README (run by `scripts/screenshots`).

Starts a real `switchboard up` on a free loopback port with a fresh data
dir, seeds a few conversations with the Python SDK (a 1:1 chat, a group,
an unread 1:1), keeps bob online and typing, and has Chromium (Playwright,
tests/browser/screenshots.mjs) photograph alice's view at desktop (1280x800)
and phone (390x844) size into docs/img/.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
from pathlib import Path

from switchboard import frames
from switchboard_client import Client
from tests.browser.conftest import CHROMIUM, HERE, REPO, start_up, stop_up

OUT = REPO / "docs" / "img"

DM = [  # (sender, body) of alice <-> bob
    ("bob", "Morning! Did the deploy go out?"),
    ("alice", "Yes, at 9. The new edge is on all three boxes."),
    ("bob", "Nice. Any reconnect storm?"),
    ("alice", "None: clients came back with jittered backoff, p99 under a second."),
    ("bob", "Great. I'll keep an eye on /metrics today."),
    ("alice", "Thanks! Lunch at 12:30?"),
]
GROUP = [
    ("carol", "Saturday looks sunny"),
    ("bob", "I'm in. Which trail?"),
    ("alice", "The ridge loop, 14 km. Meet at the station at 8?"),
    ("carol", "Perfect, I'll bring snacks"),
]


async def cli_token(user: str, data: Path) -> str:
    p = await asyncio.create_subprocess_exec(sys.executable, "-m", "sbctl", "token", user, "--data", str(data),
                                             cwd=REPO, stdout=asyncio.subprocess.PIPE)
    out, _ = await p.communicate()
    assert p.returncode == 0, f"switchboard token {user} failed"
    return out.decode().strip()


async def main() -> int:
    with tempfile.TemporaryDirectory(prefix="sb-screens-") as tmp:
        data = Path(tmp) / "data"
        up, base = start_up(data, Path(tmp) / "up.log")
        try:
            return await shoot(base, data)
        finally:
            stop_up(up)


async def shoot(base: str, data: Path) -> int:
    url = base.replace("http", "ws", 1) + "/ws"
    users = ("alice", "bob", "carol", "dave")
    tokens = {u: await cli_token(u, data) for u in users}
    async with contextlib.AsyncExitStack() as stack:
        c = {u: await stack.enter_async_context(Client(url=url, token=tokens[u])) for u in ("bob", "carol", "dave")}
        alice = await stack.enter_async_context(Client(url=url, token=tokens["alice"]))
        c["alice"] = alice
        group = await alice.create_conversation(["bob", "carol"], "Weekend hike")
        for who, body in GROUP:
            await c[who].send(conv=group.conv, body=body)
        await c["dave"].send(to="alice", body="Can you review my PR when you have a minute?")
        last = None
        for who, body in DM:
            last = await c[who].send(to="bob" if who == "alice" else "alice", body=body)
        # Bob read everything alice wrote: her ticks show "read".
        await c["bob"].send_frame(frames.Read(conv=last.conv, seq=last.seq))
        await alice.close()  # the browser is alice from here on

        async def bob_types() -> None:
            while True:
                await c["bob"].send_frame(frames.Typing(conv=last.conv))
                await asyncio.sleep(1.5)

        typing = asyncio.create_task(bob_types())
        env = {**os.environ, "SB_BASE_URL": base, "SB_TOKEN": tokens["alice"], "SB_CONV": last.conv,
               "SB_CHROMIUM": CHROMIUM, "SB_OUT": str(OUT)}
        node = await asyncio.create_subprocess_exec("node", str(HERE / "screenshots.mjs"), cwd=HERE, env=env)
        code = await node.wait()
        typing.cancel()
        return code


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
