"""Credentials the providers sign: APNs provider token, FCM assertion, VAPID;
and the Web Push encryption round trip. Decoded with PyJWT and the public key."""

from __future__ import annotations

import base64
import json

import http_ece
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pusher.providers import apns, fcm, webpush
from tests.fakes.creds import Creds, make_creds


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def creds(tmp_path_factory) -> Creds:
    return make_creds(tmp_path_factory.mktemp("jwt"), token_uri="https://oauth2.example/token")


def test_apns_provider_token_claims_and_refresh(creds):
    clock = Clock()
    with open(creds.apns_key_file, "rb") as fh:
        tokens = apns.ProviderToken(key_pem=fh.read(), key_id=creds.apns_key_id, team_id=creds.apns_team_id,
                                    clock=clock)
    first = tokens.get()
    assert jwt.get_unverified_header(first) == {"alg": "ES256", "kid": creds.apns_key_id, "typ": "JWT"}
    claims = jwt.decode(first, creds.apns_public_pem, algorithms=["ES256"])
    assert claims == {"iss": creds.apns_team_id, "iat": int(clock.t)}
    # Reused for 50 minutes: APNs answers TooManyProviderTokenUpdates to a new token every request.
    clock.t += 49 * 60
    assert tokens.get() == first
    # Renewed at 50 minutes, before APNs' one-hour expiry.
    clock.t += 60
    second = tokens.get()
    assert second != first and jwt.decode(second, creds.apns_public_pem, algorithms=["ES256"])["iat"] == int(clock.t)
    tokens.invalidate()  # after ExpiredProviderToken
    clock.t += 1
    assert tokens.get() != second


def test_fcm_assertion_claims(creds):
    with open(creds.fcm_account_file) as fh:
        account = json.load(fh)
    clock = Clock()
    tokens = fcm.AccessTokens(account=account, token_uri=account["token_uri"], http=None, clock=clock)  # type: ignore[arg-type]
    assertion = tokens.assertion()
    assert jwt.get_unverified_header(assertion)["kid"] == "kid-1"
    claims = jwt.decode(assertion, creds.fcm_public_pem, algorithms=["RS256"], audience=account["token_uri"],
                        options={"verify_exp": False})  # signed at a fixed past time
    assert claims == {"iss": creds.fcm_email, "scope": fcm.SCOPE, "aud": account["token_uri"],
                      "iat": int(clock.t), "exp": int(clock.t) + 3600}


def _public_key(b64: str) -> ec.EllipticCurvePublicKey:
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), webpush.b64url_decode(b64))


def test_vapid_header_claims_and_cache(creds):
    clock = Clock()
    with open(creds.vapid_key_file, "rb") as fh:
        vapid = webpush.Vapid(key_pem=fh.read(), subject="mailto:ops@example.com", clock=clock)
    assert vapid.public_key == creds.vapid_public_b64
    header = vapid.header("https://push.example.net:8443/wpush/v2/abc?x=1")
    t, k = header.removeprefix("vapid t=").split(", k=")
    assert k == creds.vapid_public_b64
    claims = jwt.decode(t, _public_key(k), algorithms=["ES256"], audience="https://push.example.net:8443",
                        options={"verify_exp": False})
    assert claims["sub"] == "mailto:ops@example.com"
    assert 0 < claims["exp"] - clock.t <= 24 * 3600  # RFC 8292: at most 24 hours
    # same origin: cached; other origin: its own token (aud differs)
    assert vapid.header("https://push.example.net:8443/other") == header
    assert vapid.header("https://fcm.example.com/x") != header
    clock.t += webpush.JWT_LIFETIME_SEC - webpush.JWT_RENEW_SEC + 1  # within an hour of exp: renewed
    assert vapid.header("https://push.example.net:8443/other") != header


def test_vapid_rejects_a_non_p256_key(tmp_path):
    key = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(ValueError, match="P-256"):
        webpush.Vapid(key_pem=key, subject="mailto:a@b.c")


def test_webpush_encryption_decrypts_with_the_subscription_key():
    ua = ec.generate_private_key(ec.SECP256R1())
    auth = b"0123456789abcdef"
    p256dh = base64.urlsafe_b64encode(ua.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)).rstrip(b"=").decode()
    plaintext = b"x" * webpush.MAX_PLAINTEXT
    body = webpush.encrypt(plaintext, p256dh=p256dh, auth=webpush.b64url(auth))
    assert len(body) == 4096  # the largest plaintext makes exactly the 4096-byte limit (RFC 8291 section 4)
    assert http_ece.decrypt(body, private_key=ua, auth_secret=auth, version="aes128gcm") == plaintext
    # fresh ephemeral key and salt per message: two encryptions of the same text differ
    assert webpush.encrypt(plaintext, p256dh=p256dh, auth=webpush.b64url(auth))[:16] != body[:16]
