"""Shared parts of the fakes: scripted answers, recorded requests, problems."""

from __future__ import annotations

import json

from tests.fakes.h2server import H2Server, Request, Response
from tests.fakes.tls import Cert


class FakePushService:
    """Subclasses implement ``check`` (verify like the real service) and ``accept``."""

    def __init__(self, *, cert: Cert) -> None:
        self.server = H2Server(cert=cert, handler=self._handle)
        self.script: list[Response] = []  # answered in order (after the request checked out), then success
        self.received: list = []  # one record per send that passed the checks
        self.problems: list[str] = []  # what a real service would have rejected; a test asserts it is empty
        self.dead: set[str] = set()  # tokens/subscriptions the service reports as gone

    @property
    def base_url(self) -> str:
        return self.server.base_url

    async def start(self):
        await self.server.start()
        return self

    async def stop(self) -> None:
        await self.server.stop()

    def _handle(self, req: Request) -> Response:
        try:
            return self.handle(req)
        except Exception as exc:  # a fake's own bug must show up in the test, not as a hang
            self.problems.append(f"fake crashed: {exc!r}")
            return Response(500, b"{}")

    def handle(self, req: Request) -> Response:  # pragma: no cover - abstract
        raise NotImplementedError

    def next_scripted(self) -> Response | None:
        return self.script.pop(0) if self.script else None

    def reject(self, status: int, problem: str, body: dict) -> Response:
        self.problems.append(problem)
        return Response(status, json.dumps(body).encode(), {"content-type": "application/json"})
