"""All three push-service fakes started together (the e2e push tests' fixture)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from tests.fakes.apns import FakeApns
from tests.fakes.creds import Creds
from tests.fakes.fcm import FakeFcm
from tests.fakes.tls import Cert
from tests.fakes.webpush import FakeWebPush


@contextlib.asynccontextmanager
async def running_fakes(cert: Cert, creds: Creds) -> AsyncIterator[dict]:
    """``{"apns": FakeApns, "fcm": FakeFcm, "webpush": FakeWebPush}``, stopped on exit."""
    apns = await FakeApns(cert=cert, public_key_pem=creds.apns_public_pem, key_id=creds.apns_key_id,
                          team_id=creds.apns_team_id, topic="com.example.chat").start()
    fcm = await FakeFcm(cert=cert, project_id=creds.fcm_project, client_email=creds.fcm_email,
                        public_key_pem=creds.fcm_public_pem).start()
    web = await FakeWebPush(cert=cert, vapid_public_key=creds.vapid_public_b64).start()
    try:
        yield {"apns": apns, "fcm": fcm, "webpush": web}
    finally:
        for f in (apns, fcm, web):
            await f.stop()
