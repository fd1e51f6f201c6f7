"""An ESPHome native API server for Home Assistant, the uplink's network side (asyncio).

Home Assistant's ESPHome integration (its aioesphomeapi client) connects, reads the device info and the
entities, subscribes to states and to the voice assistant. What it gets to see and do:
- three read-only binary sensors, muted / capturing / uploading, pushed when the daemon's gate changes.
  There are no switches, buttons or selects: Home Assistant can neither unmute nor change the mode;
- voice assistant feature flags for text mode: VOICE_ASSISTANT | TIMERS | ANNOUNCE (no API_AUDIO, no
  SPEAKER, no START_CONVERSATION: the device never streams audio unless its local config says so); in audio
  mode (home_assistant.mode = "audio" in the local config) also API_AUDIO: after the daemon's own wake word,
  a run starts (VoiceAssistantRequest) and the daemon's stream goes out as VoiceAssistantAudio on this
  connection, to a Home Assistant that subscribed for API audio, and nowhere else;
- timer events and announcements, handed to a `VoiceSink` (the bridge to the daemon) as text, or as
  speech audio that the sink fetches from this connection's own host only, never as anything that could
  open the mic. An announcement's start_conversation is refused (it needs the local
  wake word). Wake words are the local config's; VoiceAssistantSetConfiguration is ignored.

Every accepted socket gets TCP keepalive, and a connection silent for `idle_s` is pinged and dropped as
stale if nothing comes back within `ping_timeout_s` (Home Assistant restarts, half-open links); one that
has not said hello within `ping_timeout_s` is dropped too. A stale connection is also replaced at once:
a second connection subscribing to the voice assistant closes the first (Home Assistant keeps one per
device, so the first is what a restart left behind), and with MAX_CONNECTIONS taken, the one quiet longest
makes room for a new one. A client
that breaks the framing, sends a message that does not parse, or falls `max_write_buffer` bytes behind is
closed with one log line. With a PSK the server speaks only Noise (`api_frames.NoiseCodec`) and refuses
plaintext clients in a way Home Assistant reads as "this device needs an encryption key".
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from aioesphomeapi import api_pb2 as pb
from aioesphomeapi.core import MESSAGE_TYPE_TO_PROTO
from aioesphomeapi.model import VoiceAssistantEventType as Ev
from aioesphomeapi.model import VoiceAssistantFeature, VoiceAssistantSubscriptionFlag, VoiceAssistantTimerEventType
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as Proto

from tallylight.uplink import api_frames, messages
from tallylight.uplink.messages import PipelineEvent, TimerEvent

_LOG = logging.getLogger(__name__)
PROTO_TO_TYPE = {cls: type_ for type_, cls in MESSAGE_TYPE_TO_PROTO.items()}

# 1.10 is the API version Home Assistant's satellites speak (feature flags in the device info, voice
# assistant configuration); newer clients talk down to it.
API_VERSION = (1, 10)
TEXT_MODE_FEATURES = (VoiceAssistantFeature.VOICE_ASSISTANT | VoiceAssistantFeature.TIMERS
                      | VoiceAssistantFeature.ANNOUNCE)
AUDIO_MODE_FEATURES = TEXT_MODE_FEATURES | VoiceAssistantFeature.API_AUDIO
MAX_CONNECTIONS = 4  # Home Assistant, and the owner's `esphome logs` or a reconnect that overlaps a stale one

# (key, object_id, name, icon): the gate's states as read-only binary sensors.
ENTITIES = ((1, "muted", "Muted", "mdi:microphone-off"),
            (2, "capturing", "Capturing", "mdi:record-rec"),
            (3, "uploading", "Uploading audio", "mdi:upload"))

_PIPELINE_EVENTS = {Ev.VOICE_ASSISTANT_RUN_START: "run_start", Ev.VOICE_ASSISTANT_STT_VAD_END: "stt_vad_end",
                    Ev.VOICE_ASSISTANT_STT_END: "stt_end", Ev.VOICE_ASSISTANT_INTENT_END: "intent_end",
                    Ev.VOICE_ASSISTANT_TTS_END: "tts_end", Ev.VOICE_ASSISTANT_RUN_END: "run_end",
                    Ev.VOICE_ASSISTANT_ERROR: "error"}
_TIMER_EVENTS = {VoiceAssistantTimerEventType.VOICE_ASSISTANT_TIMER_STARTED: "started",
                 VoiceAssistantTimerEventType.VOICE_ASSISTANT_TIMER_UPDATED: "updated",
                 VoiceAssistantTimerEventType.VOICE_ASSISTANT_TIMER_CANCELLED: "cancelled",
                 VoiceAssistantTimerEventType.VOICE_ASSISTANT_TIMER_FINISHED: "finished"}
# Kinds Home Assistant sends that this device has nothing to answer to; quietly ignored.
_IGNORED = (pb.SubscribeLogsRequest, pb.SubscribeHomeassistantServicesRequest, pb.SubscribeHomeAssistantStatesRequest,
            pb.GetTimeResponse, pb.SubscribeBluetoothLEAdvertisementsRequest, pb.DeviceCapabilitiesRequest)


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    name: str  # the ESPHome node name: lowercase letters, digits, hyphens
    friendly_name: str
    mac: str  # "AA:BB:CC:DD:EE:FF": Home Assistant's unique id for the device
    version: str
    wake_words: tuple[tuple[str, str], ...] = (("okay_nabu", "Okay Nabu"),)  # (id, phrase), from local config


class VoiceSink(Protocol):
    """Where what Home Assistant says goes: the bridge to the daemon. Text and plain events only."""

    def timer_event(self, event: TimerEvent) -> None: ...

    def pipeline_event(self, event: PipelineEvent) -> None: ...

    def run_speech(self, run_id: str, text: str, url: str, peer_host: str) -> None:
        """Audio mode: the reply of the run for `run_id` (TTS_END), its speech at `url` on `peer_host`."""

    def announce(self, text: str, media_id: str, peer_host: str) -> Awaitable[bool]: ...

    def home_assistant_link(self, connected: bool, encrypted: bool, audio: bool) -> None: ...


def _ident(value: str) -> str | None:
    return value if messages._ID.fullmatch(value) else None


class ApiServer:
    def __init__(self, identity: DeviceIdentity, sink: VoiceSink, *, psk: bytes | None = None, idle_s: float = 60.0,
                 ping_timeout_s: float = 20.0, max_write_buffer: int = 256 * 1024, audio_mode: bool = False) -> None:
        self.identity = identity
        self.audio_mode = audio_mode  # the local config's home_assistant.mode; nothing Home Assistant says changes it
        self.sink = sink
        self.psk = psk
        self.idle_s = idle_s
        self.ping_timeout_s = ping_timeout_s
        self.max_write_buffer = max_write_buffer
        self.connections: list[_Connection] = []
        self.voice: _Connection | None = None  # the connection subscribed to the voice assistant
        self._gate_state: str | None = None
        self._server: asyncio.Server | None = None
        self._stream_to: _Connection | None = None
        self.run_id: str | None = None  # the daemon's utterance a pipeline run of Home Assistant belongs to
        self.run_reply_text = ""  # TTS_START's text for that run, said with its TTS_END
        self.audio_sent = 0  # PCM bytes of the current stream handed to Home Assistant's connection

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, reuse_address=True)
        bound = self._server.sockets[0].getsockname()[1]
        _LOG.info("ESPHome API listening on %s:%d (%s)", host, bound, "Noise encrypted" if self.psk else "PLAINTEXT")
        return bound

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self.connections):
            conn.close("the uplink is stopping")

    # --- pushed in by the bridge ---

    def set_gate_state(self, state: str | None) -> None:
        """The daemon's gate state (None: the daemon is not connected, so the states are unknown)."""
        self._gate_state = state
        for conn in self.connections:
            if conn.subscribed_states:
                conn.send(*self.state_messages())

    def state_messages(self) -> list[Proto]:
        return [pb.BinarySensorStateResponse(key=key, state=self._gate_state == obj,
                                             missing_state=self._gate_state is None)
                for key, obj, _, _ in ENTITIES]

    def start_run(self, utterance_id: str, wake_word_phrase: str = "") -> bool:
        """Audio mode only, for the daemon's own stream (after its wake word, light on): ask Home Assistant to
        run its pipeline. False without audio mode or a Home Assistant subscribed for API audio."""
        voice = self.voice
        if voice is None or not (self.audio_mode and voice.api_audio):
            return False
        self.run_id, self.run_reply_text, self.audio_sent = utterance_id, "", 0
        self._stream_to = voice
        voice.send(pb.VoiceAssistantRequest(start=True, conversation_id="", flags=0, wake_word_phrase=wake_word_phrase))
        return True

    def send_audio(self, pcm: bytes) -> bool:
        """A block of the run's stream to the connection the run started on; False when it is gone."""
        conn = self._stream_to
        if conn is None or conn is not self.voice or conn.transport is None or conn.transport.is_closing():
            return False
        conn.send(pb.VoiceAssistantAudio(data=pcm))
        self.audio_sent += len(pcm)
        return True

    async def end_audio(self, abort: bool, timeout_s: float = 2.0) -> int:
        """The stream is over: the end (or, aborted, a stop) to Home Assistant, and wait until this process has
        handed all of it to the kernel. The PCM bytes that went to Home Assistant."""
        conn, self._stream_to = self._stream_to, None
        if conn is None:
            return 0
        if conn.transport is None or conn.transport.is_closing():
            return self.audio_sent  # the connection went: at most this much reached Home Assistant
        conn.send(pb.VoiceAssistantRequest(start=False) if abort else pb.VoiceAssistantAudio(end=True))
        try:
            async with asyncio.timeout(timeout_s):
                while conn.transport is not None and conn.transport.get_write_buffer_size() and not conn.transport.is_closing():
                    await asyncio.sleep(0.005)
        except TimeoutError:
            conn.close(f"Home Assistant took over {timeout_s:g} s to take {conn.transport.get_write_buffer_size()} "
                       "bytes of audio", abort=True)  # what it has not taken is not sent at all
            return 0
        return self.audio_sent

    def _voice_changed(self, conn: _Connection | None) -> None:
        self.voice = conn
        self.sink.home_assistant_link(conn is not None, bool(conn and conn.codec and conn.codec.encrypted),
                                      bool(conn and self.audio_mode and conn.api_audio))


class _Connection(asyncio.Protocol):
    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.codec: api_frames.PlaintextCodec | api_frames.NoiseCodec | None = None
        self.peer = "?"
        self.said_hello = False
        self.subscribed_states = False
        self.api_audio = False  # subscribed to the voice assistant with API audio (audio mode streams only to this)
        self._loop = asyncio.get_running_loop()
        self._last_rx = self._connected_at = self._loop.time()
        self._ping_sent: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if len(self.server.connections) >= MAX_CONNECTIONS:
            # Full, most likely of connections left by a Home Assistant that restarted or lost its network
            # without a FIN: the one quiet longest makes room, so a Home Assistant that comes back is never
            # locked out until the pings find the stale ones.
            quietest = min(self.server.connections, key=lambda c: c._last_rx)
            self.server.connections.remove(quietest)
            quietest.close(f"{MAX_CONNECTIONS} connections: the one quiet longest makes room for {self.peer}",
                           abort=True)
        self.server.connections.append(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            set_keepalive(sock)
        self._schedule_check()
        _LOG.info("API: connection from %s", self.peer)

    def data_received(self, data: bytes) -> None:
        self._last_rx = self._loop.time()
        self._ping_sent = None
        if self.codec is None and not self._choose_codec(data[0]):
            return
        try:
            packets, reply, close_after = self.codec.feed(data)
        except api_frames.ApiFrameError as e:
            self.close(str(e))
            return
        if reply:
            self.transport.write(reply)
        if close_after:
            self.close("wrong encryption key (the Noise handshake failed)")
            return
        for type_, payload in packets:
            if self.transport is None:
                return
            self._handle_packet(type_, payload)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.server.connections:
            self.server.connections.remove(self)
        if self._timer is not None:
            self._timer.cancel()
        for task in self._tasks:
            task.cancel()
        if self.server.voice is self:
            self.server._voice_changed(None)
        self.transport = None
        _LOG.info("API: %s disconnected", self.peer)

    # --- framing ---

    def _choose_codec(self, first: int) -> bool:
        if self.server.psk is not None:
            if first != 0x01:
                self.transport.write(api_frames.plaintext_refusal())
                self.close("a plaintext client, but this device requires encryption (give Home Assistant the key)")
                return False
            self.codec = api_frames.NoiseCodec(self.server.psk, self.server.identity.name, self.server.identity.mac)
        else:
            if first != 0x00:
                self.transport.write(api_frames.encryption_refusal())
                self.close("an encrypted client, but this device runs plaintext (remove the key in Home Assistant)")
                return False
            self.codec = api_frames.PlaintextCodec()
        return True

    def send(self, *msgs: Proto) -> None:
        if self.transport is None or self.transport.is_closing() or self.codec is None:
            return
        self.transport.write(self.codec.encode([(PROTO_TO_TYPE[type(m)], m.SerializeToString()) for m in msgs]))
        if self.transport.get_write_buffer_size() > self.server.max_write_buffer:
            self.close(f"the client fell more than {self.server.max_write_buffer} bytes behind", abort=True)

    def close(self, why: str | None = None, *, abort: bool = False) -> None:
        """Close after what is buffered is sent; `abort`: at once, dropping it (a stale or slow peer may
        never read it, and a close would wait for that until TCP gives up)."""
        if why:
            _LOG.warning("API: closing %s: %s", self.peer, why)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort() if abort else self.transport.close()

    # --- stale connections ---

    def _schedule_check(self) -> None:
        self._timer = self._loop.call_later(min(self.server.idle_s, self.server.ping_timeout_s) / 4, self._check)

    def _check(self) -> None:
        if self.transport is None:
            return
        now = self._loop.time()
        if not self.said_hello and now - self._connected_at > self.server.ping_timeout_s:
            # A peer that connects and never gets through the handshake (a port scanner, a stuck client, a
            # half-done Noise handshake) would hold a slot for ever: it has as long as a ping's answer.
            self.close(f"no hello within {self.server.ping_timeout_s:g} s of connecting", abort=True)
            return
        if self._ping_sent is not None and now - self._ping_sent > self.server.ping_timeout_s:
            _LOG.warning("API: %s: no answer to a ping for %g s: dropping a stale connection",
                         self.peer, self.server.ping_timeout_s)
            self.transport.abort()
            return
        if self._ping_sent is None and now - self._last_rx > self.server.idle_s and self.said_hello:
            self._ping_sent = now
            self.send(pb.PingRequest())
        self._schedule_check()

    # --- messages ---

    def _handle_packet(self, type_: int, payload: bytes) -> None:
        cls = MESSAGE_TYPE_TO_PROTO.get(type_)
        if cls is None:
            _LOG.info("API: %s: ignored a message of unknown type %d", self.peer, type_)
            return
        try:
            msg = cls.FromString(payload)
        except DecodeError:
            self.close(f"a {cls.__name__} that does not parse ({len(payload)} bytes)")
            return
        if not self.said_hello and not isinstance(msg, pb.HelloRequest):
            self.close(f"{cls.__name__} before HelloRequest")
            return
        handler = _HANDLERS.get(cls)
        if handler is not None:
            handler(self, msg)
        elif isinstance(msg, _IGNORED):
            _LOG.debug("API: %s: nothing to do for %s", self.peer, cls.__name__)
        else:
            # Commands for entities this device does not have, Bluetooth, and the like.
            _LOG.info("API: %s: ignored %s (this device has nothing it applies to)", self.peer, cls.__name__)

    def _hello(self, msg: pb.HelloRequest) -> None:
        self.said_hello = True
        ident = self.server.identity
        self.send(pb.HelloResponse(api_version_major=API_VERSION[0], api_version_minor=API_VERSION[1],
                                   server_info=f"tallylight {ident.version}", name=ident.name))

    def _authenticate(self, msg: pb.AuthenticationRequest) -> None:
        # No passwords (deprecated in ESPHome): the Noise key is the credential.
        self.send(pb.AuthenticationResponse(invalid_password=False))

    def _device_info(self, msg: pb.DeviceInfoRequest) -> None:
        ident = self.server.identity
        self.send(pb.DeviceInfoResponse(
            uses_password=False, name=ident.name, friendly_name=ident.friendly_name, mac_address=ident.mac,
            esphome_version="2025.9.0", model="Raspberry Pi", manufacturer="tallylight",
            project_name="tallylight.speaker", project_version=ident.version,
            voice_assistant_feature_flags=int(AUDIO_MODE_FEATURES if self.server.audio_mode else TEXT_MODE_FEATURES),
            api_encryption_supported=self.server.psk is not None))

    def _list_entities(self, msg: pb.ListEntitiesRequest) -> None:
        self.send(*[pb.ListEntitiesBinarySensorResponse(object_id=obj, key=key, name=name, icon=icon)
                    for key, obj, name, icon in ENTITIES], pb.ListEntitiesDoneResponse())

    def _subscribe_states(self, msg: pb.SubscribeStatesRequest) -> None:
        self.subscribed_states = True
        self.send(*self.server.state_messages())

    def _ping(self, msg: pb.PingRequest) -> None:
        self.send(pb.PingResponse())

    def _pong(self, msg: pb.PingResponse) -> None:
        pass  # data_received already counted it as a sign of life

    def _disconnect(self, msg: pb.DisconnectRequest) -> None:
        self.send(pb.DisconnectResponse())
        self.close()

    def _disconnect_response(self, msg: pb.DisconnectResponse) -> None:
        self.close()

    def _subscribe_voice(self, msg: pb.SubscribeVoiceAssistantRequest) -> None:
        if msg.subscribe:
            old = self.server.voice
            if old not in (None, self):
                # Home Assistant keeps one connection to a device: a second one subscribing means it
                # restarted and the first is stale (half-open, or its FIN never came). Replace it now
                # rather than after the pings time out.
                _LOG.info("API: %s takes over the voice assistant from %s", self.peer, old.peer)
                old.close(f"replaced by a new Home Assistant connection from {self.peer}", abort=True)
            self.api_audio = bool(msg.flags & VoiceAssistantSubscriptionFlag.API_AUDIO)
            self.server._voice_changed(self)
        elif self.server.voice is self:
            self.server._voice_changed(None)

    def _voice_configuration(self, msg: pb.VoiceAssistantConfigurationRequest) -> None:
        # External wake words Home Assistant offers (with model URLs) are not used: nothing is downloaded.
        words = self.server.identity.wake_words
        self.send(pb.VoiceAssistantConfigurationResponse(
            available_wake_words=[pb.VoiceAssistantWakeWord(id=i, wake_word=w, trained_languages=["en"])
                                  for i, w in words],
            active_wake_words=[i for i, _ in words], max_active_wake_words=len(words)))

    def _set_voice_configuration(self, msg: pb.VoiceAssistantSetConfiguration) -> None:
        _LOG.info("API: %s: ignored a wake word change: wake words are set in the local config file", self.peer)

    def _voice_event(self, msg: pb.VoiceAssistantEventResponse) -> None:
        name = _PIPELINE_EVENTS.get(msg.event_type)
        run_id = self.server.run_id
        if msg.event_type == Ev.VOICE_ASSISTANT_TTS_START and run_id is not None:
            text = next((d.value for d in msg.data if d.name == "text"), "")
            self.server.run_reply_text = messages.clean_text(text, messages.MAX_TEXT_CHARS)
        if name is None:
            return
        if run_id is None:
            _LOG.info("API: %s: ignored pipeline event %s: no run of this device is under way", self.peer, name)
            return
        data = {d.name: d.value for d in msg.data}
        event = PipelineEvent(run_id, name, messages.clean_text(data.get("code", ""), messages.MAX_NAME_CHARS),
                              messages.clean_text(data.get("message", ""), 500))
        if name in ("run_end", "error"):
            self.server.run_id = None
        self.server.sink.pipeline_event(event)
        if name == "tts_end" and (data.get("url") or self.server.run_reply_text):
            # The speech is fetched by the sink from this connection's own host only, like an announcement's.
            self.server.sink.run_speech(run_id, self.server.run_reply_text, data.get("url", "")[:2000], self._host())

    def _timer_event(self, msg: pb.VoiceAssistantTimerEventResponse) -> None:
        name = _TIMER_EVENTS.get(msg.event_type)
        timer_id = _ident(msg.timer_id)
        if name is None or timer_id is None:
            _LOG.warning("API: %s: dropped a timer event (type %d, id %r)", self.peer, msg.event_type,
                         msg.timer_id[:messages.MAX_ID_CHARS])
            return
        cap = messages.MAX_SECONDS
        self.server.sink.timer_event(TimerEvent(
            name, timer_id, messages.clean_text(msg.name, messages.MAX_NAME_CHARS),
            min(msg.total_seconds, cap), min(max(msg.seconds_left, 0), cap), msg.is_active))

    def _announce(self, msg: pb.VoiceAssistantAnnounceRequest) -> None:
        if msg.start_conversation:
            _LOG.info("API: %s: an announcement asked to start a conversation: refused, the mic opens only "
                      "after the local wake word", self.peer)
        if msg.preannounce_media_id:
            _LOG.info("API: %s: an announcement's chime (preannounce_media_id) is not played", self.peer)
        text = messages.clean_text(msg.text, messages.MAX_TEXT_CHARS)
        # The media URL is only ever fetched from this connection's host (the sink checks it), never run.
        media_id = msg.media_id[:2000] if msg.media_id else ""
        task = asyncio.ensure_future(self._finish_announce(text, media_id, self._host()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _host(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        return peer[0] if isinstance(peer, tuple) else ""

    async def _finish_announce(self, text: str, media_id: str, host: str) -> None:
        # An empty announcement has nothing to say: the daemon never hears of it.
        played = bool(text or media_id) and await self.server.sink.announce(text, media_id, host)
        self.send(pb.VoiceAssistantAnnounceFinished(success=played))


_HANDLERS: dict[type, Callable[[_Connection, Proto], None]] = {
    pb.HelloRequest: _Connection._hello,
    pb.AuthenticationRequest: _Connection._authenticate,
    pb.DeviceInfoRequest: _Connection._device_info,
    pb.ListEntitiesRequest: _Connection._list_entities,
    pb.SubscribeStatesRequest: _Connection._subscribe_states,
    pb.PingRequest: _Connection._ping,
    pb.PingResponse: _Connection._pong,
    pb.DisconnectRequest: _Connection._disconnect,
    pb.DisconnectResponse: _Connection._disconnect_response,
    pb.SubscribeVoiceAssistantRequest: _Connection._subscribe_voice,
    pb.VoiceAssistantConfigurationRequest: _Connection._voice_configuration,
    pb.VoiceAssistantSetConfiguration: _Connection._set_voice_configuration,
    pb.VoiceAssistantEventResponse: _Connection._voice_event,
    pb.VoiceAssistantTimerEventResponse: _Connection._timer_event,
    pb.VoiceAssistantAnnounceRequest: _Connection._announce,
}


def set_keepalive(sock: socket.socket, idle_s: int = 15, interval_s: int = 5, count: int = 3) -> None:
    """TCP keepalive, so the kernel notices a peer that vanished without a FIN (about 30 s here)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
