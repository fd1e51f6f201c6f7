"""Faults the other tests do not cover: random bytes and broken Noise handshakes on the ESPHome port, a peer
that connects and says nothing, a peer that stops reading while states pile up for it, and Home Assistant's
WebSocket killed in the middle of a conversation the real daemon started.

Already covered elsewhere: a broken varuint, an oversized plaintext frame, a message before the hello and
HTTP on the port (test_uplink_server.py), arbitrary bytes into each codec (hypothesis, same file), a socket
peer that never reads (test_uplink_link.py), a Home Assistant that is silent, garbage, or closes mid-run at
the bridge (test_uplink_conversation.py).
"""

import asyncio
import logging
import random
import shutil
import socket
import tempfile
from pathlib import Path

import pytest
from aioesphomeapi import api_pb2 as pb
from test_uplink_daemon import Rig, UplinkThread, until
from test_uplink_server import PSK, RawPeer, client, started
from test_uplink_server import run as run_async
from test_uplink_server import until as until_async

from tallylight.gate import State
from tallylight.uplink import api_frames
from tallylight.uplink_port import ERROR_REPLY


@pytest.fixture
def short_dir():
    d = Path(tempfile.mkdtemp(prefix="tl-", dir="/tmp"))  # a unix socket's path: at most 107 bytes
    yield d
    shutil.rmtree(d, ignore_errors=True)


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("tallylight")]


@pytest.mark.parametrize("noise", [False, True], ids=["plaintext", "noise"])
def test_random_bytes_on_the_api_port_close_that_peer_with_one_line_and_home_assistant_is_served(noise, caplog):
    rng = random.Random(15)
    blobs = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000))) for _ in range(40)]
    # And each one behind the right first byte, so the codec itself has to judge it.
    blobs += [(b"\x01" if noise else b"\x00") + b for b in blobs[:20]]

    async def main():
        server, _, port = await started(PSK if noise else None, idle_s=0.5, ping_timeout_s=0.5)
        for blob in blobs:
            caplog.clear()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(blob)
            async with asyncio.timeout(5):
                while await reader.read(65536):  # closed by the server: at once, or by the hello timeout
                    pass
            writer.close()
            assert len(warnings_of(caplog)) == 1, (blob[:20], warnings_of(caplog))
            assert not any(r.exc_info for r in caplog.records)
        api = client(port, PSK if noise else None)
        await api.connect(login=True)
        await api.disconnect()
        assert len(server.connections) == 0
        await server.close()

    run_async(main())


@pytest.mark.parametrize("handshake, words", [
    (b"\x00" + bytes(48), "wrong encryption key"),  # the right shape, no key behind it
    (b"\x00" + random.Random(1).randbytes(500), "wrong encryption key"),
    (b"\x07garbage", "noise handshake frame does not start with 0x00"),
    (b"", "noise handshake frame does not start with 0x00"),
])
def test_a_broken_noise_handshake_is_refused_with_one_line(handshake, words, caplog):
    async def main():
        server, _, port = await started(PSK)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x01\x00\x00")  # the client's (empty) hello frame
        writer.write(b"\x01" + len(handshake).to_bytes(2, "big") + handshake)
        got = b""
        async with asyncio.timeout(5):
            while data := await reader.read(65536):
                got += data
        if words == "wrong encryption key":
            assert got.startswith(b"\x01")  # the server's hello came first
            assert got.endswith(b"\x01Handshake MAC failure")  # what aioesphomeapi reads as a wrong key
        (line,) = warnings_of(caplog)
        assert words in line
        await server.close()

    run_async(main())


def test_a_peer_that_connects_and_says_nothing_loses_its_slot_after_the_ping_timeout(caplog):
    async def main():
        server, _, port = await started(PSK, idle_s=0.3, ping_timeout_s=0.3)
        quiet = await RawPeer.connect(port)
        half = await RawPeer.connect(port)
        half.writer.write(b"\x01\x00\x00")  # a Noise hello, then no handshake
        assert await quiet.closed() and await half.closed()
        assert sum("no hello within 0.3 s of connecting" in w for w in warnings_of(caplog)) == 2
        assert not server.connections
        await server.close()

    run_async(main())


def test_a_peer_that_stops_reading_is_dropped_when_its_buffer_fills_and_nobody_else_waits(caplog):
    async def main():
        server, sink, port = await started(max_write_buffer=32 * 1024)
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", port))
        # A plain socket nothing reads from (asyncio's reader would read ahead into its own buffer).
        slow.sendall(api_frames.encode_plaintext([(1, pb.HelloRequest(client_info="slow").SerializeToString()),
                                                  (20, pb.SubscribeStatesRequest().SerializeToString())]))
        await until_async(lambda: server.connections and server.connections[0].subscribed_states)
        healthy = client(port)
        await healthy.connect(login=True)
        states = {}
        healthy.subscribe_states(lambda s: states.__setitem__(s.key, s))
        await until_async(lambda: len(states) == 3)
        slow_conn, healthy_conn = server.connections
        # The slow peer reads nothing from here on. Each change is three state messages to it; between
        # bursts of them the loop runs, so the healthy client reads its share. A push is a plain call
        # (no coroutine, so it cannot wait for a peer): what shows it never waits is that the slow
        # peer's backlog is bounded, and the slow peer is dropped while pushes go on.
        assert not asyncio.iscoroutinefunction(server.set_gate_state)
        most_buffered = 0
        for i in range(200000):
            server.set_gate_state("capturing" if i % 2 else "listening")
            if slow_conn.transport is None or slow_conn.transport.is_closing():
                break
            most_buffered = max(most_buffered, slow_conn.transport.get_write_buffer_size())
            if i % 50 == 0:
                await asyncio.sleep(0.001)
        assert slow_conn.transport is None or slow_conn.transport.is_closing(), "the slow peer was never dropped"
        assert 0 < most_buffered <= 32 * 1024, most_buffered  # its backlog never grew past the cap
        await until_async(lambda: server.connections == [healthy_conn])
        assert any("fell more than 32768 bytes behind" in w for w in warnings_of(caplog))
        server.set_gate_state("muted")
        await until_async(lambda: states[1].state)  # the other client still hears every change
        await healthy.disconnect()
        slow.close()
        await server.close()

    run_async(main())


def test_home_assistant_killed_mid_conversation_gets_the_owner_a_spoken_failure_and_the_daemon_listens_on(
        tmp_path, short_dir, synth, monkeypatch):
    from tallylight.speech.understand import make_understander
    from testkit import speech

    sock = short_dir / "uplink.sock"
    audio = speech.pcm(synth("okay nabu, turn on the kitchen light", lead_s=0.3, tail_s=1.5))
    rig = Rig(tmp_path / "state", sock, muted=False, audio=audio, names=["kitchen light"], areas=["kitchen"],
              understander=make_understander, extra={"recognizer": {"engine": "pocketsphinx"}})
    said: list[str] = []
    with UplinkThread(sock, tts="none", behaviour="kill_mid_run") as up, rig:
        speaker = rig.daemon.responder.speaker
        say = speaker.say
        speaker.say = lambda text: (said.append(text), say(text))[1]
        until(lambda: rig.daemon.uplink.link.connected and up.bridge.connected, what="the uplink connected")
        rig.mic.speak.set()
        until(lambda: said, what="the daemon saying what happened")
        assert said == [ERROR_REPLY]
        until(lambda: rig.daemon.gate.state is State.LISTENING and not speaker.speaking, what="listening again")
        blocks = rig.daemon.blocks_read
        until(lambda: rig.daemon.blocks_read > blocks + 10, what="the loop going on")
        # Home Assistant is back: the same words again reach it on a new WebSocket, and its answer is said.
        rig.mic._pos = 0
        until(lambda: len(said) == 2, what="the second answer")
    assert said == [ERROR_REPLY, "Turned on the kitchen light"]
    assert len(up.ha.runs()) == 2 and rig.rc == 0 and rig.mic.violations == []
    assert "uploading" not in rig.states and up.audio_bytes == 0
