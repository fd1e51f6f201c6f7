"""What the pipeline reports: one frozen dataclass per kind of event.

`t` is seconds of audio into the stream (for `listen`, into the file). `to_dict()` gives the JSON
object that `tallylight listen --json` prints, with `"event"` naming the kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Event:
    kind: ClassVar[str] = "event"
    t: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["t"] = round(self.t, 3)
        return {"event": self.kind, **d}


@dataclass(frozen=True)
class StateChanged(Event):
    kind: ClassVar[str] = "state"
    state: str
    previous: str
    reason: str


@dataclass(frozen=True)
class WakeDetected(Event):
    kind: ClassVar[str] = "wake"
    word: str
    engine: str
    score: float


@dataclass(frozen=True)
class CaptureEnded(Event):
    """A capture session's audio was handed over and wiped. `end` says why it ended: "end" (speech
    then silence), "no_speech", "max_length", "early" (the recognizer was sure), "mute"."""

    kind: ClassVar[str] = "capture"
    duration_s: float
    end: str
    handed_to: str


@dataclass(frozen=True)
class Transcript(Event):
    kind: ClassVar[str] = "transcript"
    text: str
    confidence: float


@dataclass(frozen=True)
class IntentMatched(Event):
    kind: ClassVar[str] = "intent"
    name: str
    slots: Mapping[str, Any] = field(default_factory=dict)
    # The grammar's Match (command, typed slots, words heard), for the action runner; not printed.
    match: Any = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.kind, "t": round(self.t, 3), "name": self.name, "slots": dict(self.slots)}


@dataclass(frozen=True)
class NoMatch(Event):
    kind: ClassVar[str] = "no_match"
    text: str = ""


@dataclass(frozen=True)
class WakeScore(Event):
    """`tallylight listen`, at the end of each file: the best wake score heard in it (either view),
    whether or not it woke, beside the threshold a detection must exceed: how near a miss came."""

    kind: ClassVar[str] = "wake_score"
    best: float
    threshold: float
