"""The daemon's side of the Home Assistant uplink (uplink_port.py) on the real daemon loop.

The daemon runs with its real gate, pipeline, wake engine, ledger, LED and mute switch (gpiozero's
MockFactory pins), its real responder and speaker (espeak-ng and aplay to ALSA's null device), and a real
`UplinkLink` on a unix socket. Only the mic is replaced: `PacedMic` gives silence at a real mic's pace and
records any read or open while the switch says muted. A peer on the socket plays the uplink and sends
each inbound kind (and garbage): nothing it sends may start a capture or an upload, open a muted mic, or
stop the loop.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from tallylight import config as C
from tallylight import ledger as L
from tallylight.daemon import Daemon
from tallylight.events import StateChanged
from tallylight.gate import State
from tallylight.notify import Notifier
from tallylight.pcm import block_bytes
from tallylight.uplink import messages as M
from tallylight.uplink.framing import encode_frame

MUTE_PIN, LED_PIN = 17, 27
BLOCK_MS = 20
WAIT_S = 20.0


def until(cond, timeout=WAIT_S, what="the condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:g} s"
        time.sleep(0.005)


@pytest.fixture
def short_dir():
    # A unix socket's path has at most 107 bytes: pytest's tmp_path for a parametrized test can be longer.
    d = Path(tempfile.mkdtemp(prefix="tl-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


class PacedMic:
    """Silence, one block each BLOCK_MS as a real mic gives it (then `audio`, if any, first)."""

    def __init__(self, factory: MockFactory, muted: bool, audio: bytes = b""):
        self.factory, self.switch_muted, self.audio = factory, muted, audio
        self.daemon: Daemon | None = None
        self.is_open = False
        self.opens = 0
        self.violations: list[str] = []
        self._pace = threading.Event()
        self._pos = 0
        self.speak = threading.Event()  # `audio` starts once this is set; silence until then

    def plug_in(self, _audio_cfg):
        pin = self.factory.pin(MUTE_PIN)
        pin.drive_high() if self.switch_muted else pin.drive_low()  # closed to GND = listening
        return self

    def open(self):
        if self.switch_muted or not self.daemon.gate.mic_open_allowed:
            self.violations.append("P1: the mic opened while muted")
        self.is_open = True
        self.opens += 1

    def read(self) -> bytes:
        if self.switch_muted:
            self.violations.append("P1: a block was read while muted")
        self._pace.wait(BLOCK_MS / 1000)
        size = block_bytes(BLOCK_MS)
        if not self.speak.is_set():
            return bytes(size)
        block = self.audio[self._pos:self._pos + size]
        self._pos += size
        return block + bytes(size - len(block))

    def close(self):
        self.is_open = False


class Peer:
    """The uplink's end of the socket: sends frames, reads what the daemon says (and counts audio bytes)."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.got: list = []
        self.audio_bytes = 0
        self._reader = M.MessageReader(M.TO_UPLINK_KINDS)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            for m in self._reader.feed(data):
                if isinstance(m, M.AudioChunk):
                    self.audio_bytes += len(m.pcm)
                self.got.append(m)

    def send(self, *items):
        for item in items:
            self.sock.sendall(item if isinstance(item, bytes) else M.encode(item))

    def close(self):
        self.sock.close()
        self._thread.join(5)


class Rig:
    def __init__(self, state_dir: Path, sock: Path, *, muted: bool, audio: bytes = b"", understander=None,
                 extra: dict | None = None, **ha):
        raw = {
            "audio": {"block_ms": BLOCK_MS},
            "mute": {"control": "switch", "pin": MUTE_PIN, "debounce_ms": 0},
            "indicator": {"kind": "led", "pin": LED_PIN},
            "capture": {"end_silence_s": 0.4, "no_speech_s": 2.0, "max_s": 4.0},
            "daemon": {"state_dir": str(state_dir)},
            "reply": {"enabled": True, "sounds": False, "output_device": "null"},
            "home_assistant": {"enabled": True, "socket": str(sock), "uplink_user": str(os.getuid()), **ha},
        }
        for section, keys in (extra or {}).items():
            raw[section] = {**raw.get(section, {}), **keys}
        self.cfg = C.from_dict(raw)
        self.factory = MockFactory(pin_class=MockPWMPin)
        self.mic = PacedMic(self.factory, muted, audio)
        self.states: list[str] = []
        self.events: list = []
        self.daemon = Daemon(self.cfg, pin_factory=self.factory, notifier=Notifier(env={}),
                             source_factory=self.mic.plug_in, on_event=self._event, respond=True,
                             consumer_factory=(lambda exposed=None: understander(self.cfg, exposed)) if understander else None)
        self.mic.daemon = self.daemon
        self.rc: int | None = None
        self.raised: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _event(self, ev):
        self.events.append(ev)
        if isinstance(ev, StateChanged):
            self.states.append(ev.state)

    def _run(self):
        try:
            self.rc = self.daemon.run()
        except BaseException as e:
            self.raised.append(e)

    def __enter__(self):
        self.thread.start()
        until(lambda: self.daemon.uplink is not None and self.daemon.gate is not None
              and self.daemon.gate.state in (State.MUTED, State.LISTENING) and self.daemon._ready_sent,
              what="the daemon coming up")
        return self

    def __exit__(self, *exc):
        self.daemon.request_stop()
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive(), "the daemon did not stop"

    def ledger(self):
        return [e for _, e, _ in L.read_entries(self.cfg.state_dir / "ledger.jsonl")]


def frames_of(kind: str) -> list[M.Message | bytes]:
    """Well-formed messages of one kind, in every variant that could be taken for "listen" or "send"."""
    return {
        "ReplyText": [M.ReplyText("u1", "okay nabu, what can I do", False), M.ReplyText("u9", "listening", True),
                      M.ReplyAudio("u9", 0, bytes(3200)), M.ReplyAudioEnd("u9")],
        "ReplyAudio": [M.ReplyAudio("x", 0, bytes(3200)), M.ReplyAudio("x", 5, b"\x01\x00" * 100), M.ReplyAudioEnd("x")],
        "Announcement": [M.Announcement("a1", "Dinner is ready. Okay nabu.", False),
                         M.Announcement("a2", "", True), M.ReplyAudio("a2", 0, bytes(6400)), M.ReplyAudioEnd("a2")],
        "TimerEvent": [M.TimerEvent(ev, "t1", "pasta", 60, 0 if ev == "finished" else 30, ev != "finished")
                       for ev in ("started", "updated", "finished", "cancelled")],
        "PipelineEvent": [M.PipelineEvent("u1", ev, "", "") for ev in ("run_start", "stt_vad_end", "intent_end", "run_end")]
                         + [M.PipelineEvent("u1", "error", "no_peer", "start conversation")],
        "UplinkHello": [M.UplinkHello("tallylight-uplink test")],
        "HomeAssistantLink": [M.HomeAssistantLink(True, False, False), M.HomeAssistantLink(True, True, False),
                              M.HomeAssistantLink(True, True, True), M.HomeAssistantLink(False, False, False),
                              M.HomeAssistantLink(True, True, True)],
        # "Your stream is sent", for streams that never were.
        "AudioSent": [M.AudioSent("u1", 0), M.AudioSent("u9", 64000)],
        # Names that sound like the wake word and a local command: words for the grammar, nothing more.
        "ExposedNames": [M.ExposedNames(("okay nabu", "stop listening", "porch lamp"), ("garden",))],
        # A daemon-to-uplink kind, an unknown kind, bad JSON, an extra "listen" field: each dropped, link kept.
        "garbage": [M.encode(M.AudioChunk("u1", 0, bytes(64))), encode_frame(200, b"{}", b""),
                    encode_frame(M.ReplyText.KIND, b"{not json", b""),
                    encode_frame(M.Announcement.KIND,
                                 b'{"announce_id":"a","text":"hi","with_audio":false,"start_conversation":true}', b"")],
    }[kind]


KINDS = ["ReplyText", "ReplyAudio", "Announcement", "TimerEvent", "PipelineEvent", "UplinkHello",
         "HomeAssistantLink", "AudioSent", "ExposedNames", "garbage"]


def test_every_kind_the_daemon_accepts_is_driven_by_the_test_below():
    assert {M.KINDS[k].__name__ for k in M.TO_DAEMON_KINDS} == set(KINDS) - {"garbage"} | {"ReplyAudioEnd"}


@pytest.mark.parametrize("mode", ["text", "audio"])
@pytest.mark.parametrize("muted", [False, True], ids=["listening", "muted"])
@pytest.mark.parametrize("kind", KINDS)
def test_no_message_from_the_network_starts_a_capture_or_an_upload(tmp_path, short_dir, kind, muted, mode):
    sock = short_dir / "uplink.sock"
    with Rig(tmp_path, sock, muted=muted, mode=mode) as rig:
        link = rig.daemon.uplink.link
        peer = Peer(sock)
        until(lambda: link.connected, what="the peer's connection accepted")
        # The daemon greets a new uplink with who it is (text mode) and its state, read-only.
        until(lambda: len(peer.got) >= 2, what="Hello and State")
        assert isinstance(peer.got[0], M.Hello) and peer.got[0].mode == mode  # the local config's, nothing else
        assert peer.got[1] == M.State("muted" if muted else "listening")
        frames = frames_of(kind)
        before = sum(rig.daemon.uplink.received.values())
        peer.send(*frames)
        if kind == "garbage":
            until(lambda: link.rejected >= len(frames), what="the garbage rejected")
        else:
            until(lambda: sum(rig.daemon.uplink.received.values()) - before >= len(frames), what="all handled")
        # The loop is still running and still reads the socket: a sentinel is handled after all of it.
        peer.send(M.UplinkHello("sentinel"))
        until(lambda: rig.daemon.uplink.received["UplinkHello"] >= (2 if kind == "UplinkHello" else 1),
              what="the sentinel handled")
        if kind == "Announcement":
            until(lambda: sum(isinstance(m, M.AnnounceDone) for m in peer.got) == 2, what="both AnnounceDone")
            done = {m.announce_id: m.played for m in peer.got if isinstance(m, M.AnnounceDone)}
            assert done == ({"a1": False, "a2": False} if muted else {"a1": True, "a2": True})
        if kind == "TimerEvent":
            until(lambda: sum(isinstance(m, M.TimerAck) for m in peer.got) == 4, what="four TimerAcks")
            assert [m.outcome for m in peer.got if isinstance(m, M.TimerAck)] == ["noted", "noted", "ringing", "noted"]
        assert link.connected, "the peer was dropped"
        gate_state = rig.daemon.gate.state
        peer.close()
    assert rig.raised == [] and rig.rc == 0
    assert gate_state is (State.MUTED if muted else State.LISTENING)
    assert not {"capturing", "uploading"} & set(rig.states), rig.states
    entries = rig.ledger()
    assert not [e for e in entries if e["event"] in ("capture", "upload")]
    assert not {"capturing", "uploading"} & {e.get("state") for e in entries if e["event"] == "state"}
    assert rig.mic.violations == []
    if muted:
        assert rig.mic.opens == 0
    assert peer.audio_bytes == 0 and not any(isinstance(m, M.AudioChunk) for m in peer.got)


def test_an_announcement_while_muted_plays_only_if_allowed_and_the_mic_stays_closed(tmp_path, short_dir):
    sock = short_dir / "uplink.sock"
    with Rig(tmp_path, sock, muted=True, announce_while_muted=True) as rig:
        peer = Peer(sock)
        until(lambda: rig.daemon.uplink.link.connected and len(peer.got) >= 2, what="the greeting")
        peer.send(M.Announcement("a1", "The washing is done.", False))
        # The speaker's start callback suppresses the wake word a moment after `speaking` turns true.
        until(lambda: rig.daemon.responder.speaker.speaking and rig.daemon.gate.wake_suppressed,
              what="the speaker playing the announcement, wake detection suppressed")
        assert rig.daemon.gate.state is State.MUTED
        until(lambda: any(isinstance(m, M.AnnounceDone) for m in peer.got), what="AnnounceDone")
        assert [m for m in peer.got if isinstance(m, M.AnnounceDone)] == [M.AnnounceDone("a1", True)]
        peer.close()
    assert rig.mic.opens == 0 and rig.mic.violations == []
    assert rig.daemon.responder is not None and rig.daemon.responder.speaker.last_error == ""


def test_dropped_messages_are_ledgered_at_a_change_not_on_every_block(tmp_path, short_dir):
    sock = short_dir / "uplink.sock"
    with Rig(tmp_path, sock, muted=False) as rig:
        port = rig.daemon.uplink
        # No uplink connected: the state changes the daemon would send are dropped and counted.
        until(lambda: port.link.dropped >= 1 and any(e["event"] == "uplink_dropped" for e in rig.ledger()),
              what="a dropped message ledgered")
        blocks = rig.daemon.blocks_read
        until(lambda: rig.daemon.blocks_read >= blocks + 50, what="fifty more blocks")
        notes = [e for e in rig.ledger() if e["event"] == "uplink_dropped"]
        assert len(notes) == 1 and notes[0]["total"] == port.link.dropped
        assert notes[0]["kinds"] == dict(port.link.dropped_by_kind)


def test_with_home_assistant_off_there_is_no_socket(tmp_path, short_dir):
    sock = short_dir / "uplink.sock"
    raw = {"mute": {"control": "switch", "pin": MUTE_PIN, "debounce_ms": 0}, "indicator": {"kind": "led", "pin": LED_PIN},
           "daemon": {"state_dir": str(tmp_path)}, "home_assistant": {"socket": str(sock)}}
    cfg = C.from_dict(raw)
    factory = MockFactory(pin_class=MockPWMPin)
    mic = PacedMic(factory, muted=False)
    daemon = Daemon(cfg, pin_factory=factory, notifier=Notifier(env={}), source_factory=mic.plug_in, respond=True)
    mic.daemon = daemon
    t = threading.Thread(target=daemon.run, daemon=True)
    t.start()
    try:
        until(lambda: daemon.blocks_read >= 5, what="the daemon listening")
        assert daemon.uplink is None and not sock.exists()
        assert not list(short_dir.iterdir())
    finally:
        daemon.request_stop()
        t.join(WAIT_S)


class UplinkThread:
    """The real uplink's daemon side (DaemonBridge, with its ApiServer and Home Assistant client) and a fake
    Home Assistant, on one asyncio loop in a thread. Counts every audio byte the daemon sends it."""

    def __init__(self, sock: Path, *, audio_mode: bool = False, **ha_kw):
        import asyncio

        self.asyncio = asyncio
        self.sock = sock
        self.audio_mode = audio_mode
        self.ha_kw = ha_kw
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.audio_bytes = 0
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _start(self):
        from tallylight.uplink.daemon_client import DaemonBridge
        from tallylight.uplink.home_assistant import HomeAssistantClient, HomeAssistantOptions
        from tallylight.uplink.server import ApiServer, DeviceIdentity
        from testkit.fake_home_assistant import TOKEN, FakeHomeAssistant

        self.ha = FakeHomeAssistant(**self.ha_kw)
        await self.ha.start()
        client = HomeAssistantClient(HomeAssistantOptions(self.ha.url, TOKEN, device_id="dev1", timeout_s=10,
                                                          tts_timeout_s=10))
        self.bridge = DaemonBridge(self.sock, "tallylight-uplink test", retry_s=0.05, max_retry_s=0.1,
                                   home_assistant=client)
        self.bridge.server = ApiServer(DeviceIdentity("t", "T", "02:00:00:00:00:01", "0"), self.bridge,
                                       audio_mode=self.audio_mode)
        handle = self.bridge._handle

        def counted(msg):
            if isinstance(msg, M.AudioChunk):
                self.audio_bytes += len(msg.pcm)
            handle(msg)

        self.bridge._handle = counted
        self.api_port = await self.bridge.server.start("127.0.0.1", 0)
        self.task = self.asyncio.ensure_future(self.bridge.run())

    async def _stop(self):
        from tallylight.uplink.daemon_client import cancel_and_wait

        await cancel_and_wait(self.task)
        await self.bridge.server.close()
        await self.bridge.close()
        await self.ha.close()

    def __enter__(self):
        self.thread.start()
        self.call(self._start())
        return self

    def call(self, coro):
        """Run a coroutine on the uplink's loop and wait for its result."""
        return self.asyncio.run_coroutine_threadsafe(coro, self.loop).result(WAIT_S)

    def __exit__(self, *exc):
        self.asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(WAIT_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT_S)


@pytest.mark.parametrize("tts", ["none", "wav"], ids=["own_voice", "home_assistants_voice"])
def test_okay_nabu_turn_on_the_kitchen_light_goes_to_home_assistant_as_text_and_its_reply_is_spoken(
        tmp_path, short_dir, synth, monkeypatch, tts):
    from tallylight.speech.understand import make_understander
    from testkit import speech

    # The speaker plays into an ALSA device that writes what it is given to a file (as tests/test_reply.py).
    played = tmp_path / "played.raw"
    conf = tmp_path / "asound.conf"
    conf.write_text(f'pcm.testout {{ type file slave.pcm "null" file "{played}" format "raw" }}\n')
    monkeypatch.setenv("ALSA_CONFIG_PATH", f"/usr/share/alsa/alsa.conf:{conf}")
    sock = short_dir / "uplink.sock"
    audio = speech.pcm(synth("okay nabu, turn on the kitchen light", lead_s=0.3, tail_s=1.5))
    rig = Rig(tmp_path / "state", sock, muted=False, audio=audio, names=["kitchen light"], areas=["kitchen"],
              understander=make_understander,
              extra={"recognizer": {"engine": "pocketsphinx"}, "reply": {"output_device": "testout"}})
    said: list[str] = []
    with UplinkThread(sock, tts=tts) as up, rig:
        speaker = rig.daemon.responder.speaker
        say = speaker.say
        speaker.say = lambda text: (said.append(text), say(text))[1]
        until(lambda: rig.daemon.uplink.link.connected and up.bridge.connected, what="the uplink connected")
        rig.mic.speak.set()
        until(lambda: up.ha.runs(), what="Home Assistant asked")
        until(lambda: up.ha.runs() and rig.daemon.uplink.received["PipelineEvent"] >= 3 and not speaker.speaking
              and played.exists() and played.stat().st_size, what="the reply played")
    (run,) = up.ha.runs()
    assert run["input"] == {"text": "turn on the kitchen light"} and run["start_stage"] == "intent"
    if tts == "none":  # no speech from Home Assistant: its words in our own voice (espeak-ng at 22050 Hz)
        assert said == ["Turned on the kitchen light"] and played.stat().st_size > 22050
    else:  # Home Assistant's own speech, 0.7 s resampled to 16 kHz by the uplink, played as it came
        import numpy as np

        n = 2 * int(0.7 * 16000)
        data = played.read_bytes()  # ALSA pads the last period with silence: the speech, then zeros
        assert said == [] and len(data) >= n and not any(data[n:])
        pcm = np.frombuffer(data[:n], "<i2").astype(float)
        assert abs(np.argmax(np.abs(np.fft.rfft(pcm))) * 16000 / len(pcm) - 440) < 5  # fake HA's 440 Hz tone
    assert up.audio_bytes == 0 and up.ha.binary == [], "audio crossed the socket"
    assert "uploading" not in rig.states and "capturing" in rig.states
    (sent,) = [e for e in rig.ledger() if e["event"] == "text_sent"]
    assert sent["bytes"] == len("turn on the kitchen light") and "text" not in sent
    assert sent["destination"] == f"home_assistant via {sock}"
    assert rig.rc == 0 and rig.mic.violations == []


class HomeAssistantSatelliteSide:
    """Home Assistant's ESPHome side of the link: aioesphomeapi's APIClient, on the uplink's loop, subscribed to
    the voice assistant with API audio. Records when each audio block arrived, the run's starts and stops, and
    the read-only "uploading" sensor as it changes. Sends STT_VAD_END once `vad_end_after` bytes have come."""

    def __init__(self, up: UplinkThread, vad_end_after: int, reply: str = ""):
        self.up, self.vad_end_after, self.reply = up, vad_end_after, reply
        self.audio: list[tuple[float, bytes]] = []
        self.starts: list = []
        self.stops: list[bool] = []
        self.uploading: list[tuple[float, bool]] = []
        self.vad_end_at: float | None = None

    async def connect(self):
        from aioesphomeapi import APIClient

        self.api = APIClient("127.0.0.1", self.up.api_port, None, client_info="test")
        await self.api.connect(login=True)
        await self.api.device_info_and_list_entities()
        self.api.subscribe_states(self._state)
        self.api.subscribe_voice_assistant(handle_start=self._start, handle_stop=self._stop, handle_audio=self._audio)

    def _state(self, s):
        if s.key == 3 and not s.missing_state:  # the "uploading" binary sensor
            self.uploading.append((time.monotonic(), s.state))

    async def _start(self, conversation_id, flags, audio_settings, wake_word_phrase):
        self.starts.append(wake_word_phrase)
        return 0  # API audio: the stream comes on this connection

    async def _stop(self, abort):
        from aioesphomeapi.model import VoiceAssistantEventType as Ev

        self.stops.append(abort)
        if self.reply and not abort:
            self.api.send_voice_assistant_event(Ev.VOICE_ASSISTANT_TTS_START, {"text": self.reply})
            self.api.send_voice_assistant_event(Ev.VOICE_ASSISTANT_TTS_END, {})
            self.api.send_voice_assistant_event(Ev.VOICE_ASSISTANT_RUN_END, {})

    async def _audio(self, data, data2):
        from aioesphomeapi.model import VoiceAssistantEventType as Ev

        self.audio.append((time.monotonic(), data))
        if self.vad_end_at is None and sum(len(d) for _, d in self.audio) >= self.vad_end_after:
            self.vad_end_at = time.monotonic()
            self.api.send_voice_assistant_event(Ev.VOICE_ASSISTANT_STT_VAD_END, {})

    async def close(self):
        await self.api.disconnect()

    @property
    def received(self) -> bytes:
        return b"".join(d for _, d in self.audio)


def test_audio_mode_sends_only_the_words_after_the_wake_word_and_only_inside_the_upload_light(
        tmp_path, short_dir, synth):
    """Audio mode end to end: the real daemon (mock pins, its gate, ledger and light), the real uplink (bridge
    and ESPHome API server) and Home Assistant's own client library. Every audio byte Home Assistant got lies
    inside the upload light and the ledger's UPLOADING interval, the wake phrase is not among them, the stream
    stops at Home Assistant's end of speech, and the ledger has the bytes, the seconds and where they went."""
    from testkit import speech

    wake = speech.pcm(synth("okay nabu", lead_s=0.3, tail_s=0.0))
    command = speech.pcm(synth("turn on the kitchen light", lead_s=0.0, tail_s=2.5))
    audio = wake + command
    sock = short_dir / "uplink.sock"
    rig = Rig(tmp_path / "state", sock, muted=False, audio=audio, mode="audio",
              extra={"capture": {"max_s": 6.0}, "recognizer": {"engine": "pocketsphinx"}})
    shown: list[tuple[float, State]] = []
    forwarded_at: list[float] = []
    said: list[str] = []
    with UplinkThread(sock, audio_mode=True) as up, rig:
        light = rig.daemon.indicator
        show = light.show
        light.show = lambda state, **kw: (show(state, **kw), shown.append((time.monotonic(), State(state))))[0]
        server = up.bridge.server
        send_audio = server.send_audio
        server.send_audio = lambda pcm: (forwarded_at.append(time.monotonic()), send_audio(pcm))[1]
        speaker = rig.daemon.responder.speaker
        say = speaker.say
        speaker.say = lambda text: (said.append(text), say(text))[1]
        ha = HomeAssistantSatelliteSide(up, vad_end_after=len(command) // 2, reply="Turned on the kitchen light")
        up.call(ha.connect())
        until(lambda: rig.daemon.uplink.link.connected and up.bridge.connected and rig.daemon.uplink.upload_ready(),
              what="the uplink and Home Assistant connected")
        rig.mic.speak.set()
        until(lambda: ha.stops and [e for e in rig.ledger() if e["event"] == "upload"], what="the stream ended")
        until(lambda: said and not speaker.speaking, what="Home Assistant's reply said")
        until(lambda: len(ha.uploading) >= 3, what="Home Assistant saw the upload end")
        up.call(ha.close())
    got = ha.received
    (upload,) = [e for e in rig.ledger() if e["event"] == "upload"]
    # Every byte: the ledger, the uplink and Home Assistant agree on how many, and where they went.
    assert len(got) > 0 and upload["bytes"] == upload["forwarded"] == len(got) == up.bridge.audio_forwarded
    assert upload["destination"] == f"home_assistant via {sock}" and upload["end"] == "vad_end"
    assert upload["duration_s"] == round(len(got) / 32000, 3)
    # The wake phrase is not sent: what Home Assistant got is the command, from its start at the earliest.
    import numpy as np

    start = audio.find(got)
    assert start >= 0, "Home Assistant got audio that is not the mic's, in the mic's order"
    # espeak-ng ends "okay nabu" with silence, and the detector fires in it: what of the wake clip was sent
    # (if any) is that silence, never a sound of the phrase.
    sent_of_wake = np.frombuffer(audio[start:len(wake)], "<i2") if start < len(wake) else np.zeros(1, "<i2")
    speech_level = np.abs(np.frombuffer(wake, "<i2")).max()
    assert np.abs(sent_of_wake).max() < speech_level / 100, (
        f"{(len(wake) - start) / 32000:.3f} s of the wake phrase were sent, and not silence")
    # ... inside the light: on (confirmed) before the first byte left the uplink, off after the last.
    on = [t for t, st in shown if st is State.UPLOADING]
    off = [t for t, st in shown if st is not State.UPLOADING and on and t > on[0]]
    assert len(on) == 1 and off, shown
    assert on[0] < forwarded_at[0] and forwarded_at[-1] < off[0]
    assert on[0] < ha.audio[0][0]
    # ... and inside the ledger's UPLOADING interval, which Home Assistant saw open before and close after.
    states = [e for e in rig.ledger() if e["event"] == "state"]
    assert [e["state"] for e in states if e["state"] in ("uploading", "capturing")] == ["uploading"]
    assert [v for _, v in ha.uploading] == [False, True, False]
    assert ha.uploading[1][0] < ha.audio[0][0] and ha.audio[-1][0] < ha.uploading[2][0]
    # It stopped at Home Assistant's end of speech: what was on its way then, and nothing after it.
    after = sum(len(d) for t, d in ha.audio if t > ha.vad_end_at)
    assert after <= 0.3 * 32000, f"{after} bytes after STT_VAD_END"
    assert ha.starts == [None] and ha.stops == [False]
    assert said == ["Turned on the kitchen light"]  # the reply came back as in text mode
    assert rig.rc == 0 and rig.mic.violations == [] and rig.raised == []


def _audio_mode_rig(tmp_path, short_dir, synth, **kw):
    from testkit import speech

    audio = speech.pcm(synth("okay nabu, turn on the kitchen light", lead_s=0.3, tail_s=3.0))
    sock = short_dir / "uplink.sock"
    rig = Rig(tmp_path / "state", sock, muted=False, audio=audio, mode="audio", names=["kitchen light"],
              understander=_understander,
              extra={"capture": {"max_s": 6.0}, "recognizer": {"engine": "pocketsphinx"}, **kw})
    return rig, sock


def _understander(cfg, exposed=None):
    from tallylight.speech.understand import make_understander

    return make_understander(cfg, exposed)


def test_audio_mode_mute_mid_stream_cuts_it_at_once_and_ledgers_what_went(tmp_path, short_dir, synth):
    rig, sock = _audio_mode_rig(tmp_path, short_dir, synth)
    with UplinkThread(sock, audio_mode=True) as up, rig:
        ha = HomeAssistantSatelliteSide(up, vad_end_after=10**9)  # it never hears the end: only the mute ends it
        up.call(ha.connect())
        until(lambda: rig.daemon.uplink.upload_ready(), what="Home Assistant connected for audio")
        rig.mic.speak.set()
        until(lambda: len(ha.received) >= 16000, what="half a second streamed")
        muted_at = time.monotonic()
        rig.mic.switch_muted = True
        rig.factory.pin(MUTE_PIN).drive_high()  # the switch opens: muted
        until(lambda: rig.daemon.gate.state is State.MUTED and ha.stops, what="the mute and Home Assistant's stop")
        until(lambda: [e for e in rig.ledger() if e["event"] == "upload"], what="the upload ledgered")
        got = len(ha.received)
        up.call(ha.close())
    (upload,) = [e for e in rig.ledger() if e["event"] == "upload"]
    assert upload["end"].startswith("cut off") and upload["bytes"] >= got > 0
    assert ha.stops == [True]  # aborted in Home Assistant, not ended as an utterance
    # What was already on its way when the switch opened (a block or two), and nothing read after it.
    late = sum(len(d) for t, d in ha.audio if t > muted_at)
    assert late <= 3 * 640, f"{late} bytes reached Home Assistant after the mute"
    assert rig.mic.violations == [] and rig.rc == 0
    assert rig.daemon.pipeline.ring.is_zeroed()


def test_audio_mode_without_a_home_assistant_taking_audio_recognizes_here_and_uploads_nothing(
        tmp_path, short_dir, synth):
    """Home Assistant connected for text only (no API audio): the utterance is recognized on the device, as in
    text mode, and no audio byte crosses the socket."""
    rig, sock = _audio_mode_rig(tmp_path, short_dir, synth)
    with UplinkThread(sock, audio_mode=True) as up, rig:
        from aioesphomeapi import APIClient

        async def text_only():
            api = APIClient("127.0.0.1", up.api_port, None, client_info="test")
            await api.connect(login=True)

            async def start(*_):
                return 0

            async def stop(_):
                return None

            api.subscribe_voice_assistant(handle_start=start, handle_stop=stop)  # no handle_audio: no API audio
            return api

        api = up.call(text_only())
        until(lambda: rig.daemon.uplink._ha_link == (True, False), what="Home Assistant connected")
        assert not rig.daemon.uplink.upload_ready()
        rig.mic.speak.set()
        until(lambda: up.ha.runs(), what="the sentence sent as text")
        up.call(api.disconnect())
    assert up.audio_bytes == 0 and "uploading" not in rig.states and "capturing" in rig.states
    assert up.ha.runs()[0]["input"] == {"text": "turn on the kitchen light"}
    assert not [e for e in rig.ledger() if e["event"] == "upload"]


def test_audio_mode_home_assistant_gone_mid_stream_ends_the_upload_and_the_daemon_listens_on(
        tmp_path, short_dir, synth):
    rig, sock = _audio_mode_rig(tmp_path, short_dir, synth)
    with UplinkThread(sock, audio_mode=True) as up, rig:
        ha = HomeAssistantSatelliteSide(up, vad_end_after=10**9)
        up.call(ha.connect())
        until(lambda: rig.daemon.uplink.upload_ready(), what="Home Assistant connected for audio")
        rig.mic.speak.set()
        until(lambda: len(ha.received) >= 16000, what="half a second streamed")

        async def kill():  # Home Assistant's connection breaks: no goodbye
            for conn in list(up.bridge.server.connections):
                conn.transport.abort()

        up.call(kill())
        until(lambda: [e for e in rig.ledger() if e["event"] == "upload"], what="the upload ended")
        until(lambda: rig.daemon.gate.state is State.LISTENING, what="listening again")
        loops = rig.daemon.pipeline.blocks_processed
        until(lambda: rig.daemon.pipeline.blocks_processed > loops + 10, what="the loop going on")
    (upload,) = [e for e in rig.ledger() if e["event"] == "upload"]
    assert upload["bytes"] >= upload.get("forwarded", 0) >= 16000 and upload["end"] in ("stopped", "dropped")
    assert rig.rc == 0 and rig.raised == [] and rig.mic.violations == []
