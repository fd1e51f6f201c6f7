"""The uplink's mDNS announcement, found by a second zeroconf instance the way Home Assistant finds ESPHome
devices; both bound to 127.0.0.1 only, so nothing is multicast beyond loopback."""

import asyncio
import os

from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from tallylight.uplink import mdns
from tallylight.uplink.server import DeviceIdentity


def test_the_service_is_found_with_its_port_mac_and_the_encryption_it_requires():
    name = f"tallylight-t{os.getpid()}"  # unique: tests run in parallel workers
    ident = DeviceIdentity(name, "Test speaker", "02:00:00:AA:BB:CC", "0.1.0")

    async def main():
        zc = await mdns.announce(mdns.service_info(ident, 6053, ["127.0.0.1"], encrypted=True),
                                 interfaces=["127.0.0.1"])
        home_assistant = AsyncZeroconf(interfaces=["127.0.0.1"])
        try:
            info = AsyncServiceInfo(mdns.SERVICE_TYPE, f"{name}.{mdns.SERVICE_TYPE}")
            assert await info.async_request(home_assistant.zeroconf, 5000)
            assert (info.port, info.parsed_addresses(), info.server) == (6053, ["127.0.0.1"], f"{name}.local.")
            props = {k.decode(): v.decode() for k, v in info.properties.items()}
            assert props["mac"] == "020000aabbcc" and props["friendly_name"] == "Test speaker"
            assert props["api_encryption"] == "Noise_NNpsk0_25519_ChaChaPoly_SHA256"
        finally:
            await home_assistant.async_close()
            await zc.async_close()
    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_plaintext_device_does_not_claim_encryption():
    info = mdns.service_info(DeviceIdentity("n", "N", "02:00:00:00:00:01", "0"), 6053, ["127.0.0.1"], False)
    assert b"api_encryption" not in info.properties
