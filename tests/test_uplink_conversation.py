"""Text mode's conversation path: the uplink's DaemonBridge between a unix-socket daemon and a local
aiohttp server playing Home Assistant's WebSocket and HTTP APIs (fake_home_assistant.py). A sentence goes
out as text only; the reply comes back as ReplyText and 16 kHz PCM; every misbehaving peer is one log
line and one error PipelineEvent, within the timeout."""

import asyncio
import logging
import time

import numpy as np
import pytest

from tallylight.uplink import messages
from tallylight.uplink.daemon_client import DaemonBridge, cancel_and_wait
from tallylight.uplink.home_assistant import (
    HomeAssistantClient,
    HomeAssistantConfigError,
    HomeAssistantOptions,
    check_url,
    load_token,
)
from tallylight.uplink.messages import MessageReader, PipelineEvent, ReplyAudio, ReplyAudioEnd, ReplyText
from tallylight.uplink.private_file import PrivateFileError
from tallylight.uplink.server import ApiServer, DeviceIdentity
from testkit.fake_home_assistant import TOKEN, FakeHomeAssistant, GarbagePeer, SlowPeer, wav_bytes

WAIT_S = 10.0
SENTENCE = "turn on the kitchen light"


class FakeDaemon:
    def __init__(self, path):
        self.path = path
        self.got: list = []
        self.writers: list = []

    async def start(self):
        self.server = await asyncio.start_unix_server(self._serve, str(self.path))

    async def _serve(self, reader, writer):
        self.writers.append(writer)
        decoder = MessageReader(messages.TO_DAEMON_KINDS)
        while data := await reader.read(65536):
            self.got += decoder.feed(data)

    def send(self, msg):
        self.writers[-1].write(messages.encode(msg))

    def of(self, uid):
        return [m for m in self.got if getattr(m, "utterance_id", getattr(m, "speech_id", None)) == uid]

    async def close(self):
        self.server.close()
        for w in self.writers:
            w.close()


async def until(cond, timeout=WAIT_S):
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.005)


class Rig:
    """A daemon, a bridge with a Home Assistant client, and whatever plays Home Assistant."""

    def __init__(self, tmp_path, url, *, token=TOKEN, timeout_s=WAIT_S / 2, **bridge_kw):
        self.daemon = FakeDaemon(tmp_path / "d.sock")
        self.client = HomeAssistantClient(HomeAssistantOptions(url, token, device_id="dev1",
                                                               timeout_s=timeout_s, tts_timeout_s=timeout_s))
        self.bridge = DaemonBridge(self.daemon.path, "test", retry_s=0.05, max_retry_s=0.1,
                                   home_assistant=self.client, **bridge_kw)
        self.bridge.server = ApiServer(DeviceIdentity("t", "T", "02:00:00:00:00:01", "0"), self.bridge)

    async def __aenter__(self):
        await self.daemon.start()
        self.task = asyncio.create_task(self.bridge.run())
        await until(lambda: self.daemon.writers and self.bridge.connected)
        return self

    async def __aexit__(self, *exc):
        await cancel_and_wait(self.task)
        await self.bridge.close()
        await self.daemon.close()

    async def say(self, uid, text=SENTENCE, until_kind=("run_end", "error")):
        self.daemon.send(messages.TextUtterance(uid, text))
        await until(lambda: any(isinstance(m, PipelineEvent) and m.event in until_kind
                                for m in self.daemon.of(uid)))
        return self.daemon.of(uid)


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 60))


def pcm_of(got):
    return b"".join(m.pcm for m in got if isinstance(m, ReplyAudio))


def test_a_sentence_goes_as_text_and_the_reply_comes_back_as_text_and_16k_pcm(tmp_path):
    async def main():
        ha = FakeHomeAssistant()
        await ha.start()
        async with Rig(tmp_path, ha.url) as rig:
            before = time.monotonic()
            got = await rig.say("u1")
            after = time.monotonic()
            kinds = [(type(m).__name__, getattr(m, "event", None)) for m in got]
            assert kinds[:3] == [("PipelineEvent", "run_start"), ("PipelineEvent", "intent_end"), ("ReplyText", None)]
            assert kinds[-3:] == [("ReplyAudioEnd", None), ("PipelineEvent", "tts_end"), ("PipelineEvent", "run_end")]
            assert got[2] == ReplyText("u1", "Turned on the kitchen light", True)
            audio = [m for m in got if isinstance(m, ReplyAudio)]
            assert [m.seq for m in audio] == list(range(len(audio))) and len(audio) >= 2
            pcm = np.frombuffer(pcm_of(got), "<i2")
            assert abs(len(pcm) - 0.7 * 16000) <= 2  # 0.7 s at 22050 Hz, resampled to 16 kHz
            # The 440 Hz tone survived: its spectrum peaks there.
            peak = np.argmax(np.abs(np.fft.rfft(pcm.astype(float)))) * 16000 / len(pcm)
            assert abs(peak - 440) < 5
            # Home Assistant got the sentence as text with the device's id, the token, and no audio at all.
            (runs,) = ha.runs()
            assert runs["input"] == {"text": SENTENCE} and runs["start_stage"] == "intent"
            assert runs["end_stage"] == "tts" and runs["device_id"] == "dev1"
            assert ha.received[0] == {"type": "auth", "access_token": TOKEN}
            assert ha.binary == []
            # When each message arrived (scripts/bench times the text's arrival from it).
            assert len(ha.received_at) == len(ha.received) and ha.received_at == sorted(ha.received_at)
            ((at, text),) = ha.runs_at()
            assert text == SENTENCE and before <= at <= after
            # A second sentence reuses the connection (one auth).
            await rig.say("u2", "what time is it")
            assert [m["type"] for m in ha.received].count("auth") == 1
        await ha.close()
    run(main())


def test_mp3_speech_is_asked_again_as_16k_wav_and_no_tts_means_the_daemon_speaks(tmp_path):
    async def main():
        ha = FakeHomeAssistant(tts="mp3")
        await ha.start()
        async with Rig(tmp_path, ha.url) as rig:
            got = await rig.say("u1")
            assert ReplyText("u1", "Turned on the kitchen light", True) in got and pcm_of(got)
            (post,) = [h for h in ha.http if h[0] == "POST"]
            assert post[2]["engine_id"] == "tts.piper" and post[2]["message"] == "Turned on the kitchen light"
            assert post[2]["options"] == {"preferred_format": "wav", "preferred_sample_rate": 16000,
                                          "preferred_sample_channels": 1, "voice": "amy"}
            assert ("GET", "/api/tts_proxy/reply.mp3", None) not in ha.http  # never fetched what cannot be decoded
            ha.tts = "none"
            got = await rig.say("u2")
            assert [m for m in got if isinstance(m, ReplyText)] == [ReplyText("u2", "Turned on the kitchen light", False)]
            assert not pcm_of(got) and not any(isinstance(m, ReplyAudioEnd) for m in got)
        await ha.close()
    run(main())


@pytest.mark.parametrize("where, log", [
    ("http://localhost:{port}/api/tts_proxy/reply.wav", "audio from 'localhost' refused"),
    ("redirect", "audio from 'localhost' refused"),
    ("big", "over the cap of 1000"),
    ("missing.wav", "HTTP 404 for the speech audio"),
    ("reply.mp3", "is mp3, not WAV"),
])
def test_speech_audio_only_from_home_assistants_host_capped_and_decoded_or_the_daemon_speaks(tmp_path, caplog,
                                                                                              where, log):
    async def main():
        ha = FakeHomeAssistant()
        await ha.start()
        ha.redirects["away.wav"] = f"http://localhost:{ha.port}/api/tts_proxy/reply.wav"
        ha.files["big.wav"] = (wav_bytes(1.0), "audio/wav")
        ha.tts = {"redirect": "away.wav", "big": "big.wav"}.get(where, where).format(port=ha.port)
        if where == "reply.mp3":
            ha.files["reply.mp3"] = (ha.files["reply.mp3"][0], "audio/wav")  # claims WAV, is not
        rig = Rig(tmp_path, ha.url)
        rig.client.options = type(rig.client.options)(ha.url, TOKEN, max_tts_bytes=1000 if where == "big" else 8 << 20)
        async with rig:
            got = await rig.say("u1")
            assert ReplyText("u1", "Turned on the kitchen light", False) in got and not pcm_of(got)
            assert got[-1] == PipelineEvent("u1", "run_end", "", "")
        await ha.close()
        lines = [r.getMessage() for r in caplog.records if log in r.getMessage()]
        assert len(lines) == 1 and "\n" not in lines[0] and not any(r.exc_info for r in caplog.records)
    caplog.set_level(logging.INFO)
    run(main())


@pytest.mark.parametrize("peer, code, log", [
    ("wrong_token", "auth_invalid", "refused the token"),
    ("garbage", "unreachable", "cannot reach"),
    ("not_home_assistant", "not_home_assistant", "is no Home Assistant WebSocket (HTTP 404)"),
    ("slow", "timeout", "did not finish within 0.5 s"),
    ("silent_run", "timeout", "did not finish within 0.5 s"),
    ("close_mid_run", "closed", "closed the connection"),
    ("not_json", "bad_reply", "not JSON"),
    ("pipeline_error", "intent-failed", "Unexpected error during intent recognition"),
    ("nobody", "unreachable", "cannot reach"),
])
def test_a_misbehaving_home_assistant_is_one_log_line_and_one_error_event_never_a_hang(tmp_path, caplog, peer,
                                                                                        code, log):
    async def main():
        ha = FakeHomeAssistant(behaviour=peer)
        await ha.start()
        url, token, other = ha.url, TOKEN, None
        if peer == "wrong_token":
            token = "eyJ.wrong-token-of-the-right-shape.sig"
        elif peer in ("garbage", "slow"):
            other = GarbagePeer() if peer == "garbage" else SlowPeer()
            await other.start()
            url = f"http://127.0.0.1:{other.port}"
        elif peer == "nobody":
            await ha.close()
        async with Rig(tmp_path, url, token=token, timeout_s=0.5) as rig:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            got = await rig.say("u1")
            assert loop.time() - t0 < 3.0
            (error,) = [m for m in got if isinstance(m, PipelineEvent) and m.event == "error"]
            assert error.code == code and log in error.message
            assert not any(isinstance(m, ReplyText | ReplyAudio) for m in got)
            # The bridge is still there for the daemon: another sentence gets its own answer.
            assert (await rig.say("u2"))[-1].event in ("error", "run_end")
        if other is not None:
            await other.close()
        if peer != "nobody":
            await ha.close()
        lines = [r.getMessage() for r in caplog.records if "utterance u1" in r.getMessage()]
        assert len(lines) == 1 and log in lines[0] and "\n" not in lines[0]
        assert not any(r.exc_info for r in caplog.records) and TOKEN not in caplog.text
    run(main())


def test_without_a_home_assistant_a_sentence_is_answered_at_once(tmp_path):
    async def main():
        daemon = FakeDaemon(tmp_path / "d.sock")
        await daemon.start()
        bridge = DaemonBridge(daemon.path, "test", retry_s=0.05)
        task = asyncio.create_task(bridge.run())
        await until(lambda: bridge.connected and daemon.writers)
        daemon.send(messages.TextUtterance("u1", SENTENCE))
        await until(lambda: daemon.of("u1"))
        assert daemon.of("u1") == [PipelineEvent("u1", "error", "no_conversation_path",
                                                 "no Home Assistant is set up: give [home_assistant] url and "
                                                 "token_file")]
        await cancel_and_wait(task)
        await daemon.close()
    run(main())


def test_announcement_audio_comes_only_from_the_host_that_sent_it(tmp_path, caplog):
    async def main():
        ha = FakeHomeAssistant()
        await ha.start()
        daemon = FakeDaemon(tmp_path / "d.sock")
        await daemon.start()
        bridge = DaemonBridge(daemon.path, "test", retry_s=0.05)  # no token: announcements still play
        task = asyncio.create_task(bridge.run())
        await until(lambda: bridge.connected and daemon.writers)

        async def announce(media_id, host):
            pending = asyncio.create_task(bridge.announce("The washing is done", media_id, host))
            await until(lambda: any(isinstance(m, messages.Announcement) for m in daemon.got))
            ann = [m for m in daemon.got if isinstance(m, messages.Announcement)][-1]
            daemon.got.remove(ann)
            if ann.with_audio:
                await until(lambda: any(isinstance(m, ReplyAudioEnd) for m in daemon.of(ann.announce_id)))
            daemon.send(messages.AnnounceDone(ann.announce_id, True))
            assert await pending is True
            return ann, daemon.of(ann.announce_id)

        ann, got = await announce(f"{ha.url}/api/tts_proxy/reply.wav", "127.0.0.1")
        assert ann.with_audio and len(pcm_of(got)) == pytest.approx(0.7 * 16000 * 2, abs=4)
        # The same URL, but the connection that asked came from another host: the text is said instead.
        ann, got = await announce(f"{ha.url}/api/tts_proxy/reply.wav", "192.168.1.7")
        assert not ann.with_audio and ann.text == "The washing is done" and not pcm_of(got)
        assert "audio from '127.0.0.1' refused" in caplog.text
        # A relative URL needs a configured Home Assistant to be relative to.
        ann, _ = await announce("/api/tts_proxy/reply.wav", "127.0.0.1")
        assert not ann.with_audio
        await cancel_and_wait(task)
        await bridge.close()
        await daemon.close()
        await ha.close()
    run(main())


def test_device_id_is_found_by_mac_in_home_assistants_devices(tmp_path):
    async def main():
        ha = FakeHomeAssistant(devices=[{"id": "abc123", "connections": [["mac", "02:00:00:00:00:01"]]},
                                        {"id": "zzz", "connections": "garbage"}])
        await ha.start()
        client = HomeAssistantClient(HomeAssistantOptions(ha.url, TOKEN, timeout_s=2))
        assert await client.find_device_id("02:00:00:00:00:01") == "abc123"
        assert await client.find_device_id("02:00:00:00:00:99") is None
        await client.close()
        await ha.close()
    run(main())


def test_url_and_token_file_checks_name_the_fix(tmp_path):
    assert check_url("http://homeassistant.local:8123/") == "http://homeassistant.local:8123"
    for bad in ("homeassistant.local:8123", "http://u:p@ha:8123", "http://ha:8123/api", "ftp://ha", "http://ha:99999"):
        with pytest.raises(HomeAssistantConfigError, match="http://HOST:8123"):
            check_url(bad)
    token = tmp_path / "ha.token"
    with pytest.raises(PrivateFileError, match="long-lived access token"):
        load_token(token)
    token.write_text(TOKEN + "\n")
    token.chmod(0o640)
    with pytest.raises(PrivateFileError, match="chmod 600"):
        load_token(token)
    token.chmod(0o600)
    assert load_token(token) == TOKEN
    token.write_text("not a token\n")
    with pytest.raises(HomeAssistantConfigError, match="does not hold a Home Assistant access token"):
        load_token(token)
    assert TOKEN not in repr(HomeAssistantOptions("http://ha:8123", TOKEN))
