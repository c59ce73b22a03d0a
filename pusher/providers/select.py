"""The providers the settings enable: ``[pusher] provider`` and its
``[pusher.<name>]`` sections (switchboard/config.py validates that each
named provider has one)."""

from __future__ import annotations

from pusher.providers import PushProvider
from pusher.providers.apns import ApnsProvider
from pusher.providers.fcm import FcmProvider
from pusher.providers.log import LogProvider
from pusher.providers.webpush import WebPushProvider
from switchboard.config import PusherSettings


def providers_for(settings: PusherSettings) -> dict[str, PushProvider]:
    """Providers by platform: "log" serves all three (development)."""
    if settings.push_providers == ("log",):
        log = LogProvider()
        return {"apns": log, "fcm": log, "webpush": log}
    out: dict[str, PushProvider] = {}
    for name in settings.push_providers:
        if name == "apns" and settings.push_apns is not None:
            out[name] = ApnsProvider(config=settings.push_apns)
        elif name == "fcm" and settings.push_fcm is not None:
            out[name] = FcmProvider(config=settings.push_fcm)
        elif name == "webpush" and settings.push_webpush is not None:
            out[name] = WebPushProvider(config=settings.push_webpush)
    return out
