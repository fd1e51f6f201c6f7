"""One interface over the on-device speech recognizers (pocketsphinx and vosk); `engines` builds them.

A recognizer is a plain step: feed it 16 kHz mono s16le blocks with `process()`, ask for the final
result with `finish()`, `reset()` before the next utterance. It does no I/O of its own and keeps no
audio after `finish()`/`reset()`. Both engines take plain data (a JSGF string, a phrase list), so
they can be built and tested without the command module.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Hypothesis:
    """What the recognizer heard.

    `confidence` is 0..1 (see each engine for what it is made of). `final` is False for a partial
    result during the utterance. `complete` is False when the engine ended in a state that is not
    the end of a grammar phrase (pocketsphinx's "Final result does not match the grammar"): the text
    is then a truncated phrase that must never be trusted as it is; the caller may resolve it to its
    unique completion with `Grammar.complete()` or reject it.
    """

    text: str
    confidence: float
    final: bool
    complete: bool = True


class Recognizer:
    """Interface: feed blocks, get partial and final hypotheses, reset, close."""

    name = "recognizer"

    def process(self, block: bytes) -> Hypothesis | None:
        """Feed audio (16 kHz mono s16le, any length). A partial hypothesis when it changed, else None."""
        raise NotImplementedError

    def finish(self) -> Hypothesis:
        """End of the utterance: the final hypothesis (text "" when nothing was recognized)."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget the current utterance; ready for the next one."""
        raise NotImplementedError

    def close(self) -> None:
        """Free the engine. Safe to call twice."""
        raise NotImplementedError

    def missing_words(self) -> set[str]:
        """Grammar words that the model cannot recognize (for `tallylight check`)."""
        raise NotImplementedError

    def __enter__(self) -> Recognizer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
