"""The messages between the audio daemon and the uplink process: one frozen dataclass per kind.

Versioned (`framing.VERSION`), typed, bounded: every field has a checker (an id pattern, a text length,
a choice, an integer range, PCM bytes), run when a message is made *and* when one is decoded, so a
message that breaks a bound can neither be sent nor received. Decoding is strict: exactly the fields of
the kind, of exactly their JSON types, no duplicate keys, no NaN, no control characters in text; a frame
that fails is a `MessageError` with the reason, and the reader drops that one frame.

Which way each kind may travel is part of the kind (`TO_UPLINK` / `TO_DAEMON`) and each reader accepts
only its own direction, so the daemon rejects a daemon-to-uplink kind arriving from the uplink.

**Nothing the uplink can send starts a capture or an upload.** That is structural: among the kinds the
daemon accepts (`TO_DAEMON`) there is none that asks for one, and no field of them means "listen" or
"send audio". Home Assistant's start_conversation / continue_conversation flags are not carried at all;
an announcement is text or PCM to play, a timer event is a timer to ring (the ring time is capped by the
daemon's own config, not by a field), a pipeline event only reports. Audio flows towards the uplink only
in `AudioChunk`, which the daemon sends after its own wake word, through its own gate, with the upload
light on (P3); the uplink has no message that could ask for it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tallylight.pcm import RATE
from tallylight.uplink.framing import Frame, FrameSplitter, ProtocolError, encode_frame

MAX_TEXT_CHARS = 2000  # a spoken sentence or a reply; Home Assistant's long replies are cut by the uplink
MAX_NAME_CHARS = 100  # a timer's or a device's name
MAX_ID_CHARS = 64
MAX_SECONDS = 24 * 3600  # Home Assistant's timers are minutes to hours; nothing here needs more than a day
MAX_SEQ = 2**31 - 1
MAX_PCM_BYTES = 32 * 1024  # = framing.MAX_DATA_BYTES: 1.024 s of s16le mono 16 kHz
MAX_STREAM_BYTES = 2**31 - 1  # the PCM of one audio-mode stream (capture.max_s caps it far below this)
PCM_RATE = RATE  # every PCM on this socket is s16le mono at this rate: nothing to negotiate, nothing to check

_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# C0 and C1 controls, DEL, and lone surrogates: nothing to speak, and a newline could forge a log line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


class MessageError(ProtocolError):
    """One frame or message is wrong (unknown kind, a field missing, extra, of the wrong type or out of bounds)."""


# --- field checkers ---------------------------------------------------------------------------------------

class _Check:
    """Checks one field's value; `json` says whether it travels in the JSON part (else it is the data part)."""

    json = True

    def check(self, name: str, value: Any) -> None:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class _Text(_Check):
    max_chars: int
    empty_ok: bool = True

    def check(self, name: str, value: Any) -> None:
        if type(value) is not str:
            raise MessageError(f"{name} must be a string, not {type(value).__name__}")
        if len(value) > self.max_chars:
            raise MessageError(f"{name} has {len(value)} characters, over the cap of {self.max_chars}")
        if not value and not self.empty_ok:
            raise MessageError(f"{name} is empty")
        if m := _CONTROL.search(value):
            raise MessageError(f"{name} has a control character U+{ord(m.group()):04X}")


@dataclass(frozen=True, slots=True)
class _Id(_Check):
    def check(self, name: str, value: Any) -> None:
        if type(value) is not str or not _ID.fullmatch(value):
            shown = value[:MAX_ID_CHARS] if isinstance(value, str) else type(value).__name__
            raise MessageError(f"{name} must be 1-{MAX_ID_CHARS} of A-Z a-z 0-9 _ . : -, not {shown!r}")


@dataclass(frozen=True, slots=True)
class _Choice(_Check):
    values: tuple[str, ...]

    def check(self, name: str, value: Any) -> None:
        if type(value) is not str or value not in self.values:
            shown = value[:40] if isinstance(value, str) else type(value).__name__
            raise MessageError(f"{name} must be one of {', '.join(self.values)}, not {shown!r}")


@dataclass(frozen=True, slots=True)
class _Int(_Check):
    lo: int
    hi: int

    def check(self, name: str, value: Any) -> None:
        # bool is an int subclass in Python: refuse it, true is not 1 here.
        if type(value) is not int:
            raise MessageError(f"{name} must be an integer, not {type(value).__name__}")
        if not self.lo <= value <= self.hi:
            raise MessageError(f"{name} = {value} is outside {self.lo}..{self.hi}")


@dataclass(frozen=True, slots=True)
class _Flag(_Check):
    def check(self, name: str, value: Any) -> None:
        if type(value) is not bool:
            raise MessageError(f"{name} must be true or false, not {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class _Pcm(_Check):
    json: ClassVar[bool] = False

    def check(self, name: str, value: Any) -> None:
        if type(value) is not bytes:
            raise MessageError(f"{name} must be bytes, not {type(value).__name__}")
        if len(value) > MAX_PCM_BYTES:
            raise MessageError(f"{name} has {len(value)} bytes, over the cap of {MAX_PCM_BYTES}")
        if len(value) % 2:
            raise MessageError(f"{name} has an odd number of bytes ({len(value)}): not s16le samples")


# A name from Home Assistant, as the grammar takes it: 1-6 words of lowercase letters (any script) and
# apostrophes, one space between them. No digits, no punctuation, no controls: nothing but words to hear.
MAX_EXPOSED_NAME_CHARS = 60
MAX_EXPOSED_NAME_WORDS = 6
_WORD = r"(?:[^\W\d_]|')+"
_EXPOSED_NAME = re.compile(rf"{_WORD}(?: {_WORD}){{0,{MAX_EXPOSED_NAME_WORDS - 1}}}")


@dataclass(frozen=True, slots=True)
class _Names(_Check):
    """A tuple of distinct names (a JSON array on the wire), at most max_items of them and max_bytes of UTF-8
    in all: the bound keeps the biggest message inside one frame's meta (framing.MAX_META_BYTES)."""

    max_items: int
    max_bytes: int

    def check(self, name: str, value: Any) -> None:
        if type(value) is not tuple:
            raise MessageError(f"{name} must be a list of names, not {type(value).__name__}")
        if len(value) > self.max_items:
            raise MessageError(f"{name} has {len(value)} names, over the cap of {self.max_items}")
        total = 0
        for item in value:
            if type(item) is not str:
                raise MessageError(f"{name} holds a {type(item).__name__}, not a name")
            if len(item) > MAX_EXPOSED_NAME_CHARS:
                raise MessageError(f"{name} holds a name of {len(item)} characters, over the cap of "
                                   f"{MAX_EXPOSED_NAME_CHARS}")
            if not _EXPOSED_NAME.fullmatch(item) or item != item.lower():
                raise MessageError(f"{name} holds {item[:40]!r}, which is not 1-{MAX_EXPOSED_NAME_WORDS} "
                                   "lowercase words")
            total += len(item.encode("utf-8"))
        if total > self.max_bytes:
            raise MessageError(f"{name} has {total} bytes of names, over the cap of {self.max_bytes}")
        if len(set(value)) != len(value):
            raise MessageError(f"{name} holds a name twice")

    @staticmethod
    def from_json(value: Any) -> Any:
        return tuple(value) if type(value) is list else value


def _f(check: _Check) -> Any:
    return field(metadata={"check": check})


def text(max_chars: int = MAX_TEXT_CHARS, *, empty_ok: bool = True) -> Any:
    return _f(_Text(max_chars, empty_ok))


def ident() -> Any:
    return _f(_Id())


def choice(*values: str) -> Any:
    return _f(_Choice(values))


def integer(lo: int, hi: int) -> Any:
    return _f(_Int(lo, hi))


def flag() -> Any:
    return _f(_Flag())


def pcm() -> Any:
    return _f(_Pcm())


def name_list(max_items: int, max_bytes: int) -> Any:
    return _f(_Names(max_items, max_bytes))


# --- the kinds --------------------------------------------------------------------------------------------

TO_UPLINK = "to_uplink"
TO_DAEMON = "to_daemon"


@dataclass(frozen=True, slots=True)
class Message:
    """Base of every kind. KIND is the frame's kind byte, DIRECTION which way the kind may travel."""

    KIND: ClassVar[int] = 0
    DIRECTION: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            f.metadata["check"].check(f"{type(self).__name__}.{f.name}", getattr(self, f.name))


# daemon -> uplink

@dataclass(frozen=True, slots=True)
class Hello(Message):
    """The daemon's first message on a new connection: who it is and which mode the local config chose."""

    KIND: ClassVar[int] = 1
    DIRECTION: ClassVar[str] = TO_UPLINK
    software: str = text(MAX_NAME_CHARS, empty_ok=False)
    device_name: str = text(MAX_NAME_CHARS, empty_ok=False)
    mode: str = choice("text", "audio")  # set in the local config file only; the uplink cannot change it


@dataclass(frozen=True, slots=True)
class State(Message):
    """The gate's state, for Home Assistant to show read-only (it cannot switch any of it)."""

    KIND: ClassVar[int] = 2
    DIRECTION: ClassVar[str] = TO_UPLINK
    state: str = choice("muted", "listening", "capturing", "uploading")


@dataclass(frozen=True, slots=True)
class TextUtterance(Message):
    """A recognized sentence that is not a local command, for Home Assistant's conversation agent (text mode)."""

    KIND: ClassVar[int] = 3
    DIRECTION: ClassVar[str] = TO_UPLINK
    utterance_id: str = ident()
    text: str = text(empty_ok=False)


@dataclass(frozen=True, slots=True)
class AudioChunk(Message):
    """Audio mode only: a block of the utterance, sent while the gate is UPLOADING with the light on (P3)."""

    KIND: ClassVar[int] = 4
    DIRECTION: ClassVar[str] = TO_UPLINK
    utterance_id: str = ident()
    seq: int = integer(0, MAX_SEQ)  # a gap means the link dropped a chunk; the uplink then ends the stream
    pcm: bytes = pcm()


@dataclass(frozen=True, slots=True)
class AudioEnd(Message):
    """Audio mode only: the utterance's stream is over, and why."""

    KIND: ClassVar[int] = 5
    DIRECTION: ClassVar[str] = TO_UPLINK
    utterance_id: str = ident()
    reason: str = choice("vad_end", "max_length", "muted", "stopped", "dropped")


@dataclass(frozen=True, slots=True)
class TimerAck(Message):
    """What the daemon did with a timer event: ringing, stopped by the owner, or stopped by the ring cap."""

    KIND: ClassVar[int] = 6
    DIRECTION: ClassVar[str] = TO_UPLINK
    timer_id: str = ident()
    outcome: str = choice("noted", "ringing", "stopped", "ring_cap")


@dataclass(frozen=True, slots=True)
class AnnounceDone(Message):
    """An announcement was played (or not: muted with announcements off, or the audio was unusable)."""

    KIND: ClassVar[int] = 7
    DIRECTION: ClassVar[str] = TO_UPLINK
    announce_id: str = ident()
    played: bool = flag()


# uplink -> daemon

@dataclass(frozen=True, slots=True)
class UplinkHello(Message):
    KIND: ClassVar[int] = 20
    DIRECTION: ClassVar[str] = TO_DAEMON
    software: str = text(MAX_NAME_CHARS, empty_ok=False)


@dataclass(frozen=True, slots=True)
class HomeAssistantLink(Message):
    """Whether Home Assistant is connected to the uplink now (for the daemon to say so and ledger it), and
    whether it takes the audio of audio mode (subscribed for API audio, and the uplink in audio mode)."""

    KIND: ClassVar[int] = 21
    DIRECTION: ClassVar[str] = TO_DAEMON
    connected: bool = flag()
    encrypted: bool = flag()
    audio: bool = flag()


@dataclass(frozen=True, slots=True)
class ReplyText(Message):
    """Home Assistant's answer to a TextUtterance. with_audio false: the daemon speaks the text with its own
    TTS; true: ReplyAudio blocks with speech_id == utterance_id follow (Home Assistant's voice), ended by a
    ReplyAudioEnd, and the text is for the log and the ledger only (said once, not twice)."""

    KIND: ClassVar[int] = 22
    DIRECTION: ClassVar[str] = TO_DAEMON
    utterance_id: str = ident()
    text: str = text()
    with_audio: bool = flag()


@dataclass(frozen=True, slots=True)
class ReplyAudio(Message):
    """A block of speech to play (a reply's or an announcement's TTS, decoded by the uplink to PCM_RATE)."""

    KIND: ClassVar[int] = 23
    DIRECTION: ClassVar[str] = TO_DAEMON
    speech_id: str = ident()
    seq: int = integer(0, MAX_SEQ)
    pcm: bytes = pcm()


@dataclass(frozen=True, slots=True)
class ReplyAudioEnd(Message):
    KIND: ClassVar[int] = 24
    DIRECTION: ClassVar[str] = TO_DAEMON
    speech_id: str = ident()


@dataclass(frozen=True, slots=True)
class Announcement(Message):
    """Something to say unprompted; with_audio: ReplyAudio blocks with speech_id == announce_id follow.

    It carries no "then listen" (Home Assistant's start_conversation): after it, the mic does what it
    did before, and a conversation needs the local wake word.
    """

    KIND: ClassVar[int] = 25
    DIRECTION: ClassVar[str] = TO_DAEMON
    announce_id: str = ident()
    text: str = text()
    with_audio: bool = flag()


@dataclass(frozen=True, slots=True)
class TimerEvent(Message):
    """A Home Assistant timer started, changed, was cancelled or finished (finished: ring, up to the local cap)."""

    KIND: ClassVar[int] = 26
    DIRECTION: ClassVar[str] = TO_DAEMON
    event: str = choice("started", "updated", "cancelled", "finished")
    timer_id: str = ident()
    name: str = text(MAX_NAME_CHARS)
    total_s: int = integer(0, MAX_SECONDS)
    left_s: int = integer(0, MAX_SECONDS)
    active: bool = flag()


@dataclass(frozen=True, slots=True)
class PipelineEvent(Message):
    """How Home Assistant's run for an utterance goes; `stt_vad_end` tells the daemon to stop an audio stream."""

    KIND: ClassVar[int] = 27
    DIRECTION: ClassVar[str] = TO_DAEMON
    utterance_id: str = ident()
    event: str = choice("run_start", "stt_vad_end", "stt_end", "intent_end", "tts_end", "run_end", "error")
    code: str = text(MAX_NAME_CHARS)  # for "error": Home Assistant's code, or the uplink's own (e.g. "no_peer")
    message: str = text(500)


@dataclass(frozen=True, slots=True)
class AudioSent(Message):
    """Audio mode: the uplink has handed every chunk of a stream to Home Assistant's connection (or dropped
    the rest), after the stream's AudioEnd. The daemon keeps the upload light on until this comes."""

    KIND: ClassVar[int] = 29
    DIRECTION: ClassVar[str] = TO_DAEMON
    utterance_id: str = ident()
    forwarded: int = integer(0, MAX_STREAM_BYTES)  # the PCM bytes that went to Home Assistant


MAX_EXPOSED_NAMES = 200  # = speech.ha_sentences.MAX_NAMES: the grammar takes no more
MAX_EXPOSED_AREAS = 100


@dataclass(frozen=True, slots=True)
class ExposedNames(Message):
    """The names of the entities and areas Home Assistant exposes to Assist, fetched by the uplink with the
    owner's token. Text only, and only ever extra: the daemon adds them to the home_assistant command's
    sentences, after the config's own, and drops any that would make a sentence sound like a local command
    (speech/ha_sentences.py). They cannot change, remove or start anything."""

    KIND: ClassVar[int] = 28
    DIRECTION: ClassVar[str] = TO_DAEMON
    names: tuple = name_list(MAX_EXPOSED_NAMES, 6000)
    areas: tuple = name_list(MAX_EXPOSED_AREAS, 3000)


KINDS: dict[int, type[Message]] = {
    cls.KIND: cls
    for cls in (Hello, State, TextUtterance, AudioChunk, AudioEnd, TimerAck, AnnounceDone,
                UplinkHello, HomeAssistantLink, ReplyText, ReplyAudio, ReplyAudioEnd, Announcement,
                TimerEvent, PipelineEvent, ExposedNames, AudioSent)
}
# Whatever the daemon will accept from the uplink: the list that must hold nothing that captures or uploads.
TO_DAEMON_KINDS = frozenset(k for k, cls in KINDS.items() if cls.DIRECTION == TO_DAEMON)
TO_UPLINK_KINDS = frozenset(k for k, cls in KINDS.items() if cls.DIRECTION == TO_UPLINK)


# --- encoding and decoding ----------------------------------------------------------------------------------

def _split_fields(cls: type[Message]) -> tuple[tuple[str, ...], str | None]:
    json_names = tuple(f.name for f in dataclasses.fields(cls) if f.metadata["check"].json)
    data_names = [f.name for f in dataclasses.fields(cls) if not f.metadata["check"].json]
    return json_names, (data_names[0] if data_names else None)


_FIELDS = {kind: _split_fields(cls) for kind, cls in KINDS.items()}


def encode(msg: Message) -> bytes:
    """The whole frame for a message (its fields were checked when it was made)."""
    json_names, data_name = _FIELDS[msg.KIND]
    meta = json.dumps({n: getattr(msg, n) for n in json_names}, ensure_ascii=False, separators=(",", ":"),
                      sort_keys=True).encode("utf-8")
    return encode_frame(msg.KIND, meta, getattr(msg, data_name) if data_name else b"")


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise MessageError(f"duplicate key {key[:40]!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise MessageError(f"{name} is not a number here")


def decode(frame: Frame, accept: frozenset[int]) -> Message:
    """The message in a frame, checked against its kind; MessageError (with the reason) if anything is off."""
    cls = KINDS.get(frame.kind)
    if cls is None:
        raise MessageError(f"unknown message kind {frame.kind}")
    if frame.kind not in accept:
        raise MessageError(f"{cls.__name__} may not be sent this way ({cls.DIRECTION} only)")
    json_names, data_name = _FIELDS[frame.kind]
    try:
        obj = json.loads(frame.meta.decode("utf-8"), object_pairs_hook=_object_pairs, parse_constant=_no_constant)
    except UnicodeDecodeError as e:
        raise MessageError(f"{cls.__name__}: meta is not UTF-8 (byte {e.start})") from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError; so is a 5000-digit integer
        raise MessageError(f"{cls.__name__}: meta is not JSON ({str(e)[:80]})") from None
    if not isinstance(obj, dict):
        raise MessageError(f"{cls.__name__}: meta must be a JSON object, not {type(obj).__name__}")
    if set(obj) != set(json_names):
        missing = sorted(set(json_names) - set(obj))
        extra = sorted(k[:40] for k in set(obj) - set(json_names))
        raise MessageError(f"{cls.__name__}: fields missing {missing}, unexpected {extra}")
    if data_name is None and frame.data:
        raise MessageError(f"{cls.__name__} carries no data, but {len(frame.data)} bytes came")
    if data_name is not None:
        obj[data_name] = frame.data
    for f in dataclasses.fields(cls):
        from_json = getattr(f.metadata["check"], "from_json", None)
        if from_json is not None:
            obj[f.name] = from_json(obj[f.name])
    return cls(**obj)


class MessageReader:
    """Bytes in, messages out, for one connection and one direction (`TO_DAEMON_KINDS` or `TO_UPLINK_KINDS`).

    `feed` returns the messages and, in order among them, a MessageError for each frame that was dropped,
    so the caller can log each one; it raises FrameError when the stream is broken (drop the connection).
    """

    def __init__(self, accept: frozenset[int]) -> None:
        self._accept = accept
        self._frames = FrameSplitter()
        self.rejected = 0

    @property
    def partial(self) -> bool:
        return self._frames.partial

    @property
    def buffered(self) -> int:
        return self._frames.buffered

    def feed(self, data: bytes) -> list[Message | MessageError]:
        out: list[Message | MessageError] = []
        for frame in self._frames.feed(data):
            try:
                out.append(decode(frame, self._accept))
            except MessageError as e:
                self.rejected += 1
                out.append(e)
        return out


_WHITESPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f-\x9f\ud800-\udfff]+")


def clean_text(value: str, max_chars: int) -> str:
    """Text from the network made fit for a text field: controls and runs of whitespace become one space, cut."""
    return _WHITESPACE_OR_CONTROL.sub(" ", value).strip()[:max_chars].rstrip()
