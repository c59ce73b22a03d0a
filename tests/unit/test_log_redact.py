"""Credentials are masked in every log line (issue 8, item 6).

Table-driven over the URL forms the fabric is configured with (NATS user and
password, NATS token, comma lists of seeds, Redis with a password, Cassandra
with credentials, secrets in query strings), through :func:`redact`, through
:func:`redact_url`, and through the real logging set-up (structlog and
stdlib logging, console and JSON) writing to a captured stderr.
"""

from __future__ import annotations

import logging

import pytest
import structlog

from switchboard import log
from switchboard.config import Settings
from switchboard.errors import ConfigError
from switchboard.presence import open_presence

SECRET = "S3cr3tPw"

# (text, what must remain visible)
CASES = {
    "nats user:password": (f"nats://sequencer:{SECRET}@10.0.0.1:4222", "nats://sequencer:***@10.0.0.1:4222"),
    "nats token": (f"nats://{SECRET}@10.0.0.1:4222", "nats://***@10.0.0.1:4222"),
    "tls scheme": (f"tls://edge:{SECRET}@nats.example:4222", "tls://edge:***@nats.example:4222"),
    "seed list": (f"nats://u:{SECRET}@h1:4222,nats://u:{SECRET}@h2:4222",
                  "nats://u:***@h1:4222,nats://u:***@h2:4222"),
    "seed list, second without scheme": (f"nats://h1:4222,u:{SECRET}@h2:4222", "@h2:4222"),
    "password with an unescaped @": (f"nats://u:{SECRET}@x@h:4222", "nats://u:***@h:4222"),
    "redis password only": (f"redis://:{SECRET}@cache:6379/0", "redis://:***@cache:6379/0"),
    "rediss user and password": (f"rediss://app:{SECRET}@cache:6380/1?prefix=sb", "rediss://app:***@cache:6380/1"),
    "redis password in query": (f"redis://cache:6379/0?password={SECRET}&prefix=sb", "?password=***&prefix=sb"),
    "cassandra credentials": (f"cassandra://cass:{SECRET}@c1,c2/sb?consistency=ONE", "cassandra://cass:***@c1,c2/sb"),
    "token parameter": (f"https://hook.example/x?token={SECRET}", "?token=***"),
    "in a sentence": (f"fabric up nats=nats://sequencer:{SECRET}@127.0.0.1:4222 roles=['edge']",
                      "nats=nats://sequencer:***@127.0.0.1:4222 roles=['edge']"),
    "in a repr": (f"Settings(nats_url='nats://a:{SECRET}@h:1', port=1)", "nats_url='nats://a:***@h:1'"),
}
# Left alone: no credentials in them.
PLAIN = ["nats://127.0.0.1:4222", "sqlite:///var/lib/sb/switchboard.db", "memory://", "user alice@edge-1 joined",
         "redis://cache:6379/0?prefix=sb", "ws://127.0.0.1:8080/ws"]


@pytest.mark.parametrize("text,visible", CASES.values(), ids=list(CASES))
def test_redact_masks_credentials(text, visible):
    out = log.redact(text)
    assert SECRET not in out
    assert visible in out


@pytest.mark.parametrize("text", PLAIN)
def test_redact_leaves_plain_text(text):
    assert log.redact(text) == text


@pytest.mark.parametrize("url,expected", [
    (f"u:{SECRET}@127.0.0.1:4222", "u:***@127.0.0.1:4222"),  # a --nats without a scheme is valid
    (f"{SECRET}@127.0.0.1:4222,v:{SECRET}@h2", "***@127.0.0.1:4222,v:***@h2"),
    (f"redis://:pa/{SECRET}@cache/0", "redis://:***@cache/0"),  # an unescaped "/" in the password
    ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
])
def test_redact_url(url, expected):
    assert log.redact_url(url) == expected


@pytest.fixture
def configured():
    """log.configure() as a role calls it, on the stderr the test captures;
    pytest's own log handlers are set aside meanwhile (with them in place
    basicConfig would add no stream handler)."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level

    def configure(level: str, json: bool) -> None:
        root.handlers = []  # here: pytest adds its capture handlers once the test body runs
        log.configure(level, json)

    yield configure
    for h in root.handlers:
        if h not in saved[0]:
            root.removeHandler(h)
    root.handlers = saved[0]
    root.setLevel(saved[1])
    structlog.reset_defaults()


@pytest.mark.parametrize("json", [False, True], ids=["console", "json"])
def test_log_lines_are_redacted(configured, capsys, json):
    """Protects item 6 at the source: structlog events (values, nested values,
    secret-named keys, exception text) and stdlib records of libraries."""
    configured("debug", json)
    lg = log.get("t")
    lg.info("fabric up", nats=f"nats://sequencer:{SECRET}@127.0.0.1:4222")
    lg.info("bare url key", url=f"u:{SECRET}@127.0.0.1:4222")
    lg.info("nested", servers=[f"nats://{SECRET}@h:1"], cfg={"presence": f"redis://:{SECRET}@r/0"})
    lg.info("secret key", password=SECRET, token=SECRET)
    lg.info(f"event text with nats://x:{SECRET}@h:4222")
    try:
        raise ConnectionError(f"cannot reach nats://x:{SECRET}@h:4222")
    except ConnectionError:
        lg.exception("connect failed")
    logging.getLogger("nats.aio.client").error("nats: encountered error %s", f"tls://x:{SECRET}@h:4222")
    out = capsys.readouterr().err
    assert "nats: encountered error tls://x:***@h:4222" in out, out
    assert SECRET not in out, out
    assert "sequencer:***@127.0.0.1:4222" in out


@pytest.mark.parametrize("field,url", [
    ("store_url", f"mysql://root:{SECRET}@db/sb"),
    ("presence_url", f"memcache://u:{SECRET}@m:11211"),
])
def test_config_errors_do_not_echo_credentials(field, url):
    with pytest.raises(ConfigError) as exc:
        Settings(**{field: url})
    assert SECRET not in exc.value.message and ":***@" in exc.value.message


def test_presence_url_error_does_not_echo_credentials():
    with pytest.raises(ConfigError) as exc:
        open_presence(f"etcd://u:{SECRET}@h")
    assert SECRET not in exc.value.message
