"""The uplink's ESPHome API server against Home Assistant's own client library (aioesphomeapi's APIClient)
over 127.0.0.1, plaintext and Noise-encrypted, and against raw peers that misbehave."""

import asyncio
import base64
import contextlib
import logging
import os
import socket

import pytest
from aioesphomeapi import APIClient, BinarySensorInfo, BinarySensorState
from aioesphomeapi import api_pb2 as pb
from aioesphomeapi.core import (
    MESSAGE_TYPE_TO_PROTO,
    EncryptionPlaintextAPIError,
    InvalidEncryptionKeyAPIError,
    RequiresEncryptionAPIError,
)
from aioesphomeapi.model import VoiceAssistantEventType, VoiceAssistantFeature, VoiceAssistantTimerEventType
from hypothesis import given, settings
from hypothesis import strategies as st

from tallylight.uplink import api_frames
from tallylight.uplink.messages import PipelineEvent, TimerEvent
from tallylight.uplink.server import ApiServer, DeviceIdentity

WAIT_S = 10.0
IDENTITY = DeviceIdentity("tallylight-kitchen", "Kitchen speaker", "02:00:00:12:34:56", "0.1.0")
PSK = os.urandom(32)


class RecordingSink:
    """The bridge to the daemon, as the server sees it: records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.changed = asyncio.Event()

    def _record(self, *call) -> None:
        self.calls.append(call)
        self.changed.set()

    def timer_event(self, event):
        self._record("timer_event", event)

    def pipeline_event(self, event):
        self._record("pipeline_event", event)

    async def announce(self, text, media_id, peer_host):
        self._record("announce", text, media_id, peer_host)
        return True

    def home_assistant_link(self, connected, encrypted, audio):
        self._record("home_assistant_link", connected, encrypted)
        self.audio = audio

    async def wait(self, cond):
        async with asyncio.timeout(WAIT_S):
            while not cond(self.calls):
                self.changed.clear()
                await self.changed.wait()


async def until(cond, timeout=WAIT_S):
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.005)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def started(psk=None, **kw):
    sink = RecordingSink()
    server = ApiServer(IDENTITY, sink, psk=psk, **kw)
    port = await server.start("127.0.0.1", 0)
    return server, sink, port


def client(port, psk=None) -> APIClient:
    key = base64.b64encode(psk).decode() if psk else None
    return APIClient("127.0.0.1", port, None, noise_psk=key, client_info="test")


@pytest.mark.parametrize("psk", [None, PSK], ids=["plaintext", "noise"])
def test_home_assistants_client_sees_the_device_and_only_read_only_entities(psk):
    async def main():
        server, sink, port = await started(psk)
        api = client(port, psk)
        await api.connect(login=True)
        info, entities, services = await api.device_info_and_list_entities()
        assert (info.name, info.friendly_name, info.mac_address) == (IDENTITY.name, IDENTITY.friendly_name,
                                                                      IDENTITY.mac)
        flags = info.voice_assistant_feature_flags_compat(api.api_version)
        Feature = VoiceAssistantFeature
        assert flags == Feature.VOICE_ASSISTANT | Feature.TIMERS | Feature.ANNOUNCE
        assert not flags & (VoiceAssistantFeature.API_AUDIO | VoiceAssistantFeature.START_CONVERSATION)
        assert info.api_encryption_supported is (psk is not None)
        assert [(type(e), e.object_id, e.name) for e in entities] == [
            (BinarySensorInfo, "muted", "Muted"), (BinarySensorInfo, "capturing", "Capturing"),
            (BinarySensorInfo, "uploading", "Uploading audio")]
        assert services == []
        assert server.connections[0].codec.encrypted is (psk is not None)
        await api.disconnect()
        await until(lambda: not server.connections)
        await server.close()
    run(main())


def test_state_changes_are_pushed_to_a_subscribed_client():
    async def main():
        server, sink, port = await started()
        api = client(port)
        await api.connect(login=True)
        states: dict[int, BinarySensorState] = {}
        api.subscribe_states(lambda s: states.__setitem__(s.key, s))
        await until(lambda: len(states) == 3)
        assert all(s.missing_state for s in states.values())  # no daemon yet: unknown, not "off"
        server.set_gate_state("capturing")
        await until(lambda: states[2].state and not states[2].missing_state)
        assert (states[1].state, states[3].state) == (False, False)
        server.set_gate_state("muted")
        await until(lambda: states[1].state and not states[2].state)
        await api.disconnect()
        await server.close()
    run(main())


def test_voice_assistant_subscription_timers_announcements_and_pipeline_events_reach_the_sink_as_text(caplog):
    caplog.set_level(logging.INFO, logger="tallylight.uplink.server")

    async def main():
        server, sink, port = await started()
        api = client(port)
        await api.connect(login=True)
        starts = []

        async def handle_start(conversation_id, flags, audio_settings, wake_word_phrase):
            starts.append(wake_word_phrase)
            return 0

        async def handle_stop(abort):
            pass

        unsub = api.subscribe_voice_assistant(handle_start=handle_start, handle_stop=handle_stop)
        await sink.wait(lambda calls: ("home_assistant_link", True, False) in calls)
        config = await api.get_voice_assistant_configuration(WAIT_S)
        assert [(w.id, w.wake_word) for w in config.available_wake_words] == [("okay_nabu", "Okay Nabu")]
        assert config.active_wake_words == ["okay_nabu"]

        api.send_voice_assistant_timer_event(VoiceAssistantTimerEventType.VOICE_ASSISTANT_TIMER_FINISHED,
                                             "01HZX2", "pasta\nERROR forged", 600, 0, False)
        await sink.wait(lambda calls: any(c[0] == "timer_event" for c in calls))
        assert sink.calls[-1] == ("timer_event", TimerEvent("finished", "01HZX2", "pasta ERROR forged", 600, 0, False))

        finished = await api.send_voice_assistant_announcement_await_response(
            "", WAIT_S, text="Dinner is ready", start_conversation=True)
        assert finished.success
        assert sink.calls[-1] == ("announce", "Dinner is ready", "", "127.0.0.1")
        assert "asked to start a conversation: refused" in caplog.text

        # Pipeline events for a run this device did not start are ignored ...
        api.send_voice_assistant_event(VoiceAssistantEventType.VOICE_ASSISTANT_STT_VAD_END, None)
        await until(lambda: "no run of this device is under way" in caplog.text)
        # A text-mode server never starts a run (it streams nothing).
        assert not server.start_run("utt-1", "okay nabu") and server.run_id is None

        unsub()
        await sink.wait(lambda calls: calls[-1] == ("home_assistant_link", False, False))
        await api.disconnect()
        await server.close()
    run(main())


def test_a_wrong_noise_key_and_a_plaintext_client_are_refused_as_home_assistant_expects():
    async def main():
        server, sink, port = await started(PSK)
        with pytest.raises(InvalidEncryptionKeyAPIError):
            await client(port, os.urandom(32)).connect(login=True)
        with pytest.raises(RequiresEncryptionAPIError):
            await client(port).connect(login=True)
        await until(lambda: not server.connections)
        api = client(port, PSK)  # and the right key still works after those
        await api.connect(login=True)
        assert (await api.device_info()).name == IDENTITY.name
        await api.disconnect()
        await server.close()

        plain, _, plain_port = await started(None)
        with pytest.raises(EncryptionPlaintextAPIError):
            await client(plain_port, PSK).connect(login=True)
        await plain.close()
    run(main())


class RawPeer:
    """A hand-driven plaintext API client, to misbehave on purpose."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.codec = api_frames.PlaintextCodec()
        self.inbox: list = []

    @classmethod
    async def connect(cls, port):
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    def send(self, *msgs):
        self.writer.write(api_frames.encode_plaintext([(_type(m), m.SerializeToString()) for m in msgs]))

    async def receive(self, cls):
        """The next message of type cls (others are kept in inbox); None at end of stream."""
        async with asyncio.timeout(WAIT_S):
            while True:
                for i, msg in enumerate(self.inbox):
                    if isinstance(msg, cls):
                        return self.inbox.pop(i)
                data = await self.reader.read(65536)
                if not data:
                    return None
                packets, _, _ = self.codec.feed(data)
                self.inbox += [MESSAGE_TYPE_TO_PROTO[t].FromString(p) for t, p in packets]

    async def closed(self) -> bool:
        async with asyncio.timeout(WAIT_S):
            while await self.reader.read(65536):
                pass
        return True


def _type(msg):
    return next(t for t, cls in MESSAGE_TYPE_TO_PROTO.items() if cls is type(msg))


def test_accepted_sockets_have_tcp_keepalive():
    async def main():
        server, _, port = await started()
        peer = await RawPeer.connect(port)
        await until(lambda: server.connections)
        sock = server.connections[0].transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 15
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
        peer.writer.close()
        await server.close()
    run(main())


@pytest.mark.parametrize("answers", [False, True], ids=["silent-is-dropped", "answering-stays"])
def test_a_silent_connection_is_pinged_and_dropped_as_stale_and_one_that_answers_is_kept(answers, caplog):
    async def main():
        server, _, port = await started(idle_s=0.2, ping_timeout_s=0.3)
        peer = await RawPeer.connect(port)
        peer.send(pb.HelloRequest(client_info="half-open", api_version_major=1, api_version_minor=10))
        assert await peer.receive(pb.HelloResponse) is not None
        if answers:
            for _ in range(4):
                assert await peer.receive(pb.PingRequest) is not None
                peer.send(pb.PingResponse())
            assert len(server.connections) == 1
        else:
            assert await peer.receive(pb.PingRequest) is not None
            assert await peer.closed()
            assert "no answer to a ping for 0.3 s: dropping a stale connection" in caplog.text
        await server.close()
    run(main())


@pytest.mark.parametrize("raw, reason", [
    (b"\x00\xff\xff\xff\xff\x0f", "a varuint longer than 4 bytes"),
    (b"\x00\xff\xff\x7f\x01", "frame length 2097151 is over 65535"),
    (api_frames.encode_plaintext([(9, b"")]), "DeviceInfoRequest before HelloRequest"),
    (b"GET / HTTP/1.1\r\n\r\n", "a plaintext client, but"),
])
def test_garbage_closes_that_connection_with_one_log_line_and_the_server_serves_the_next(raw, reason, caplog):
    async def main():
        server, _, port = await started(PSK if raw.startswith(b"GET") else None)
        peer = await RawPeer.connect(port)
        peer.writer.write(raw)
        assert await peer.closed()
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and reason in warnings[0], warnings
        assert not any(r.exc_info for r in caplog.records)
        api = client(port, server.psk)
        await api.connect(login=True)
        await api.disconnect()
        await server.close()
    run(main())


def test_an_unparsable_message_closes_and_an_unknown_type_is_ignored(caplog):
    caplog.set_level(logging.INFO, logger="tallylight.uplink.server")

    async def main():
        server, _, port = await started()
        peer = await RawPeer.connect(port)
        peer.send(pb.HelloRequest(client_info="x"))
        await peer.receive(pb.HelloResponse)
        peer.writer.write(api_frames.encode_plaintext([(250, b"\x01\x02")]))
        peer.send(pb.PingRequest())
        assert await peer.receive(pb.PingResponse) is not None
        assert "ignored a message of unknown type 250" in caplog.text
        peer.writer.write(api_frames.encode_plaintext([(9, b"\xff\xff\xff")]))  # DeviceInfoRequest, broken
        assert await peer.closed()
        assert "a DeviceInfoRequest that does not parse (3 bytes)" in caplog.text
        await server.close()
    run(main())


def test_no_message_home_assistant_can_send_starts_a_run_changes_a_state_or_reaches_the_daemon_as_more_than_text():
    # Every message kind of the API, empty, after a hello: the server stays up, no pipeline run starts, the
    # gate's states are untouched, and the daemon side hears only of timers, announcements and the link.
    async def main():
        server, sink, port = await started()
        server.set_gate_state("muted")
        for _, cls in sorted(MESSAGE_TYPE_TO_PROTO.items()):
            if cls in (pb.DisconnectRequest, pb.DisconnectResponse):
                continue
            peer = await RawPeer.connect(port)
            peer.send(pb.HelloRequest(client_info="all"), cls(), pb.PingRequest())
            assert await peer.receive(pb.PingResponse) is not None, cls.__name__
            peer.writer.close()
        assert server.run_id is None and server._gate_state == "muted"
        assert {c[0] for c in sink.calls} <= {"timer_event", "announce", "home_assistant_link"}
        assert not any(c[0] == "announce" for c in sink.calls)  # an empty announcement has nothing to say
        await server.close()
    run(main())


@settings(derandomize=True, database=None, max_examples=300, deadline=None)
@given(data=st.binary(max_size=2048), noise=st.booleans())
def test_arbitrary_bytes_into_either_api_codec_raise_nothing_but_its_frame_error(data, noise):
    codec = api_frames.NoiseCodec(PSK, "n", "m") if noise else api_frames.PlaintextCodec()
    with contextlib.suppress(api_frames.ApiFrameError):
        packets, reply, _ = codec.feed(data)
        assert all(isinstance(t, int) and isinstance(p, bytes) for t, p in packets) and isinstance(reply, bytes)


@pytest.mark.parametrize("api_audio", [True, False], ids=["subscribed_for_audio", "subscribed_without_audio"])
def test_audio_mode_runs_only_for_a_home_assistant_subscribed_for_api_audio(api_audio):
    """Audio mode advertises API_AUDIO; a run starts only towards the connection that subscribed for API audio,
    its stream arrives as Home Assistant's handle_audio and its end as handle_stop, and pipeline events of
    that run reach the sink."""
    async def main():
        server, sink, port = await started(audio_mode=True)
        api = client(port)
        await api.connect(login=True)
        info = await api.device_info()
        assert info.voice_assistant_feature_flags_compat(api.api_version) & VoiceAssistantFeature.API_AUDIO
        starts, audio, stops = [], [], []

        async def handle_start(conversation_id, flags, audio_settings, wake_word_phrase):
            starts.append(wake_word_phrase)
            return 0

        async def handle_stop(abort):
            stops.append(abort)

        async def handle_audio(data, data2):
            audio.append(data)

        unsub = api.subscribe_voice_assistant(handle_start=handle_start, handle_stop=handle_stop,
                                              handle_audio=handle_audio if api_audio else None)
        await sink.wait(lambda calls: ("home_assistant_link", True, False) in calls)
        if not api_audio:
            assert not server.start_run("utt-1") and server.run_id is None
        else:
            assert server.start_run("utt-1")
            await until(lambda: starts == [None])
            for i in range(3):
                assert server.send_audio(bytes([i]) * 640)
            assert await server.end_audio(abort=False) == 3 * 640
            await until(lambda: stops == [False])
            assert audio == [bytes([i]) * 640 for i in range(3)]
            api.send_voice_assistant_event(VoiceAssistantEventType.VOICE_ASSISTANT_STT_VAD_END, None)
            api.send_voice_assistant_event(VoiceAssistantEventType.VOICE_ASSISTANT_ERROR,
                                           {"code": "stt-no-text-recognized", "message": "No text recognized"})
            await sink.wait(lambda calls: sum(c[0] == "pipeline_event" for c in calls) == 2)
            assert [c[1] for c in sink.calls if c[0] == "pipeline_event"] == [
                PipelineEvent("utt-1", "stt_vad_end", "", ""),
                PipelineEvent("utt-1", "error", "stt-no-text-recognized", "No text recognized")]
            assert server.run_id is None  # the error ended the run
            assert not server.send_audio(b"\x00" * 640)  # the stream is over: nothing more goes
        unsub()
        await api.disconnect()
        await server.close()
    run(main())
