"""The uplink's end of the daemon socket (DaemonBridge) against real unix-socket daemons that misbehave:
garbage, wrong-way messages, silence on announcements, disconnects; it reconnects and never hangs."""

import asyncio
import logging

from tallylight.uplink import messages
from tallylight.uplink.daemon_client import DaemonBridge, cancel_and_wait
from tallylight.uplink.messages import MessageReader
from tallylight.uplink.server import ApiServer, DeviceIdentity

WAIT_S = 10.0


class FakeDaemon:
    """A unix-socket server playing the daemon; records each connection's decoded messages."""

    def __init__(self, path):
        self.path = path
        self.connections: list[tuple[asyncio.StreamWriter, list]] = []

    async def start(self):
        self.server = await asyncio.start_unix_server(self._serve, str(self.path))

    async def _serve(self, reader, writer):
        got: list = []
        self.connections.append((writer, got))
        decoder = MessageReader(messages.TO_DAEMON_KINDS)
        while data := await reader.read(65536):
            got += decoder.feed(data)

    async def close(self):
        self.server.close()
        for writer, _ in self.connections:
            writer.close()


async def until(cond):
    async with asyncio.timeout(WAIT_S):
        while not cond():
            await asyncio.sleep(0.005)


def bridge_with_server(path, **kw):
    bridge = DaemonBridge(path, "tallylight-uplink test", retry_s=0.05, max_retry_s=0.1, **kw)
    server = ApiServer(DeviceIdentity("t", "T", "02:00:00:00:00:01", "0"), bridge)
    bridge.server = server
    return bridge, server


def test_garbage_from_the_daemon_drops_that_connection_and_the_bridge_reconnects(tmp_path, caplog):
    async def main():
        daemon = FakeDaemon(tmp_path / "d.sock")
        await daemon.start()
        bridge, server = bridge_with_server(daemon.path)
        task = asyncio.create_task(bridge.run())
        await until(lambda: len(daemon.connections) == 1 and daemon.connections[0][1])
        assert daemon.connections[0][1][:2] == [messages.UplinkHello("tallylight-uplink test"),
                                                messages.HomeAssistantLink(False, False, False)]
        daemon.connections[0][0].write(b"\x00garbage that is no frame at all")
        await until(lambda: len(daemon.connections) == 2)
        assert "the daemon broke the protocol: bad frame magic" in caplog.text
        # The new connection works: a state arrives, a wrong-way kind and an unknown one are dropped.
        writer = daemon.connections[1][0]
        writer.write(messages.encode(messages.Announcement("a1", "not from the daemon", False))
                     + messages.encode(messages.State("uploading")))
        await until(lambda: server._gate_state == "uploading")
        assert "dropped a message: Announcement may not be sent this way (to_daemon only)" in caplog.text
        # This uplink is in text mode (its config): audio is dropped and counted, never held, and the daemon is
        # told at once, so its upload ends; its AudioEnd gets "nothing went on".
        writer.write(messages.encode(messages.AudioChunk("u1", 0, b"\0\0")) + messages.encode(messages.AudioEnd("u1", "vad_end")))
        await until(lambda: bridge.dropped == 1 and messages.AudioSent("u1", 0) in daemon.connections[1][1])
        assert messages.PipelineEvent("u1", "error", "not_audio_mode", "this uplink is in text mode") in daemon.connections[1][1]
        # The daemon goes: the states become unknown.
        writer.close()
        await until(lambda: server._gate_state is None)
        await cancel_and_wait(task)
        await daemon.close()
    caplog.set_level(logging.INFO)
    asyncio.run(asyncio.wait_for(main(), 60))


def test_an_announcement_fails_fast_without_a_daemon_and_after_a_timeout_with_a_silent_one(tmp_path):
    async def main():
        bridge, _ = bridge_with_server(tmp_path / "none.sock", announce_timeout_s=0.2)
        assert await bridge.announce("hello") is False  # no daemon: at once
        daemon = FakeDaemon(tmp_path / "d.sock")
        await daemon.start()
        bridge, _ = bridge_with_server(daemon.path, announce_timeout_s=0.2)
        task = asyncio.create_task(bridge.run())
        await until(lambda: bridge.connected)
        assert await bridge.announce("hello") is False  # the daemon never says AnnounceDone
        pending = asyncio.create_task(bridge.announce("again"))
        await until(lambda: any(isinstance(m, messages.Announcement) and m.text == "again"
                                for m in daemon.connections[0][1]))
        ann = [m for m in daemon.connections[0][1] if isinstance(m, messages.Announcement)][-1]
        daemon.connections[0][0].write(messages.encode(messages.AnnounceDone(ann.announce_id, True)))
        assert await pending is True
        await cancel_and_wait(task)
        await daemon.close()
    asyncio.run(asyncio.wait_for(main(), 60))
