"""Test credentials, made fresh: an APNs .p8 key, an FCM service account, a VAPID key."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

_PKCS8 = dict(encoding=serialization.Encoding.PEM, format=serialization.PrivateFormat.PKCS8,
              encryption_algorithm=serialization.NoEncryption())


def _public_pem(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class Creds:
    apns_key_file: str
    apns_public_pem: bytes
    apns_key_id: str
    apns_team_id: str
    fcm_account_file: str
    fcm_public_pem: bytes
    fcm_project: str
    fcm_email: str
    vapid_key_file: str
    vapid_public_b64: str


def make_creds(folder: str | Path, *, token_uri: str = "https://oauth2.example/token") -> Creds:
    folder = Path(folder)
    apns = ec.generate_private_key(ec.SECP256R1())
    (folder / "AuthKey_TESTKEY123.p8").write_bytes(apns.private_bytes(**_PKCS8))
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    account = {"type": "service_account", "project_id": "sb-test", "private_key_id": "kid-1",
               "private_key": rsa_key.private_bytes(**_PKCS8).decode(),
               "client_email": "pusher@sb-test.iam.gserviceaccount.com", "token_uri": token_uri}
    (folder / "service-account.json").write_text(json.dumps(account))
    vapid = ec.generate_private_key(ec.SECP256R1())
    (folder / "vapid.pem").write_bytes(vapid.private_bytes(**_PKCS8))
    point = vapid.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return Creds(
        apns_key_file=str(folder / "AuthKey_TESTKEY123.p8"), apns_public_pem=_public_pem(apns),
        apns_key_id="TESTKEY123", apns_team_id="TEAM456789",
        fcm_account_file=str(folder / "service-account.json"), fcm_public_pem=_public_pem(rsa_key),
        fcm_project="sb-test", fcm_email=account["client_email"],
        vapid_key_file=str(folder / "vapid.pem"),
        vapid_public_b64=base64.urlsafe_b64encode(point).rstrip(b"=").decode())
