"""In-memory DeviceStore: for tests and single-process experiments."""

from __future__ import annotations

from switchboard import ids
from switchboard.devices import Device, check_token


class MemoryDeviceStore:
    """See :class:`switchboard.devices.DeviceStore` for the contract."""

    def __init__(self) -> None:
        self._owner: dict[Device, str] = {}  # insertion order = registration order

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def register(self, user: str, platform: str, token: str) -> Device:
        ids.check(user, "user")
        device = Device(platform, check_token(platform, token))
        if self._owner.get(device) != user:
            self._owner.pop(device, None)
            self._owner[device] = user
        return device

    async def tokens_of(self, user: str) -> list[Device]:
        return [d for d, u in self._owner.items() if u == user]

    async def remove(self, platform: str, token: str) -> None:
        self._owner.pop(Device(platform, token), None)
