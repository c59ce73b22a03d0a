"""When ``switchboard up`` offers the development sign-in (any user name
gets a token): only on a loopback host, never with ``--no-dev-signin``.
A wrong answer here hands out tokens to whoever reaches the port."""

from __future__ import annotations

import pytest

from sbctl.cli import build_parser
from sbctl.devmode import up_dev_signin
from sbctl.supervisor import role_env
from switchboard.config import Settings

CASES = [
    ("127.0.0.1", False, True),
    ("127.0.0.2", False, True),
    ("127.255.255.254", False, True),
    ("localhost", False, True),
    ("LOCALHOST", False, True),
    ("::1", False, True),
    ("[::1]", False, True),
    ("127.0.0.1", True, False),  # --no-dev-signin
    ("localhost", True, False),
    ("0.0.0.0", False, False),  # every interface
    ("::", False, False),
    ("", False, False),
    ("10.0.0.5", False, False),
    ("192.168.1.20", False, False),
    ("chat.example.com", False, False),
    ("localhost.example.com", False, False),  # not a loopback name
    ("128.0.0.1", False, False),
    ("::ffff:10.0.0.1", False, False),
]


@pytest.mark.parametrize("host,disabled,on", CASES, ids=[f"{h or 'empty'}-{d}" for h, d, _ in CASES])
def test_up_dev_signin(host, disabled, on):
    assert up_dev_signin(host, disabled=disabled) is on


def test_flag_parses_and_default_is_off():
    assert build_parser().parse_args(["up"]).no_dev_signin is False
    assert build_parser().parse_args(["up", "--no-dev-signin"]).no_dev_signin is True
    assert Settings().dev_signin is False  # roles other than up: off unless configured


@pytest.mark.parametrize("on", [True, False])
def test_children_get_ups_decision(on, monkeypatch):
    """The edge child reads its settings from the environment: up's decision
    must be there, over anything the parent's environment held."""
    monkeypatch.setenv("SWITCHBOARD_DEV_SIGNIN", "false" if on else "true")
    env = role_env(Settings(dev_signin=on))
    assert Settings.load(env=env).dev_signin is on
