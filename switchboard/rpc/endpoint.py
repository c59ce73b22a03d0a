"""One request/reply endpoint described once: name, subject, request and reply type.

An :class:`Endpoint` is what both sides share: the server registers it
(:class:`switchboard.rpc.server.RpcService`), the client calls it
(:func:`switchboard.rpc.client.call`), and neither spells the subject, the
encoder, the decoder or the error check again.

The error wire (the same for every endpoint): the micro error headers
``Nats-Service-Error-Code`` (the stable code of switchboard/errors.py) and
``Nats-Service-Error`` (the message), and the body
``{"error": {"code", "message", "retry"}}``, which every reply type also
decodes (each has an ``error`` field), so a caller that reads only bodies
sees it too.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import msgspec

from switchboard import ids
from switchboard.errors import BadRequest, Internal, SwitchboardError, from_code
from switchboard.events import ErrorBody
from switchboard.subjects import Subjects

Req = TypeVar("Req")
Rep = TypeVar("Rep")

ERROR_HEADER = "Nats-Service-Error"  # nats micro's names: `nats req` and `nats micro stats` read them
ERROR_CODE_HEADER = "Nats-Service-Error-Code"


class ErrorReply(msgspec.Struct):
    """The body of every error answer."""

    error: ErrorBody


_encode = msgspec.json.Encoder().encode
_decode_error = msgspec.json.Decoder(ErrorReply).decode


def error_body(exc: SwitchboardError) -> ErrorBody:
    return ErrorBody(code=exc.code, message=exc.message, retry=exc.retry)


def encode_error(exc: SwitchboardError) -> bytes:
    return _encode(ErrorReply(error=error_body(exc)))


def error_headers(exc: SwitchboardError) -> dict[str, str]:
    # A header value is one line: the body keeps the message as it is.
    return {ERROR_CODE_HEADER: exc.code, ERROR_HEADER: " ".join(exc.message.split())}


@dataclass(frozen=True)
class Endpoint(Generic[Req, Rep]):
    """``subject`` is relative to the subject prefix and may hold ``{param}``
    tokens (``"receipt.{conv}"``, ``"api.sequencer.{instance}.stats"``),
    each an id (checked with :func:`switchboard.ids.check`). ``request``
    None: the request body is ignored (stats endpoints). ``name`` is the
    micro endpoint's name (``nats micro stats`` rows, the ``endpoint`` label
    of the Prometheus metrics)."""

    name: str
    subject: str
    request: type[Req] | None
    reply: type[Rep]
    params: tuple[str, ...] = field(init=False, repr=False)
    _split: tuple[str, str, str] | None = field(init=False, repr=False, compare=False)
    _decode_request: Callable[[bytes], Req] | None = field(init=False, repr=False, compare=False)
    _decode_reply: Callable[[bytes], Rep] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        params = tuple(f for _, f, _, _ in string.Formatter().parse(self.subject) if f)
        object.__setattr__(self, "params", params)
        # One {param} (receipt.{conv}): (before, name, after), so subject_for
        # is two concatenations; the edge builds one per receipt flush entry.
        head, _, rest = self.subject.partition("{")
        object.__setattr__(self, "_split", (head, params[0], rest.partition("}")[2]) if len(params) == 1 else None)
        object.__setattr__(self, "_decode_request",
                           msgspec.json.Decoder(self.request).decode if self.request is not None else None)
        object.__setattr__(self, "_decode_reply", msgspec.json.Decoder(self.reply).decode)

    # -- subjects ----------------------------------------------------------------
    def subject_for(self, subjects: Subjects, **params: str) -> str:
        """The concrete subject: every ``{param}`` given, each a valid id."""
        if not params and not self.params:
            return f"{subjects.prefix}.{self.subject}"
        split = self._split
        if split is not None and len(params) == 1 and split[1] in params:
            return f"{subjects.prefix}.{split[0]}{ids.check(params[split[1]], split[1])}{split[2]}"
        missing = set(self.params) - params.keys()
        if missing:
            raise TypeError(f"endpoint {self.name}: subject needs {', '.join(sorted(missing))}")
        return f"{subjects.prefix}.{self.subject.format_map({k: ids.check(v, k) for k, v in params.items()})}"

    def pattern(self, subjects: Subjects, **params: str) -> str:
        """What a server subscribes to: the ``{param}`` tokens not given are ``*``."""
        filled = {p: ids.check(params[p], p) if p in params else "*" for p in self.params}
        return f"{subjects.prefix}.{self.subject.format_map(filled)}"

    # -- bodies ------------------------------------------------------------------
    def encode_request(self, request: Req | None) -> bytes:
        return b"" if self.request is None else _encode(request)

    def decode_request(self, data: bytes) -> Req | None:
        """The request, or :class:`BadRequest` (not JSON, a missing field, a wrong type)."""
        if self._decode_request is None:
            return None
        try:
            return self._decode_request(data)
        except msgspec.DecodeError as exc:  # ValidationError included
            # request is None only when _decode_request is (__post_init__)
            raise BadRequest(f"{self.name}: not a {self.request.__name__}: {exc}") from None  # type: ignore[union-attr]

    def encode_reply(self, reply: Rep) -> bytes:
        return _encode(reply)

    def reply_of(self, data: bytes, headers: Mapping[str, str] | None = None) -> Rep:
        """The reply of an answer, or the typed error it carries (the micro
        error headers, or an ``error`` in the body of an older server)."""
        err: ErrorBody | None
        if headers and ERROR_CODE_HEADER in headers:
            try:
                err = _decode_error(data).error
            except msgspec.DecodeError:  # headers only (a server outside this layer)
                raise from_code(headers[ERROR_CODE_HEADER], headers.get(ERROR_HEADER, ""), False) from None
            raise from_code(err.code, err.message, err.retry)
        try:
            reply = self._decode_reply(data)
        except msgspec.DecodeError as exc:
            raise Internal(f"{self.name}: undecodable reply: {exc}", retry=False) from None
        err = getattr(reply, "error", None)
        if err is not None:
            raise from_code(err.code, err.message, err.retry)
        return reply
