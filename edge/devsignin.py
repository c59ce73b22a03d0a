"""Development sign-in: ``GET /dev/config`` and ``POST /dev/token``.

With the ``dev_signin`` setting on (``switchboard up`` on a loopback host
turns it on, see sbctl.devmode), the web app asks for a user name
and gets a token for it from ``POST /dev/token`` with ``{"user": "alice"}``:
``{"token": JWT, "user": "alice"}``, the token ``switchboard token alice``
prints. Anyone who can reach the endpoint can act as anyone, which is the
point on a developer's machine and why it is off by default and 404 then.

``/dev/token`` only answers requests whose ``Host`` is a loopback name or
the host the edge was configured with: a web page elsewhere cannot reach it
through DNS rebinding (a name of the attacker's pointing at 127.0.0.1).
Errors are JSON ``{"type": "error", "code", "message", "retry"}`` as on the
WebSocket (invalid user id: 400 ``invalid_id``).
"""

from __future__ import annotations

import ipaddress
from http import HTTPStatus

import msgspec
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from switchboard import auth, frames
from switchboard.config import Settings
from switchboard.errors import BadFrame, SwitchboardError


class TokenRequest(msgspec.Struct, forbid_unknown_fields=False):
    user: str


class TokenReply(msgspec.Struct):
    token: str
    user: str


class DevConfig(msgspec.Struct):
    dev_signin: bool


class WrongHost(SwitchboardError):
    """The request's Host is not this edge's."""

    code = "forbidden_host"


_token_request = msgspec.json.Decoder(TokenRequest)


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1 (brackets and a trailing dot allowed)."""
    h = host.strip().strip("[]").rstrip(".").lower()
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def _host_of(header: str) -> str:
    """The host of a Host header (``[::1]:8080``, ``127.0.0.1:8080``, ``localhost``)."""
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


class DevSignin:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.dev_signin
        self._secret = settings.jwt_secret
        self._host = settings.host

    def config(self) -> Response:
        return json_response(HTTPStatus.OK, DevConfig(dev_signin=self.enabled))

    def token(self, request: Request, body: bytes) -> Response:
        """``POST /dev/token`` (404 when dev sign-in is off, 405 for another method)."""
        if not self.enabled:
            return json_response(HTTPStatus.NOT_FOUND, frames.Error(ref=None, code="not_found",
                                                                    message="dev sign-in is off", retry=False))
        if request.method != "POST":
            response = json_response(HTTPStatus.METHOD_NOT_ALLOWED, frames.Error(
                ref=None, code="bad_frame", message='POST a JSON object {"user": "<user id>"}', retry=False))
            response.headers["Allow"] = "POST"
            return response
        try:
            host = _host_of(request.headers.get("Host", ""))
            if not (is_loopback(host) or host == self._host):
                raise WrongHost(f"dev sign-in answers requests for this edge's own host only, not {host[:64]!r}")
            try:
                user = _token_request.decode(body).user
            except (msgspec.DecodeError, RecursionError, UnicodeEncodeError):
                raise BadFrame('send a JSON object {"user": "<user id>"}') from None
            tok = auth.issue(self._secret, user)  # checks the id (InvalidId)
        except SwitchboardError as exc:
            status = HTTPStatus.FORBIDDEN if isinstance(exc, WrongHost) else HTTPStatus.BAD_REQUEST
            return json_response(status, frames.error_frame(exc))
        return json_response(HTTPStatus.OK, TokenReply(token=tok, user=user))


def json_response(status: HTTPStatus, obj: msgspec.Struct) -> Response:
    body = msgspec.json.encode(obj)
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
                       ("Connection", "close")])
    return Response(status.value, status.phrase, headers, body)


__all__ = ["DevSignin", "is_loopback", "json_response"]
