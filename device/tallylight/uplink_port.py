"""The daemon's side of the Home Assistant uplink: what goes out on the socket, what comes in, and all that
what comes in may do.

Owned by the audio thread, like the rest of daemon.py: `poll()` once a loop turn (the link never blocks; a
poll with nothing to do is a few non-blocking syscalls), `send_text()` from the home_assistant action,
`state_changed()` from the gate's state changes.

Out: Hello and the gate's state on each new connection, State on each change (read-only in Home Assistant),
TextUtterance (the words of a sentence, never audio: nothing lights, and the ledger gets where to and how
many bytes, through the gate's `note`), TimerAck, AnnounceDone. In audio mode (home_assistant.mode, the local
config only) also the utterance after the local wake word: the pipeline starts the stream once the gate is
UPLOADING (upload light confirmed on) and hands over each block the gate allowed; this sends it as AudioChunk,
stops at Home Assistant's stt_vad_end (or what the pipeline decides), sends AudioEnd, and keeps the stream,
and so the light, open until the uplink's AudioSent says every byte went on to Home Assistant (or
AUDIO_SENT_WAIT_S passes: what is still queued is then taken back). A mute takes back what is queued at once.

In, and nothing else:
- ReplyText for a sentence we sent: spoken by the reply speaker (espeak-ng), or, with_audio, Home Assistant's
  speech (ReplyAudio PCM, kept up to reply_audio_max_s, the rest dropped and logged) played the same way;
- an Announcement: the same, and while muted only if announce_while_muted;
- a TimerEvent "finished": the local alarm, for at most timer_ring_max_s;
- PipelineEvent: log lines; for the stream under way, stt_vad_end or an error ends it;
- AudioSent for the stream that ended: the upload is over;
- UplinkHello, HomeAssistantLink: log lines (and a ledger note when Home Assistant's link changes);
- ExposedNames: Home Assistant's entity and area names, handed to the daemon (`on_names`), which rebuilds
  its grammar with them off the audio thread: they only add names to Home Assistant's sentences.
Speech out suppresses wake detection while it plays, by the speaker's own callbacks (gate.py rule 7), as for
local replies. Nothing here opens the mic or calls begin_capture/begin_upload (only the pipeline does, after
the local wake word): no message from the network can start a capture or an upload (messages.py has no kind
that asks; tests/test_uplink_daemon.py drives each kind through the real daemon). A message that makes no
sense here is one log line, at most one a second.
"""

from __future__ import annotations

import collections
import itertools
import logging
import platform
import pwd
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tallylight import __version__
from tallylight.choices import HomeAssistantMode
from tallylight.config import HomeAssistantConfig
from tallylight.gate import State
from tallylight.responder import ALARM_GAP_S, ALARM_RING_S
from tallylight.uplink import messages
from tallylight.uplink.link import UplinkLink, UplinkLinkError
from tallylight.uplink.messages import MAX_TEXT_CHARS, MessageError, clean_text

_LOG = logging.getLogger(__name__)

DROPPED_NOTE_EVERY_S = 10.0  # the ledger hears of dropped messages at most this often
MAX_PENDING = 8  # sentences awaiting Home Assistant's answer; an older one's answer is then ignored
BYTES_PER_S = 2 * messages.PCM_RATE
ERROR_REPLY = "Sorry, Home Assistant could not do that."
AUDIO_SENT_WAIT_S = 3.0  # after AudioEnd, how long the upload light waits for the uplink's AudioSent
# What Home Assistant sees of the gate: ERROR closes the mic, so it shows as muted.
_SHOWN = {State.MUTED: "muted", State.ERROR: "muted", State.LISTENING: "listening", State.CAPTURING: "capturing",
          State.UPLOADING: "uploading"}


def allowed_uid(user: str) -> int:
    if user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise UplinkLinkError(f"home_assistant.uplink_user = {user!r}: no such user (scripts/install.sh "
                              "--home-assistant makes it), or give its uid") from None


@dataclass
class _Speech:
    """Home Assistant's speech for one reply or announcement, arriving as ReplyAudio blocks."""

    text: str  # said instead when the audio is unusable
    announce: bool
    pcm: bytearray = field(default_factory=bytearray)
    next_seq: int = 0
    over_cap: bool = False
    broken: bool = False


@dataclass
class _Stream:
    """One utterance streaming to Home Assistant (audio mode): counts only, never audio."""

    uid: str
    seq: int = 0
    queued: int = 0  # PCM bytes given to the link
    over: str = ""  # why it must stop (Home Assistant's end of speech, an error, the link); "" while it goes on
    end: str = ""  # the reason its AudioEnd gave
    ended_at: float | None = None
    forwarded: int | None = None  # AudioSent: what the uplink passed on


_AUDIO_END_REASONS = {"vad_end", "max_length", "muted", "stopped", "dropped"}


class UplinkPort:
    def __init__(self, cfg: HomeAssistantConfig, gate, responder=None, *, link: UplinkLink | None = None,
                 clock: Callable[[], float] = time.monotonic, dropped_note_every_s: float = DROPPED_NOTE_EVERY_S,
                 on_names: Callable[[tuple[str, ...], tuple[str, ...]], None] | None = None):
        self._cfg = cfg
        self._gate = gate
        self._responder = responder  # None: `run` without replies (tests of the audio path): nothing is said
        # Home Assistant's exposed names, for the daemon to rebuild its grammar with (None: not wanted).
        self._on_names = on_names
        self._names: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        self.link = link or UplinkLink(Path(cfg.socket), allowed_uid(cfg.uplink_user))
        self._clock = clock
        self._every_s = dropped_note_every_s
        self._ids = itertools.count(1)
        self._pending: collections.OrderedDict[str, str] = collections.OrderedDict()  # utterance id -> its text
        self._speech: dict[str, _Speech] = {}
        self._announcing: list[str] = []  # announcements queued on the speaker: AnnounceDone when it is quiet
        self._max_pcm = int(cfg.reply_audio_max_s * BYTES_PER_S) // 2 * 2
        self._connections = 0
        self._shown: str | None = None
        self._ha_link: tuple[bool, bool] | None = None
        self._dropped_noted = 0
        self._dropped_noted_at = -self._every_s
        self._complaint_at = -1.0
        self._complaints_held = 0
        self.received: collections.Counter[str] = collections.Counter()  # kinds handled, for tests and status
        self._stream: _Stream | None = None
        self._ha_audio = False  # Home Assistant takes audio-mode streams (HomeAssistantLink.audio)
        self.upload_destination = f"home_assistant via {self.link.path}"  # of text and audio alike, in the ledger

    def open(self) -> None:
        self.link.open()

    def close(self) -> None:
        self.link.close()

    # -- out ---------------------------------------------------------------------------------------

    def send_text(self, text: str) -> bool:
        """The home_assistant action's words, to Home Assistant's conversation. False: not sent (say so)."""
        if not self.link.connected:
            _LOG.warning("Home Assistant: not sent, the uplink is not connected: %r", text[:80])
            return False
        uid = f"u{next(self._ids)}"
        try:
            msg = messages.TextUtterance(uid, clean_text(text, MAX_TEXT_CHARS))
        except MessageError as e:
            _LOG.warning("Home Assistant: not sent: %s", e)
            return False
        fields = {"destination": self.upload_destination, "bytes": len(msg.text.encode("utf-8")),
                  "utterance": uid}
        if self._cfg.ledger_text:
            fields["text"] = msg.text
        # Ledgered before it goes: a ledger that cannot be written fails closed (gate.note) and nothing is sent.
        self._gate.note("text_sent", **fields)
        if self._gate.state is State.ERROR:
            return False
        if not self.link.send(msg):
            return False  # counted in link.dropped, which is ledgered
        self._expect_reply(uid, msg.text)
        _LOG.info("Home Assistant: sent %s (%d bytes of text)", uid, fields["bytes"])
        return True

    def state_changed(self, state: State) -> None:
        shown = _SHOWN[state]
        if shown != self._shown:
            self._shown = shown
            self.link.send(messages.State(shown))

    # -- out, audio mode: the pipeline's UtteranceUploader ------------------------------------------

    def upload_ready(self) -> bool:
        return (self._cfg.mode == HomeAssistantMode.AUDIO and self._stream is None and self.link.connected
                and self._ha_link is not None and self._ha_link[0] and self._ha_audio)

    def begin_stream(self) -> None:
        uid = f"u{next(self._ids)}"
        self._stream = _Stream(uid)
        self._expect_reply(uid, "")
        _LOG.info("Home Assistant: streaming %s (the upload light is on)", uid)

    def stream(self, block: bytes) -> None:
        st = self._stream
        if st is None or st.over:
            return
        if not self.link.send(messages.AudioChunk(st.uid, st.seq, block)):
            st.over = "dropped"  # the link lost a chunk: a stream with a hole is no use to Home Assistant
            return
        st.seq += 1
        st.queued += len(block)

    def stream_over(self) -> str:
        st = self._stream
        if st is None:
            return "stopped"
        if not st.over and not self.link.connected:
            st.over = "dropped"
        return st.over

    def end_stream(self, reason: str) -> None:
        st = self._stream
        if st is None or st.ended_at is not None:
            return
        st.end = reason if reason in _AUDIO_END_REASONS else "stopped"
        st.ended_at = self._clock()
        self.link.send(messages.AudioEnd(st.uid, st.end))

    def stream_settled(self) -> tuple[int, int | None, str] | None:
        st = self._stream
        if st is None or st.ended_at is None:
            return None
        if st.forwarded is None:
            waited = self._clock() - st.ended_at
            if self.link.connected and waited < AUDIO_SENT_WAIT_S:
                return None
            taken = self.link.discard_audio(st.uid)
            _LOG.warning("Home Assistant: the uplink did not confirm stream %s (%s): %d bytes still queued taken "
                         "back", st.uid, "it went away" if not self.link.connected else f"{waited:.1f} s", taken)
            st.queued -= taken
        self._stream = None
        _LOG.info("Home Assistant: stream %s over (%s): %d bytes sent", st.uid, st.end, st.queued)
        return st.queued, st.forwarded, st.end

    def abort_stream(self, reason: str) -> None:
        st = self._stream
        if st is None:
            return
        self._stream = None
        taken = self.link.discard_audio(st.uid)
        if st.ended_at is None:
            self.link.send(messages.AudioEnd(st.uid, reason if reason in _AUDIO_END_REASONS else "stopped"))
        self._pending.pop(st.uid, None)
        _LOG.info("Home Assistant: stream %s cut off (%s): %d bytes sent, %d taken back", st.uid, reason,
                  st.queued - taken, taken)

    def _audio_sent(self, msg: messages.AudioSent) -> None:
        st = self._stream
        if st is None or msg.utterance_id != st.uid or st.ended_at is None:
            self._complain(f"AudioSent for {msg.utterance_id}, which is not a stream that ended: ignored")
            return
        if msg.forwarded > st.queued:
            self._complain(f"the uplink says it passed on {msg.forwarded} bytes of {st.uid}; {st.queued} were sent")
        st.forwarded = min(msg.forwarded, st.queued)

    def _expect_reply(self, uid: str, text: str) -> None:
        self._pending[uid] = text
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)

    # -- the poll ----------------------------------------------------------------------------------

    def poll(self) -> None:
        for msg in self.link.poll():
            self.received[type(msg).__name__] += 1
            try:
                self._handle(msg)
            except Exception as e:  # noqa: BLE001 - a message we mishandle must not stop the audio loop
                _LOG.error("uplink: %s not handled: %s: %s", type(msg).__name__, type(e).__name__, e)
        if self.link.connections != self._connections:
            self._connections = self.link.connections
            self._hello()
        if self._announcing and not self._speaking():
            for announce_id in self._announcing:
                self.link.send(messages.AnnounceDone(announce_id, True))
            self._announcing.clear()
        self._note_dropped()

    def _hello(self) -> None:
        name = clean_text(platform.node(), messages.MAX_NAME_CHARS) or "tallylight"
        # str(): the mode as a plain str, the one type a message field accepts (not the config's HomeAssistantMode).
        self.link.send(messages.Hello(f"tallylight {__version__}", name, str(self._cfg.mode)))
        self._shown = _SHOWN[self._gate.state]
        self.link.send(messages.State(self._shown))

    def _note_dropped(self) -> None:
        dropped = self.link.dropped
        now = self._clock()
        if dropped != self._dropped_noted and now - self._dropped_noted_at >= self._every_s:
            self._gate.note("uplink_dropped", count=dropped - self._dropped_noted, total=dropped,
                            kinds=dict(self.link.dropped_by_kind))
            self._dropped_noted, self._dropped_noted_at = dropped, now

    def _handle(self, msg: messages.Message) -> None:
        if isinstance(msg, messages.UplinkHello):
            _LOG.info("uplink: %s", msg.software)
        elif isinstance(msg, messages.HomeAssistantLink):
            self._home_assistant_link(msg)
        elif isinstance(msg, messages.ReplyText):
            self._reply(msg)
        elif isinstance(msg, messages.ReplyAudio):
            self._audio(msg)
        elif isinstance(msg, messages.ReplyAudioEnd):
            self._audio_end(msg.speech_id)
        elif isinstance(msg, messages.Announcement):
            self._announcement(msg)
        elif isinstance(msg, messages.TimerEvent):
            self._timer(msg)
        elif isinstance(msg, messages.PipelineEvent):
            self._pipeline_event(msg)
        elif isinstance(msg, messages.AudioSent):
            self._audio_sent(msg)
        elif isinstance(msg, messages.ExposedNames):
            self._exposed_names(msg)
        else:  # the link's reader accepts only TO_DAEMON kinds; a new kind must be handled here first
            self._complain(f"{type(msg).__name__} is not handled by the daemon")

    def _home_assistant_link(self, msg: messages.HomeAssistantLink) -> None:
        self._ha_audio = msg.connected and msg.audio
        now = (msg.connected, msg.encrypted)
        if now != self._ha_link:
            self._ha_link = now
            _LOG.info("Home Assistant %s%s", "connected" if msg.connected else "not connected",
                      (" (encrypted)" if msg.encrypted else " (PLAINTEXT)") if msg.connected else "")
            self._gate.note("home_assistant_link", connected=msg.connected, encrypted=msg.encrypted)

    def _reply(self, msg: messages.ReplyText) -> None:
        if self._pending.pop(msg.utterance_id, None) is None:
            self._complain(f"a reply to {msg.utterance_id}, which was not sent (or long ago): ignored")
            return
        _LOG.info("Home Assistant replies to %s: %s", msg.utterance_id, msg.text)
        if msg.with_audio:
            self._start_speech(msg.utterance_id, _Speech(msg.text, announce=False))
        else:
            self._say(msg.text)

    def _announcement(self, msg: messages.Announcement) -> None:
        if self._gate.state in (State.MUTED, State.ERROR) and not self._cfg.announce_while_muted:
            _LOG.info("announcement %s not played: muted (home_assistant.announce_while_muted is false)",
                      msg.announce_id)
            self.link.send(messages.AnnounceDone(msg.announce_id, False))
            return
        _LOG.info("announcement %s: %s", msg.announce_id, msg.text or "(speech only)")
        if msg.with_audio:
            self._start_speech(msg.announce_id, _Speech(msg.text, announce=True))
        elif self._say(msg.text):
            self._announcing.append(msg.announce_id)
        else:
            self.link.send(messages.AnnounceDone(msg.announce_id, False))

    def _start_speech(self, speech_id: str, speech: _Speech) -> None:
        if len(self._speech) >= 2 and speech_id not in self._speech:
            # A reply and an announcement at once is the most that makes sense; more is a misbehaving peer.
            dropped = next(iter(self._speech))
            self._complain(f"speech {dropped} never ended: dropped for {speech_id}")
            self._speech.pop(dropped)
        self._speech[speech_id] = speech

    def _audio(self, msg: messages.ReplyAudio) -> None:
        speech = self._speech.get(msg.speech_id)
        if speech is None:
            self._complain(f"speech audio for {msg.speech_id}, which nothing announced: dropped")
            return
        if speech.broken or speech.over_cap:
            return
        if msg.seq != speech.next_seq:
            speech.broken = True
            _LOG.warning("speech %s: block %d came where %d was due: its audio is dropped", msg.speech_id,
                         msg.seq, speech.next_seq)
            return
        speech.next_seq += 1
        room = self._max_pcm - len(speech.pcm)
        if len(msg.pcm) > room:
            speech.over_cap = True
            speech.pcm += msg.pcm[:room]
            _LOG.warning("speech %s: longer than home_assistant.reply_audio_max_s = %g s: the rest is dropped",
                         msg.speech_id, self._cfg.reply_audio_max_s)
            return
        speech.pcm += msg.pcm

    def _audio_end(self, speech_id: str) -> None:
        speech = self._speech.pop(speech_id, None)
        if speech is None:
            self._complain(f"the end of speech {speech_id}, which nothing announced: ignored")
            return
        # Audio with a hole in it, or none: Home Assistant's words in our own voice instead.
        played = self._say(speech.text) if speech.broken or not speech.pcm else self._play(bytes(speech.pcm))
        if speech.announce:
            if played:
                self._announcing.append(speech_id)
            else:
                self.link.send(messages.AnnounceDone(speech_id, False))

    def _timer(self, msg: messages.TimerEvent) -> None:
        _LOG.info("Home Assistant timer %s %s (%s, %d of %d s left)", msg.timer_id, msg.event, msg.name or "no name",
                  msg.left_s, msg.total_s)
        if msg.event != "finished":
            self.link.send(messages.TimerAck(msg.timer_id, "noted"))
            return
        if self._responder is None:
            self.link.send(messages.TimerAck(msg.timer_id, "noted"))
            return
        # The cap is the local config's, whatever Home Assistant's timer says.
        self._responder.ring(max(1, int(self._cfg.timer_ring_max_s // (ALARM_RING_S + ALARM_GAP_S))))
        self.link.send(messages.TimerAck(msg.timer_id, "ringing"))

    def _exposed_names(self, msg: messages.ExposedNames) -> None:
        # Words to add to Home Assistant's sentences, nothing more: the rebuild (daemon.py, off the audio
        # thread) keeps every local command as it is and drops a name that would sound like one.
        got = (msg.names, msg.areas)
        if got == self._names:
            return
        self._names = got
        _LOG.info("Home Assistant exposes %d names and %d areas: the grammar is rebuilt with them",
                  len(msg.names), len(msg.areas))
        self._gate.note("home_assistant_names", names=len(msg.names), areas=len(msg.areas))
        if self._on_names is not None:
            self._on_names(msg.names, msg.areas)

    def _pipeline_event(self, msg: messages.PipelineEvent) -> None:
        st = self._stream
        if st is not None and msg.utterance_id == st.uid and not st.over and msg.event in ("stt_vad_end", "error"):
            st.over = "vad_end" if msg.event == "stt_vad_end" else "stopped"
        if msg.event != "error":
            _LOG.debug("Home Assistant %s: %s", msg.utterance_id, msg.event)
            return
        _LOG.warning("Home Assistant could not answer %s: %s %s", msg.utterance_id, msg.code, msg.message)
        if self._pending.pop(msg.utterance_id, None) is not None:
            self._say(ERROR_REPLY)

    # -- speech out --------------------------------------------------------------------------------

    def _speaker(self):
        return self._responder.speaker if self._responder is not None else None

    def _speaking(self) -> bool:
        speaker = self._speaker()
        return speaker is not None and speaker.speaking

    def _say(self, text: str) -> bool:
        speaker = self._speaker()
        if speaker is None or not text or not speaker.enabled:
            return False
        speaker.say(text)
        return True

    def _play(self, pcm: bytes) -> bool:
        speaker = self._speaker()
        if speaker is None or not speaker.enabled:
            return False
        speaker.play(pcm, messages.PCM_RATE)
        return True

    def _complain(self, what: str) -> None:
        """One log line, at most one a second: a flood of nonsense must not become a flood of log."""
        now = self._clock()
        if now - self._complaint_at < 1.0:
            self._complaints_held += 1
            return
        held, self._complaints_held, self._complaint_at = self._complaints_held, 0, now
        _LOG.warning("uplink: %s%s", what, f" ({held} more like it not logged)" if held else "")

