"""Home Assistant's side of the ESPHome link for the bench: aioesphomeapi's APIClient connects to the
uplink at 127.0.0.1:PORT, reads the device and its entities, subscribes to states and the voice
assistant, and once it has the states and the voice assistant's configuration prints one JSON line
{"served_s": seconds from connect() to then} and stays connected until stdin closes."""

from __future__ import annotations

import asyncio
import json
import sys
import time


async def main(port: int) -> None:
    from aioesphomeapi import APIClient

    t0 = time.monotonic()
    api = APIClient("127.0.0.1", port, None, client_info="bench")
    await api.connect(login=True)
    await api.device_info_and_list_entities()
    got = asyncio.Event()
    api.subscribe_states(lambda _s: got.set())

    async def start(*_a):
        return 0

    async def stop(*_a):
        return None

    api.subscribe_voice_assistant(handle_start=start, handle_stop=stop)
    await asyncio.wait_for(got.wait(), 10)
    # Asked after the subscription on the same connection, so its answer means the uplink has taken the
    # subscription: this client is the voice assistant's now (a stale connection it replaced is gone).
    await api.get_voice_assistant_configuration(10)
    print(json.dumps({"served_s": time.monotonic() - t0}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await api.disconnect()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
