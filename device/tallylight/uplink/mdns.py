"""Announcing the API server the way ESPHome devices do (`_esphomelib._tcp`), so Home Assistant finds it."""

from __future__ import annotations

import socket

from zeroconf import ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

from tallylight.uplink.api_frames import NOISE_PROTOCOL
from tallylight.uplink.server import DeviceIdentity

SERVICE_TYPE = "_esphomelib._tcp.local."


def service_info(identity: DeviceIdentity, port: int, addresses: list[str], encrypted: bool) -> ServiceInfo:
    properties = {
        "version": "2025.9.0",
        "mac": identity.mac.replace(":", "").lower(),  # Home Assistant matches discoveries to devices by it
        "platform": "linux",
        "board": "raspberry-pi",
        "network": "wifi",
        "friendly_name": identity.friendly_name,
        "project_name": "tallylight.speaker",
        "project_version": identity.version,
    }
    if encrypted:
        # Tells Home Assistant to ask the owner for the key before it connects.
        properties["api_encryption"] = NOISE_PROTOCOL.decode()
    return ServiceInfo(SERVICE_TYPE, f"{identity.name}.{SERVICE_TYPE}", port=port,
                       addresses=[socket.inet_aton(a) for a in addresses], properties=properties,
                       server=f"{identity.name}.local.")


async def announce(info: ServiceInfo, interfaces: list[str] | None = None) -> AsyncZeroconf:
    """Register the service; close the returned AsyncZeroconf to withdraw it."""
    zc = AsyncZeroconf(interfaces=interfaces) if interfaces else AsyncZeroconf()
    await zc.async_register_service(info)
    return zc
