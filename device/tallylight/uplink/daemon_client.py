"""The uplink's end of the daemon socket (asyncio): connects, reconnects, and bridges to the API server.

It is the server's `VoiceSink`: what Home Assistant says (timers, announcements, pipeline events, whether
it is connected) goes to the daemon as `messages` of the TO_DAEMON kinds, the only ones the daemon
accepts; what the daemon says (its gate state) goes to Home Assistant as read-only sensor states.

Never a queue that grows: when the daemon is not connected, or its socket is `max_buffer` bytes behind,
a message is dropped and counted. Speech audio (a reply's or an announcement's) is the one stream: its
ReplyAudio blocks wait for the socket to drain (`stream_timeout_s` each), so a long reply is neither
dropped nor piled up; a daemon that stops reading ends that stream.

Text mode: a TextUtterance goes to Home Assistant's conversation (`home_assistant`, when the config gives
its URL and a token file), and the daemon gets, in order: PipelineEvent run_start and intent_end as they
happen, ReplyText (with_audio saying whether ReplyAudio blocks follow), the blocks and ReplyAudioEnd,
PipelineEvent tts_end, run_end. Any failure is one log line and one PipelineEvent "error" with its code.
Without a Home Assistant configured, the answer is the error "no_conversation_path" at once, so the
daemon can say so instead of waiting.

Audio mode (only when both the daemon's Hello and the uplink's own config say "audio"): the daemon's first
AudioChunk of an utterance starts a run in Home Assistant (`ApiServer.start_run`), each chunk goes straight on
as VoiceAssistantAudio, and the stream's AudioEnd ends it there (aborts it for a mute or a gap); once this
process has handed the last byte to the kernel, AudioSent tells the daemon how many bytes went on, and only
then does its upload light go off. Nothing is kept: a chunk that cannot go on at once is dropped, and the
stream with it. Without a Home Assistant subscribed for audio the answer is the error "no_peer" at once.
Home Assistant's reply speech (TTS_END) is fetched from its own host only and played as in text mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tallylight.choices import HomeAssistantMode
from tallylight.uplink import messages, tts_audio
from tallylight.uplink.framing import FrameError
from tallylight.uplink.home_assistant import ConversationError, HomeAssistantClient, Reply, fetch_audio
from tallylight.uplink.messages import MessageError, MessageReader, PipelineEvent

_LOG = logging.getLogger(__name__)


@dataclass
class _Stream:
    """The daemon's audio stream under way: counts only, the audio goes straight on."""

    uid: str
    running: bool  # a run started in Home Assistant and nothing went wrong yet
    next_seq: int = 1


class DaemonBridge:
    def __init__(self, path: Path, software: str, *, retry_s: float = 1.0, max_retry_s: float = 5.0,
                 announce_timeout_s: float = 60.0, max_buffer: int = 256 * 1024,
                 home_assistant: HomeAssistantClient | None = None, stream_timeout_s: float = 10.0,
                 max_tts_bytes: int = 8 * 1024 * 1024, tts_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self.software = software
        self.server = None  # the ApiServer, set before run()
        self._retry_s = retry_s
        self._max_retry_s = max_retry_s
        self._announce_timeout_s = announce_timeout_s
        self._max_buffer = max_buffer
        self._writer: asyncio.StreamWriter | None = None
        self._announces: dict[str, asyncio.Future[bool]] = {}
        self._ids = itertools.count(1)
        self._link = (False, False, False)
        self.dropped = 0
        self.daemon_mode: str | None = None
        self.home_assistant = home_assistant
        self._stream_timeout_s = stream_timeout_s
        self._max_tts_bytes = max_tts_bytes
        self._tts_timeout_s = tts_timeout_s
        self._session: aiohttp.ClientSession | None = None  # announcements' audio without a configured HA
        self.names: messages.ExposedNames | None = None  # Home Assistant's exposed names, the last fetched
        self._tasks: set[asyncio.Task] = set()
        self._audio_in: _Stream | None = None  # the daemon's audio stream under way
        self.audio_forwarded = 0  # PCM bytes passed on to Home Assistant, all streams (for tests and status)

    @property
    def connected(self) -> bool:
        return self._writer is not None

    # --- the connection ---

    async def run(self) -> None:
        """Keep a connection to the daemon until cancelled."""
        delay = self._retry_s
        said: int | None = None  # the errno last logged as a warning: each new reason once, then quietly
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(self.path))
            except OSError as e:
                if e.errno != said:
                    said = e.errno
                    _LOG.warning("daemon socket %s: %s; retrying every %g s", self.path, _why(e), self._max_retry_s)
                else:
                    _LOG.debug("daemon socket %s: %s; retrying in %g s", self.path, e.strerror, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_retry_s)
                continue
            delay = self._retry_s
            said = None
            _LOG.info("connected to the daemon at %s", self.path)
            try:
                await self._serve(reader, writer)
            except OSError as e:  # ECONNRESET when the daemon closes with our bytes unread, and the like
                _LOG.warning("daemon socket: the connection broke (%s): reconnecting", e.strerror or e)
            finally:
                self._disconnected(writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self.send(messages.UplinkHello(self.software))
        self.send(messages.HomeAssistantLink(*self._link))
        if self.names is not None:  # a daemon that restarted needs them again
            self.send(self.names)
        inbound = MessageReader(messages.TO_UPLINK_KINDS)
        while data := await reader.read(65536):
            try:
                items = inbound.feed(data)
            except FrameError as e:
                _LOG.warning("daemon socket: the daemon broke the protocol: %s: reconnecting", e)
                return
            for item in items:
                if isinstance(item, MessageError):
                    _LOG.warning("daemon socket: dropped a message: %s", item)
                else:
                    self._handle(item)
        _LOG.warning("daemon socket: the daemon closed the connection: reconnecting")

    def _disconnected(self, writer: asyncio.StreamWriter) -> None:
        self._writer = None
        writer.close()
        if self.server is not None:
            self.server.set_gate_state(None)
        if self._audio_in is not None:  # the daemon went mid-stream: stop the run in Home Assistant
            self._spawn(self._finish_stream(self._audio_in, abort=True))
            self._audio_in = None
        for fut in self._announces.values():
            if not fut.done():
                fut.set_result(False)
        self._announces.clear()

    def send(self, msg: messages.Message) -> bool:
        writer = self._writer
        if writer is None or writer.is_closing() or writer.transport.get_write_buffer_size() > self._max_buffer:
            self.dropped += 1
            return False
        writer.write(messages.encode(msg))
        return True

    def _handle(self, msg: messages.Message) -> None:
        if isinstance(msg, messages.Hello):
            self.daemon_mode = msg.mode
            _LOG.info("the daemon is %s (%s, %s mode)", msg.device_name, msg.software, msg.mode)
        elif isinstance(msg, messages.State):
            if self.server is not None:
                self.server.set_gate_state(msg.state)
        elif isinstance(msg, messages.AnnounceDone):
            fut = self._announces.pop(msg.announce_id, None)
            if fut is not None and not fut.done():
                fut.set_result(msg.played)
        elif isinstance(msg, messages.TimerAck):
            _LOG.info("timer %s: %s", msg.timer_id, msg.outcome)
        elif isinstance(msg, messages.TextUtterance):
            if self.home_assistant is None:
                self.send(PipelineEvent(msg.utterance_id, "error", "no_conversation_path",
                                        "no Home Assistant is set up: give [home_assistant] url and token_file"))
            else:
                task = asyncio.ensure_future(self._converse(msg))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        elif isinstance(msg, messages.AudioChunk):
            self._audio_chunk(msg)
        elif isinstance(msg, messages.AudioEnd):
            self._audio_end(msg)

    # --- audio mode: the daemon's stream, straight on to Home Assistant ---

    def _audio_chunk(self, msg: messages.AudioChunk) -> None:
        server = self.server
        if msg.seq == 0:
            if self._audio_in is not None:  # the last one never ended (the daemon restarted): stop it there
                self._spawn(self._finish_stream(self._audio_in, abort=True))
            if self.daemon_mode != HomeAssistantMode.AUDIO or server is None or not server.audio_mode:
                self.dropped += 1
                _LOG.warning("daemon socket: dropped audio of %s: audio mode needs home_assistant.mode = \"audio\" "
                             "for both the daemon and the uplink (restart both after changing it)", msg.utterance_id)
                self._audio_in = _Stream(msg.utterance_id, False)
                self.send(PipelineEvent(msg.utterance_id, "error", "not_audio_mode", "this uplink is in text mode"))
                return
            running = server.start_run(msg.utterance_id)
            self._audio_in = _Stream(msg.utterance_id, running)
            if not running:
                self.send(PipelineEvent(msg.utterance_id, "error", "no_peer",
                                        "no Home Assistant is connected for audio"))
                return
            _LOG.info("audio mode: streaming %s to Home Assistant", msg.utterance_id)
        st = self._audio_in
        if st is None or st.uid != msg.utterance_id or not st.running:
            self.dropped += 1
            return
        if msg.seq != 0 and msg.seq != st.next_seq:
            st.running = False  # a stream with a hole in it is no use: stop the run
            self.send(PipelineEvent(st.uid, "error", "gap", f"block {msg.seq} came where {st.next_seq} was due"))
            return
        st.next_seq = msg.seq + 1
        if not server.send_audio(msg.pcm):
            st.running = False
            self.send(PipelineEvent(st.uid, "error", "no_peer", "Home Assistant went away during the stream"))

    def _audio_end(self, msg: messages.AudioEnd) -> None:
        st = self._audio_in
        if st is None or st.uid != msg.utterance_id:
            self.send(messages.AudioSent(msg.utterance_id, 0))
            return
        self._audio_in = None
        self._spawn(self._finish_stream(st, abort=msg.reason not in ("vad_end", "max_length")))

    async def _finish_stream(self, st: _Stream, abort: bool) -> None:
        forwarded = 0
        if self.server is not None and (st.running or self.server.audio_sent):
            forwarded = await self.server.end_audio(abort or not st.running)
        self.audio_forwarded += forwarded
        _LOG.info("audio mode: %s over, %d bytes passed on to Home Assistant", st.uid, forwarded)
        self.send(messages.AudioSent(st.uid, forwarded))

    def run_speech(self, run_id: str, text: str, url: str, peer_host: str) -> None:
        self._spawn(self._run_speech(run_id, text, url, peer_host))

    async def _run_speech(self, run_id: str, text: str, url: str, peer_host: str) -> None:
        pcm = await self._announce_audio(url, peer_host) if url else None
        if pcm is None and not text:
            return
        self.send(messages.ReplyText(run_id, text, pcm is not None))
        if pcm is not None:
            await self._stream(run_id, pcm)

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            await cancel_and_wait(task)
        if self._session is not None:
            await self._session.close()
        if self.home_assistant is not None:
            await self.home_assistant.close()

    async def send_paced(self, msg: messages.Message) -> bool:
        """Send and wait until the socket has room again (speech audio): False if the daemon is gone or stalls."""
        writer = self._writer
        if writer is None or writer.is_closing():
            self.dropped += 1
            return False
        writer.write(messages.encode(msg))
        try:
            async with asyncio.timeout(self._stream_timeout_s):
                await writer.drain()
        except (TimeoutError, OSError):
            _LOG.warning("daemon socket: the daemon took over %g s to read speech audio: ending that stream",
                         self._stream_timeout_s)
            return False
        return True

    async def _stream(self, speech_id: str, pcm: bytes) -> bool:
        for seq, block in enumerate(tts_audio.blocks(pcm)):
            if not await self.send_paced(messages.ReplyAudio(speech_id, seq, block)):
                return False
        return await self.send_paced(messages.ReplyAudioEnd(speech_id))

    # --- Home Assistant's exposed names, for the daemon's grammar ---

    async def follow_names(self, every_s: float = 300.0, retry_s: float = 30.0) -> None:
        """Fetch the names Home Assistant exposes to Assist now and every `every_s`, and send them to the
        daemon when they change (and on each new daemon connection). Until cancelled; a failure is one
        log line per reason, and the names already sent stay."""
        said = ""
        while True:
            try:
                raw_names, raw_areas = await self.home_assistant.exposed_names()
            except ConversationError as e:
                line = messages.clean_text(str(e), 200)
                if line != said:
                    _LOG.warning("could not read the names Home Assistant exposes to Assist (%s): retrying every "
                                 "%g s", line, retry_s)
                    said = line
                await asyncio.sleep(retry_s)
                continue
            said = ""
            msg, why = names_message(raw_names, raw_areas)
            if msg != self.names:
                for line in why[:10]:
                    _LOG.warning("a name from Home Assistant left out: %s", line)
                if len(why) > 10:
                    _LOG.warning("and %d more names from Home Assistant left out", len(why) - 10)
                _LOG.info("Home Assistant exposes %d names and %d areas to Assist: sent to the daemon",
                          len(msg.names), len(msg.areas))
                self.names = msg
                self.send(msg)
            await asyncio.sleep(every_s)

    # --- text mode: Home Assistant's conversation ---

    async def _converse(self, msg: messages.TextUtterance) -> None:
        uid = msg.utterance_id
        ha = self.home_assistant
        try:
            reply = await ha.converse(msg.text, lambda name: self.send(PipelineEvent(uid, name, "", "")))
        except ConversationError as e:
            _LOG.warning("Home Assistant: utterance %s: %s", uid, messages.clean_text(str(e), 300))
            self.send(PipelineEvent(uid, "error", messages.clean_text(e.code, messages.MAX_NAME_CHARS),
                                    messages.clean_text(e.message, 500)))
            return
        pcm = await self._reply_speech(uid, reply)
        self.send(messages.ReplyText(uid, reply.speech, pcm is not None))
        if pcm is not None:
            await self._stream(uid, pcm)
            self.send(PipelineEvent(uid, "tts_end", "", ""))
        self.send(PipelineEvent(uid, "run_end", "", ""))

    async def _reply_speech(self, uid: str, reply: Reply) -> bytes | None:
        """The reply's TTS as 16 kHz PCM, or None (no TTS in the pipeline, or unusable: the daemon speaks)."""
        ha = self.home_assistant
        if not reply.tts_url:
            return None
        url: str | None = reply.tts_url
        is_wav = reply.tts_mime in ("audio/wav", "audio/x-wav") or reply.tts_url.split("?")[0].endswith(".wav")
        try:
            if not is_wav:
                # Not WAV (MP3 from most engines, FLAC): ask Home Assistant to convert rather than decode here.
                url = await ha.wav_url(reply)
                if url is None:
                    _LOG.warning("Home Assistant: utterance %s: its speech is %s and no WAV was offered: "
                                 "the daemon speaks the text", uid, reply.tts_mime or "not WAV")
                    return None
            return tts_audio.to_pcm16k(await ha.fetch(url))
        except (ConversationError, tts_audio.AudioFormatError) as e:
            _LOG.warning("Home Assistant: utterance %s: its speech audio is unusable (%s): the daemon speaks "
                         "the text", uid, messages.clean_text(str(e), 300))
            return None

    async def _announce_audio(self, media_id: str, peer_host: str) -> bytes | None:
        try:
            if self.home_assistant is not None:
                data = await self.home_assistant.fetch(media_id, frozenset({peer_host}))
            else:
                if self._session is None:
                    self._session = aiohttp.ClientSession(trust_env=False)
                data = await fetch_audio(self._session, media_id, "", frozenset({peer_host}),
                                         self._max_tts_bytes, self._tts_timeout_s)
            return tts_audio.to_pcm16k(data)
        except (ConversationError, tts_audio.AudioFormatError) as e:
            _LOG.warning("announcement audio unusable (%s)", messages.clean_text(str(e), 300))
            return None

    # --- VoiceSink: from Home Assistant, towards the daemon ---

    def timer_event(self, event: messages.TimerEvent) -> None:
        self.send(event)

    def pipeline_event(self, event: messages.PipelineEvent) -> None:
        self.send(event)

    def home_assistant_link(self, connected: bool, encrypted: bool, audio: bool = False) -> None:
        self._link = (connected, encrypted, audio)
        self.send(messages.HomeAssistantLink(connected, encrypted, audio))

    async def announce(self, text: str, media_id: str = "", peer_host: str = "") -> bool:
        """Have the daemon say an announcement: its audio (media_id, fetched only from peer_host, the Home
        Assistant that asked, or the configured one), else its text. True once the daemon played it."""
        pcm = await self._announce_audio(media_id, peer_host) if media_id else None
        if pcm is None and not text:
            return False
        announce_id = f"a{next(self._ids)}"
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._announces[announce_id] = fut
        if not self.send(messages.Announcement(announce_id, text, pcm is not None)):
            self._announces.pop(announce_id, None)
            return False
        if pcm is not None and not await self._stream(announce_id, pcm):
            self._announces.pop(announce_id, None)
            return False
        try:
            async with asyncio.timeout(self._announce_timeout_s):
                return await fut
        except TimeoutError:
            _LOG.warning("the daemon did not finish announcement %s within %g s", announce_id,
                         self._announce_timeout_s)
            return False
        finally:
            self._announces.pop(announce_id, None)


def names_message(names: list[str], areas: list[str]) -> tuple[messages.ExposedNames, list[str]]:
    """Home Assistant's raw names made fit for ExposedNames: each lowercased (NFC), "-" and "_" as spaces,
    kept only if it is 1-6 words of letters and apostrophes within 60 characters; duplicates once; at most
    the message's counts and bytes, in Home Assistant's order. Returns the message and why each was left out."""
    out: list[tuple[str, ...]] = []
    why: list[str] = []
    for what, raw, cap, max_bytes in (("name", names, messages.MAX_EXPOSED_NAMES, 6000),
                                      ("area", areas, messages.MAX_EXPOSED_AREAS, 3000)):
        kept: dict[str, None] = {}
        used = 0
        for i, item in enumerate(raw):
            if len(kept) >= cap:
                why.append(f"{len(raw) - i} more {what}s than the {cap} the grammar takes")
                break
            shown = messages.clean_text(item[:80], 60)
            text = " ".join(re.sub(r"[-_]", " ", unicodedata.normalize("NFC", item[:200])).lower().split())
            if messages._CONTROL.search(item[:200]):  # a newline too: it could forge a log line
                why.append(f"{what} {shown!r}: has a control character")
                continue
            if len(text) > messages.MAX_EXPOSED_NAME_CHARS or not messages._EXPOSED_NAME.fullmatch(text):
                why.append(f"{what} {shown!r}: not 1-{messages.MAX_EXPOSED_NAME_WORDS} words of letters within "
                           f"{messages.MAX_EXPOSED_NAME_CHARS} characters")
                continue
            if text in kept:
                continue
            if used + len(text.encode()) > max_bytes:
                why.append(f"{what}s over {max_bytes} bytes in all: the rest left out")
                break
            used += len(text.encode())
            kept[text] = None
        out.append(tuple(kept))
    return messages.ExposedNames(out[0], out[1]), why


def _why(e: OSError) -> str:
    """Why the daemon's socket cannot be reached, with the fix."""
    if e.errno in (errno.ENOENT, errno.ECONNREFUSED):
        return ("the daemon is not listening (is `tallylight run` up, with [home_assistant] enabled = true and the "
                "same socket path in its config?)")
    if e.errno == errno.EACCES:
        return "permission denied: the uplink's user must be in the daemon's group (scripts/install.sh --home-assistant)"
    return e.strerror or str(e)


async def cancel_and_wait(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
