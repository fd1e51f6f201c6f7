"""The phrase syntax of the voice commands, parsed to a small tree.

    turn (on|off) the light[s]      (a|b) alternatives, [optional words], glued: light[s] = light|lights
    set a timer for {minutes} minute[s]     {slot}: a typed slot, defined in the command's `slots`
    wait {time:duration}                     {slot:spec}: the slot's type given inline

docs/commands.md is the user's description. `parse_phrase` gives the tree (`Seq` of `Word`,
`SlotRef` and `Alt`) or a `PhraseError` that says where the problem is and how to fix it.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from tallylight.speech.words import is_word_char

SLOT_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


# ---------------------------------------------------------------------------------------------------
# Phrase syntax -> tree


@dataclass(frozen=True)
class Word:
    text: str


@dataclass(frozen=True)
class SlotRef:
    name: str
    spec: str | None = None  # the inline type in {name:spec}, if any


@dataclass(frozen=True)
class Seq:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Alt:
    """Alternatives; an optional part is an Alt with an empty Seq among its options."""

    options: tuple[Seq, ...]

    @property
    def optional(self) -> bool:
        return any(not o.items for o in self.options)


Node = Word | SlotRef | Alt
EMPTY = Seq(())


class PhraseError(ValueError):
    """A phrase breaks the syntax; the message says where and how to fix it."""


_HINT = "phrases use lowercase words, (a|b) for alternatives, [optional words] and {slot}"


def _bad_char(text: str, pos: int) -> PhraseError:
    c = text[pos]
    if c.isupper():
        why = f"capital letter {c!r} (write phrases in lowercase)"
    elif c.isdigit():
        why = f"digit {c!r} (write numbers as words, or use a number {{slot}})"
    elif c == "-":
        why = "'-' (write separate words: 'twenty one', not 'twenty-one')"
    elif c in "\u2018\u2019":
        why = f"curly quote {c!r} (use a plain apostrophe ')"
    else:
        why = f"character {c!r} ({_HINT})"
    return PhraseError(f"unexpected {why} at position {pos + 1} in {text!r}")


class _PhraseParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, msg: str) -> PhraseError:
        return PhraseError(f"{msg} at position {self.pos + 1} in {self.text!r}")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def parse(self) -> Seq:
        seq = self.seq()
        if self.pos < len(self.text):
            c = self.peek()
            if c == "|":
                raise self.error("'|' outside (...) or [...] (put alternatives in brackets: (a|b))")
            raise self.error(f"unmatched {c!r}")
        if not seq.items:
            raise PhraseError(f"empty phrase {self.text!r} (write the words to be said)")
        return seq

    def seq(self) -> Seq:
        items: list[Node] = []
        while True:
            while self.peek().isspace():
                self.pos += 1
            if self.peek() in ("", "|", ")", "]"):
                return Seq(tuple(items))
            items.append(self.unit())

    def unit(self) -> Node:
        """Pieces written with no space between them: a word, a group, or glued ones (light[s])."""
        start = self.pos
        pieces: list[Node] = []
        while self.peek() and not self.peek().isspace() and self.peek() not in "|)]":
            c = self.peek()
            if c == "(":
                self.pos += 1
                pieces.append(Alt(self.alternatives(")")))
            elif c == "[":
                self.pos += 1
                pieces.append(Alt(self.alternatives("]") + (EMPTY,)))
            elif c == "{":
                pieces.append(self.slot())
            elif is_word_char(c):
                begin = self.pos
                while self.peek() and is_word_char(self.peek()):
                    self.pos += 1
                pieces.append(Word(self.text[begin : self.pos]))
            else:
                raise _bad_char(self.text, self.pos)
        if len(pieces) == 1:
            return pieces[0]
        return self.glue(pieces, start)

    def alternatives(self, closer: str) -> tuple[Seq, ...]:
        opener = "(" if closer == ")" else "["
        options: list[Seq] = []
        while True:
            option = self.seq()
            if not option.items:
                if closer == "]":
                    raise self.error("empty [...] or empty alternative in [...]")
                raise self.error("empty alternative in (...) (for optional words use [words])")
            options.append(option)
            c = self.peek()
            if c == "|":
                self.pos += 1
            elif c == closer:
                self.pos += 1
                return tuple(options)
            elif c == "":
                raise self.error(f"{opener!r} is never closed (add {closer!r})")
            else:
                raise self.error(f"{c!r} closes {opener!r} (expected {closer!r})")

    def slot(self) -> SlotRef:
        end = self.text.find("}", self.pos)
        if end < 0:
            raise self.error("'{' is never closed (add '}')")
        body = self.text[self.pos + 1 : end]
        name, _, spec = body.partition(":")
        name = name.strip()
        if not SLOT_NAME.match(name):
            raise self.error(f"bad slot name {{{body}}} (use lowercase letters, digits and _, like {{minutes}})")
        self.pos = end + 1
        return SlotRef(name, spec.strip() if spec else None)

    def glue(self, pieces: list[Node], start: int) -> Node:
        # Glued pieces are spelling variants of one word: every piece must be a word or a group of
        # single words. The result is an Alt of the concatenations (minute[s] -> minute | minutes).
        choices: list[list[str]] = []
        for piece in pieces:
            if isinstance(piece, Word):
                choices.append([piece.text])
            elif isinstance(piece, SlotRef):
                self.pos = start
                raise self.error("a {slot} must be a separate word (put spaces around it)")
            else:
                opts = [""] if piece.optional else []  # light[s]: "light" before "lights"
                for o in piece.options:
                    if not o.items:
                        opts.append("")
                    elif len(o.items) == 1 and isinstance(o.items[0], Word):
                        opts.append(o.items[0].text)
                    else:
                        self.pos = start
                        raise self.error("a group glued to a word may only hold single words, like minute[s]")
                choices.append(opts)
        words = list(dict.fromkeys("".join(p) for p in itertools.product(*choices)))
        options = tuple(Seq((Word(w),)) if w else EMPTY for w in words)
        if len(options) == 1:
            return options[0].items[0] if options[0].items else Alt((EMPTY,))
        return Alt(options)


def parse_syntax(text: str) -> Seq:
    """The tree of a phrase, its syntax checked but not its slots: for the built-in duration
    phrases (numbers.DURATION_PHRASES), where {n} is a number type used several times."""
    return _PhraseParser(text).parse()


def parse_phrase(text: str) -> Seq:
    """Parse one phrase into its tree; raises PhraseError with the position of the problem."""
    if not isinstance(text, str):
        raise PhraseError(f"a phrase must be a string, not {text!r}")
    tree = _PhraseParser(text).parse()
    if _can_be_empty(tree):
        raise PhraseError(f"phrase {text!r} can be said as nothing at all (make at least one word required)")
    counts = _slot_counts(tree)
    twice = sorted(n for n, c in counts.items() if c > 1)
    if twice:
        raise PhraseError(f"slot {{{twice[0]}}} appears twice in one way of saying {text!r} (a slot can be heard once)")
    return tree


def _can_be_empty(node: Node | Seq) -> bool:
    if isinstance(node, Seq):
        return all(_can_be_empty(i) for i in node.items)
    if isinstance(node, Alt):
        return any(_can_be_empty(o) for o in node.options)
    return False


def _slot_counts(node: Node | Seq) -> dict[str, int]:
    """Most times each slot can occur along one way of saying the phrase."""
    if isinstance(node, SlotRef):
        return {node.name: 1}
    if isinstance(node, Word):
        return {}
    out: dict[str, int] = {}
    if isinstance(node, Seq):
        for item in node.items:
            for k, v in _slot_counts(item).items():
                out[k] = out.get(k, 0) + v
    else:
        for o in node.options:
            for k, v in _slot_counts(o).items():
                out[k] = max(out.get(k, 0), v)
    return out


def slot_refs(node: Node | Seq) -> list[SlotRef]:
    """Every {slot} in a phrase tree, in order."""
    if isinstance(node, SlotRef):
        return [node]
    if isinstance(node, Word):
        return []
    children = node.items if isinstance(node, Seq) else node.options
    return [r for c in children for r in slot_refs(c)]


def required_slots(node: Node | Seq) -> set[str]:
    """The slots heard in every way of saying the phrase (not inside an optional part)."""
    if isinstance(node, SlotRef):
        return {node.name}
    if isinstance(node, Word):
        return set()
    if isinstance(node, Seq):
        return set().union(*(required_slots(i) for i in node.items)) if node.items else set()
    sets = [required_slots(o) for o in node.options]
    return set.intersection(*sets) if sets else set()
