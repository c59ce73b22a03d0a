"""Development sign-in (edge/devsignin.py): ``GET /dev/config`` and ``POST /dev/token``.

Off, the endpoints give nothing away (404 for the token); on, a token for a
valid user id is the one ``switchboard token`` makes and opens a WebSocket;
bad input gets a 400 with a JSON error, never a token. The last test runs
``switchboard up`` for real: on a loopback host it turns dev sign-in on,
``--no-dev-signin`` keeps it off (the non-loopback case is the decision
function's unit test, tests/unit/test_dev_mode.py).
"""

from __future__ import annotations

import json
import re

import pytest

from switchboard import auth
from tests.e2e.helpers import Proc, procs
from tests.e2e.test_cli_up import clean_env, free_port
from tests.e2e.test_web_assets import get, http


def post(path: str, body: bytes, *headers: str, host: str = "127.0.0.1") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    head += "".join(f"{h}\r\n" for h in headers)
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@pytest.fixture(params=[True, False], ids=["on", "off"])
async def dep(deploy, request):
    return await deploy(roles=("edge",), dev_signin=request.param)


async def test_config_says_whether_it_is_on(dep):
    status, headers, body = await http(dep.settings.port, get("/dev/config"))
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"dev_signin": dep.settings.dev_signin}


async def test_token_for_a_valid_user_opens_a_socket(dep):
    status, headers, body = await http(dep.settings.port, post("/dev/token", b'{"user": "alice"}'))
    if not dep.settings.dev_signin:
        assert status == 404 and b"eyJ" not in body  # off: no token, whatever is asked
        return
    assert status == 200 and headers["content-type"] == "application/json"
    reply = json.loads(body)
    assert reply["user"] == "alice"
    assert auth.verify(dep.settings.jwt_secret, reply["token"]) == "alice"
    raw = await dep.raw(token=reply["token"], hello=False)
    await raw.send({"type": "hello"})
    assert (await raw.expect("welcome"))["user"] == "alice"


# (name, request bytes, status when on, error code when on)
BAD = [
    ("invalid id", post("/dev/token", b'{"user": "a.>"}'), 400, "invalid_id"),
    ("empty id", post("/dev/token", b'{"user": ""}'), 400, "invalid_id"),
    ("too long id", post("/dev/token", json.dumps({"user": "x" * 65}).encode()), 400, "invalid_id"),
    ("id not a string", post("/dev/token", b'{"user": 7}'), 400, "bad_frame"),
    ("no user", post("/dev/token", b"{}"), 400, "bad_frame"),
    ("not JSON", post("/dev/token", b"user=alice"), 400, "bad_frame"),
    ("empty body", post("/dev/token", b""), 400, "bad_frame"),
    ("deep JSON", post("/dev/token", b"[" * 2000 + b"]" * 2000), 400, "bad_frame"),
    # Capped before it is read: http_body_bytes (4 KiB).
    ("huge body", post("/dev/token", b'{"user": "' + b"a" * 10_000 + b'"}'), 413, None),
    # DNS rebinding: a page of another name pointing at 127.0.0.1.
    ("foreign Host", post("/dev/token", b'{"user": "alice"}', host="evil.example:8080"), 403, "forbidden_host"),
    ("GET", get("/dev/token"), 405, "bad_frame"),
]


@pytest.mark.parametrize("name,raw,status,code", BAD, ids=[b[0] for b in BAD])
async def test_bad_requests_get_no_token(dep, name, raw, status, code):
    got, headers, body = await http(dep.settings.port, raw)
    assert b"eyJ" not in body  # never a JWT
    if not dep.settings.dev_signin and status != 413:
        assert got == 404  # off: the endpoint does not exist
        return
    assert got == status
    if code is not None:
        err = json.loads(body)
        assert (err["type"], err["code"], err["retry"]) == ("error", code, False)
        assert err["message"]


async def test_loopback_host_names_are_accepted(deploy):
    """Every loopback spelling of Host gets a token (only on: off has no endpoint)."""
    dep = await deploy(roles=("edge",), dev_signin=True)
    for host in ("localhost:8080", "127.0.0.1", "[::1]:8080", "127.9.9.9:1"):
        status, _, body = await http(dep.settings.port, post("/dev/token", b'{"user": "bob"}', host=host))
        assert status == 200, (host, body)


URL_LINE = re.compile(r"\(web app: (http://\S+/)(; dev sign-in on)?\)")


@pytest.mark.parametrize("flags,on", [([], True), (["--no-dev-signin"], False)], ids=["loopback", "flag-off"])
async def test_up_on_loopback(tmp_path, flags, on):
    """``up`` passes its decision to the edge child (an environment variable
    of the child, over whatever the parent's environment says)."""
    port = free_port()
    env = clean_env()
    env["SWITCHBOARD_DEV_SIGNIN"] = "true" if not on else "false"  # must not win over up's decision
    with procs() as made:
        p = Proc(["up", "--host", "127.0.0.1", "--port", str(port), "--data", str(tmp_path / "data"), *flags],
                 env=env, log=tmp_path / "up.log")
        made.append(p)
        out = await p.wait_output("web app:", timeout=60)
        m = URL_LINE.search(out)
        assert m and bool(m.group(2)) == on, out[-2000:]
        status, _, body = await http(port, get("/dev/config"))
        assert json.loads(body) == {"dev_signin": on}
        status, _, body = await http(port, post("/dev/token", b'{"user": "carol"}'))
        assert status == (200 if on else 404)
        assert p.terminate() == 0
