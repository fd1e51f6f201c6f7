"""One definition of the voice commands drives both the recognizer's grammar and the intent matcher.

Phrase syntax (docs/commands.md is the user's description):

    turn (on|off) the light[s]      (a|b) alternatives, [optional words], glued: light[s] = light|lights
    set a timer for {minutes} minute[s]     {slot}: a typed slot, defined in the command's `slots`
    wait {time:duration}                     {slot:spec}: the slot's type given inline

A phrase is parsed to a small tree (`parse_phrase`). From the trees of all commands, `Grammar` builds:
- JSGF text for pocketsphinx (`to_jsgf`), with each slot type as one shared rule;
- a word list for vosk's grammar mode (`vosk_phrases`);
- a word-level automaton per phrase (an epsilon-free NFA whose edges carry the slot each word belongs
  to), used for exact matching (`match`), completing truncated hypotheses (`complete`), enumerating
  (`expand`, `sample`) and for the config checks that two commands can never be heard the same way
  (`find_conflict`).
Matching never guesses: a text that does not parse, or parses to two different intents, gives None.
"""

from __future__ import annotations

import itertools
import logging
import random
import re
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterator, Mapping, Sequence, Union

from tallylight.speech import numbers
from tallylight.speech.command_types import Command, FrozenMap, SlotType, fill_template
from tallylight.speech.words import is_word_char, normalize_words

log = logging.getLogger(__name__)

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
    items: tuple["Node", ...]


@dataclass(frozen=True)
class Alt:
    """Alternatives; an optional part is an Alt with an empty Seq among its options."""

    options: tuple[Seq, ...]

    @property
    def optional(self) -> bool:
        return any(not o.items for o in self.options)


Node = Union[Word, SlotRef, Alt]
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


# ---------------------------------------------------------------------------------------------------
# Word automata


@dataclass
class _Nfa:
    """Epsilon-free, acyclic. edges[state][word] = [(slot or None, next state), ...]."""

    start: int
    finals: frozenset[int]
    edges: list[dict[str, list[tuple[str | None, int]]]]


class _Builder:
    """Thompson construction with epsilon edges, then `finish` removes them."""

    def __init__(self) -> None:
        self.words: list[list[tuple[str, str | None, int]]] = []
        self.eps: list[list[int]] = []

    def state(self) -> int:
        self.words.append([])
        self.eps.append([])
        return len(self.words) - 1

    def word_set(self, start: int, end: int, dawg: "_Dawg", tag: str | None) -> None:
        """Any one of a set of word sequences, from a minimal automaton of them (`_dawg`)."""
        nodes, finals = dawg
        ids = [self.state() for _ in nodes]
        self.eps[start].append(ids[0])
        for i, out in enumerate(nodes):
            for w, j in out:
                self.words[ids[i]].append((w, tag, ids[j]))
            if finals[i]:
                self.eps[ids[i]].append(end)

    def finish(self, start: int, final: int) -> _Nfa:
        closures: list[set[int] | None] = [None] * len(self.words)

        def closure(s: int) -> set[int]:
            c = closures[s]
            if c is None:
                c = {s}
                for t in self.eps[s]:
                    c |= closure(t)
                closures[s] = c
            return c

        index: dict[int, int] = {}
        order: list[int] = []
        todo = [start]
        index[start] = 0
        order.append(start)
        while todo:
            s = todo.pop()
            for c in closure(s):
                for _, _, nxt in self.words[c]:
                    if nxt not in index:
                        index[nxt] = len(order)
                        order.append(nxt)
                        todo.append(nxt)
        edges: list[dict[str, list[tuple[str | None, int]]]] = []
        finals = set()
        for s in order:
            out: dict[str, list[tuple[str | None, int]]] = {}
            for c in closure(s):
                for w, tag, nxt in self.words[c]:
                    lst = out.setdefault(w, [])
                    if (tag, index[nxt]) not in lst:
                        lst.append((tag, index[nxt]))
            edges.append(out)
            if final in closure(s):
                finals.add(index[s])
        return _Nfa(0, frozenset(finals), edges)


_DURATION_TREES: list[Seq] | None = None


def _duration_trees() -> list[Seq]:
    global _DURATION_TREES
    if _DURATION_TREES is None:
        # Not parse_phrase: here {n} is a number type used several times, not a user's slot.
        _DURATION_TREES = [_PhraseParser(p).parse() for p in numbers.DURATION_PHRASES]
    return _DURATION_TREES


@lru_cache(maxsize=64)
def _int_forms(lo: int, hi: int) -> tuple[str, ...]:
    return tuple(f for n in range(lo, hi + 1) for f in numbers.spoken_forms(n))


# A minimal acyclic automaton of a set of word sequences: node 0 is the start; nodes[i] lists
# (word, next node); finals[i] says whether a sequence may end at node i.
_Dawg = tuple[tuple[tuple[tuple[str, int], ...], ...], tuple[bool, ...]]


@lru_cache(maxsize=64)
def _dawg(forms: tuple[str, ...]) -> _Dawg:
    """Shared prefixes and shared endings: the numbers 0-999 ("... hundred and twenty one") fold
    into ~60 states instead of a ~9,000-state trie, which keeps config checks fast on a Pi."""
    trie: list[dict[str, int]] = [{}]
    ends = [False]
    for form in forms:
        node = 0
        for w in form.split():
            if w not in trie[node]:
                trie.append({})
                ends.append(False)
                trie[node][w] = len(trie) - 1
            node = trie[node][w]
        ends[node] = True
    # Bottom-up: nodes with the same ending and the same edges to the same classes are one node.
    register: dict[tuple, int] = {}
    canon: dict[int, int] = {}
    nodes: list[tuple[tuple[str, int], ...]] = []
    finals: list[bool] = []

    def visit(i: int) -> int:
        edges = tuple(sorted((w, visit(j)) for w, j in trie[i].items()))
        key = (ends[i], edges)
        if key not in register:
            register[key] = len(nodes)
            nodes.append(edges)
            finals.append(ends[i])
        canon[i] = register[key]
        return canon[i]

    root = visit(0)
    # Renumber so that the start is node 0.
    order = [root] + [k for k in range(len(nodes)) if k != root]
    new = {old: i for i, old in enumerate(order)}
    return (
        tuple(tuple((w, new[j]) for w, j in nodes[old]) for old in order),
        tuple(finals[old] for old in order),
    )


def _compile(tree: Seq, slots: Mapping[str, SlotType]) -> _Nfa:
    b = _Builder()

    def slot_fragment(start: int, end: int, slot: SlotType, tag: str) -> None:
        if slot.kind == "int":
            b.word_set(start, end, _dawg(_int_forms(slot.lo, slot.hi)), tag)
        elif slot.kind == "enum":
            b.word_set(start, end, _dawg(tuple(slot.values)), tag)
        else:  # duration: its own phrases, every word tagged with the outer slot
            n = SlotType("n", "int", 1, numbers.DURATION_N_MAX)
            for t in _duration_trees():
                node(t, start, end, tag, {"n": n})

    def node(n: Node | Seq, start: int, end: int, tag: str | None, scope: Mapping[str, SlotType]) -> None:
        if isinstance(n, Word):
            b.words[start].append((n.text, tag, end))
        elif isinstance(n, SlotRef):
            slot = scope[n.name]
            slot_fragment(start, end, slot, tag or n.name)
        elif isinstance(n, Seq):
            cur = start
            for item in n.items:
                nxt = b.state()
                node(item, cur, nxt, tag, scope)
                cur = nxt
            b.eps[cur].append(end)
        else:
            for o in n.options:
                node(o, start, end, tag, scope)

    start, final = b.state(), b.state()
    node(tree, start, final, None, slots)
    return b.finish(start, final)


# ---------------------------------------------------------------------------------------------------
# Matching


@dataclass(frozen=True)
class Match:
    """A recognized text resolved to a command, with typed slot values (minutes=5, seconds=5400)."""

    command: Command
    slots: Mapping[str, int | str]
    text: str
    spans: Mapping[str, str] = field(default_factory=FrozenMap)  # slot -> the words heard for it

    def reply_text(self, values: Mapping[str, str] | None = None) -> str | None:
        """The command's reply with {slot} filled in with the words heard ("twenty one"), and the
        action's own values (e.g. {time}) from `values`. None when the command has no reply."""
        if self.command.reply is None:
            return None
        return fill_template(self.command.reply, {**dict(values or {}), **self.spans})

    def argv(self) -> tuple[str, ...]:
        """For a `run` command: argv with each {slot} replaced by its typed value (5, "red", 5400)."""
        return tuple(fill_template(a, {k: str(v) for k, v in self.slots.items()}) for a in self.command.options["argv"])


@dataclass
class _Phrase:
    command: Command
    index: int
    tree: Seq
    nfa: _Nfa


_MAX_RUNS = 64  # parses of one text per phrase; more means a pathological grammar, not a command


def _runs(nfa: _Nfa, words: Sequence[str], state: int | None = None, pos: int = 0, full: bool = True):
    """Every path reading `words` from `state`: (end state, slot tags). With full=True only paths
    ending in a final state."""
    out: list[tuple[int, tuple]] = []
    dead: set[tuple[int, int]] = set()

    def walk(s: int, i: int, tags: tuple) -> bool:
        if len(out) >= _MAX_RUNS or (s, i) in dead:
            return False
        if i == len(words):
            if not full or s in nfa.finals:
                out.append((s, tags))
                return True
            return False
        found = False
        for tag, nxt in nfa.edges[s].get(words[i], ()):
            found |= walk(nxt, i + 1, tags + (tag,))
        if not found:
            dead.add((s, i))
        return found

    walk(nfa.start if state is None else state, pos, ())
    return out


def _values(command: Command, words: Sequence[str], tags: Sequence[str | None]) -> tuple[dict, dict]:
    spans: dict[str, list[str]] = {}
    for w, t in zip(words, tags):
        if t is not None:
            spans.setdefault(t, []).append(w)
    typed: dict[str, int | str] = {}
    heard: dict[str, str] = {}
    for name, ws in spans.items():
        text = " ".join(ws)
        heard[name] = text
        slot = command.slots[name]
        if slot.kind == "int":
            typed[name] = numbers.words_to_int(text)
        elif slot.kind == "enum":
            typed[name] = slot.values[text]
        else:
            typed[name] = numbers.parse_duration(text)
    return typed, heard


def _key(command: Command, typed: Mapping) -> tuple:
    return (command.name, tuple(sorted(typed.items())))


class Grammar:
    """The commands' grammar: recognizer grammars out, recognized text in, intents out."""

    def __init__(self, commands: Sequence[Command]) -> None:
        self.commands: tuple[Command, ...] = tuple(commands)
        self._phrases: list[_Phrase] = []
        for cmd in self.commands:
            for i, text in enumerate(cmd.phrases):
                tree = parse_phrase(text)
                self._phrases.append(_Phrase(cmd, i, tree, _compile(tree, cmd.slots)))

    # -- intents --------------------------------------------------------------------------------

    def _resolve(self, candidates: dict[tuple, Match]) -> Match | None:
        if len(candidates) == 1:
            return next(iter(candidates.values()))
        if len(candidates) > 1:
            log.debug("ambiguous: %s", [m.text + " -> " + m.command.name for m in candidates.values()])
        return None

    def match(self, text: str) -> Match | None:
        """The command a recognized word string says, with typed slots; None when it does not parse
        exactly, or parses to two different intents (never a guess)."""
        words = normalize_words(text)
        if not words:
            return None
        joined = " ".join(words)
        found: dict[tuple, Match] = {}
        for ph in self._phrases:
            runs = _runs(ph.nfa, words)
            if len(runs) >= _MAX_RUNS:
                return None  # too many readings to be sure they agree: refuse rather than guess
            for _, tags in runs:
                typed, heard = _values(ph.command, words, tags)
                found.setdefault(_key(ph.command, typed), Match(ph.command, FrozenMap(typed), joined, FrozenMap(heard)))
        return self._resolve(found)

    def complete(self, prefix_words: str, max_missing: int = 2) -> Match | None:
        """Resolve a truncated hypothesis ("set a timer for five", the last word lost) to the one
        intent it can grow into by adding at most `max_missing` words. None when there is no such
        intent or more than one ("set a timer for twenty" may be twenty or twenty one)."""
        words = normalize_words(prefix_words)
        if not words:
            return None
        found: dict[tuple, Match] = {}
        for ph in self._phrases:
            runs = _runs(ph.nfa, words, full=False)
            if len(runs) >= _MAX_RUNS:
                return None
            for state, tags in runs:
                for more, more_tags in self._tails(ph.nfa, state, max_missing):
                    all_words = [*words, *more]
                    typed, heard = _values(ph.command, all_words, [*tags, *more_tags])
                    key = _key(ph.command, typed)
                    if key not in found:
                        found[key] = Match(ph.command, FrozenMap(typed), " ".join(all_words), FrozenMap(heard))
                        if len(found) > 1:
                            return self._resolve(found)
        return self._resolve(found)

    def is_final(self, text: str) -> bool:
        """True when `text` is a whole command that no longer phrase continues ("lights on": yes;
        "stop": no, it may become "stop the timer"; "set a timer for twenty minutes": yes). The
        recognizer may then end the utterance early, without waiting out the full end silence."""
        words = normalize_words(text)
        if not words or self.match(text) is None:
            return False
        for ph in self._phrases:
            runs = _runs(ph.nfa, words, full=False)
            if len(runs) >= _MAX_RUNS:
                return False
            if any(ph.nfa.edges[state] for state, _ in runs):
                return False
        return True

    @staticmethod
    def _tails(nfa: _Nfa, state: int, budget: int) -> Iterator[tuple[list[str], list]]:
        if state in nfa.finals:
            yield [], []
        if budget <= 0:
            return
        for w, lst in nfa.edges[state].items():
            for tag, nxt in lst:
                for more, more_tags in Grammar._tails(nfa, nxt, budget - 1):
                    yield [w, *more], [tag, *more_tags]

    # -- enumeration ----------------------------------------------------------------------------

    def expand(self, limit: int | None = 100_000) -> Iterator[tuple[str, str, dict]]:
        """Every (text, command name, typed slots) the grammar can produce, up to `limit` of them
        (durations alone allow millions of texts)."""
        count = 0
        for ph in self._phrases:
            seen: set[str] = set()
            stack: list[tuple[int, tuple, tuple]] = [(ph.nfa.start, (), ())]
            while stack:
                s, ws, tags = stack.pop()
                if s in ph.nfa.finals:
                    text = " ".join(ws)
                    if text not in seen:
                        seen.add(text)
                        yield text, ph.command.name, _values(ph.command, ws, tags)[0]
                        count += 1
                        if limit is not None and count >= limit:
                            return
                # Reversed so that the stack pops the edges in the order they were written.
                for w, lst in reversed(list(ph.nfa.edges[s].items())):
                    for tag, nxt in reversed(lst):
                        stack.append((nxt, ws + (w,), tags + (tag,)))

    def size(self) -> int:
        """How many word sequences (paths) the grammar has; duplicates counted once per path."""
        total = 0
        for ph in self._phrases:
            memo: dict[int, int] = {}

            def paths(s: int, nfa: _Nfa = ph.nfa, memo: dict = memo) -> int:
                if s not in memo:
                    memo[s] = (s in nfa.finals) + sum(paths(n) for lst in nfa.edges[s].values() for _, n in lst)
                return memo[s]

            total += paths(ph.nfa.start)
        return total

    def sample(self, rng: random.Random) -> tuple[str, str, dict]:
        """One random (text, command name, typed slots): a random walk, each phrase equally likely."""
        ph = rng.choice(self._phrases)
        s, ws, tags = ph.nfa.start, [], []
        while True:
            out = [(w, t, n) for w, lst in ph.nfa.edges[s].items() for t, n in lst]
            if not out or (s in ph.nfa.finals and rng.randrange(len(out) + 1) == 0):
                break
            w, t, s = rng.choice(out)
            ws.append(w)
            tags.append(t)
        return " ".join(ws), ph.command.name, _values(ph.command, ws, tags)[0]

    def vocabulary(self) -> set[str]:
        """Every word the grammar can produce."""
        return {w for ph in self._phrases for e in ph.nfa.edges for w in e}

    # -- recognizer grammars --------------------------------------------------------------------

    def to_jsgf(self, name: str = "tallylight") -> str:
        """A JSGF grammar for pocketsphinx: one rule per command, one shared rule per slot type
        (a 1-99 slot is one rule of 99 alternatives however many phrases use it)."""
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise ValueError(f"JSGF grammar name must be letters, digits and _, not {name!r}")
        type_rules: dict[str, str] = {}

        def slot_rule(cmd: Command, slot: SlotType) -> str:
            if slot.kind == "int":
                rule = f"int_{slot.lo}_{slot.hi}"
                if rule not in type_rules:
                    type_rules[rule] = " | ".join(_int_forms(slot.lo, slot.hi))
            elif slot.kind == "duration":
                rule = "duration"
                if rule not in type_rules:
                    n = SlotType("n", "int", 1, numbers.DURATION_N_MAX)
                    type_rules[rule] = " | ".join(render(t, cmd, {"n": n}) for t in _duration_trees())
            else:
                rule = f"enum_{cmd.name}_{slot.name}"
                type_rules[rule] = " | ".join(slot.values)
            return f"<{rule}>"

        def render(n: Node | Seq, cmd: Command, scope: Mapping[str, SlotType]) -> str:
            if isinstance(n, Word):
                return n.text
            if isinstance(n, SlotRef):
                return slot_rule(cmd, scope[n.name])
            if isinstance(n, Seq):
                return " ".join(render(i, cmd, scope) for i in n.items)
            inner = " | ".join(render(o, cmd, scope) for o in n.options if o.items)
            return f"[ {inner} ]" if n.optional else f"( {inner} )"

        cmd_rules = []
        for cmd in self.commands:
            bodies = [render(ph.tree, cmd, cmd.slots) for ph in self._phrases if ph.command is cmd]
            cmd_rules.append(f"<cmd_{cmd.name}> = " + " | ".join(f"( {b} )" for b in bodies) + ";")
        lines = [
            "#JSGF V1.0;",
            f"grammar {name};",
            f"public <{name}> = " + " | ".join(f"<cmd_{c.name}>" for c in self.commands) + ";",
            *cmd_rules,
            *(f"<{r}> = {body};" for r, body in type_rules.items()),
        ]
        return "\n".join(lines) + "\n"

    def vosk_phrases(self, balance: bool = True, wake_prefix: str = "") -> list[str]:
        """Phrases for vosk's grammar mode, plus "[unk]" so out-of-command speech is rejected.

        vosk turns the list into a bigram language model (it does not keep the list as a strict
        grammar), so what matters is that every word pair the grammar allows occurs, and that the
        commands weigh about the same. Each command gives a set of its phrases that covers all its
        word pairs (a full expansion of a 1-99 slot would be 99 copies for one pair each); with
        `balance`, each command's lines (and "[unk]") are repeated to the count of the largest, so a
        command with a number slot does not drown "lights on" at the start of a sentence.

        `wake_prefix` ("okay nabu") adds each line once more after the wake phrase. The capture's
        pre-roll holds the wake phrase, and with no words for it vosk heard it as command words
        ("up eight set a timer for one minute"): 38.7% of the tuned clips right in
        scripts/measure-intents with an English model, 89.5% with the prefix.
        """
        per_command: dict[str, list[str]] = {}
        for ph in self._phrases:
            lines = per_command.setdefault(ph.command.name, [])
            covered = {pair for line in lines for pair in _pairs(line.split())}
            for words in _covering_paths(ph.nfa, covered):
                text = " ".join(words)
                if text not in lines:
                    lines.append(text)
        if wake_prefix:
            for name, lines in per_command.items():
                per_command[name] = lines + [f"{' '.join(wake_prefix.split())} {line}" for line in lines]
        target = max((len(v) for v in per_command.values()), default=1)
        out: list[str] = []
        for lines in per_command.values():
            if balance:
                out += [lines[i % len(lines)] for i in range(max(target, len(lines)))]
            else:
                out += lines
        out += ["[unk]"] * (target if balance else 1)
        return out

    # -- config checks --------------------------------------------------------------------------

    def find_conflict(self) -> "Conflict | None":
        """The first way two commands can be heard the same, or one text gives two different slot
        values in one command; None when every text has one meaning."""
        for a, b in itertools.combinations(self._phrases, 2):
            if a.command.name == b.command.name:
                continue
            words = _intersect(a.nfa, b.nfa)
            if words is not None:
                return Conflict(a.command.name, a.index, b.command.name, b.index, " ".join(words))
        for a, b in itertools.combinations_with_replacement(self._phrases, 2):
            if a.command.name != b.command.name or not a.command.slots:
                continue
            for words in _diverging(a.nfa, b.nfa):
                if self._meanings(a.command, words) > 1:
                    return Conflict(a.command.name, a.index, b.command.name, b.index, " ".join(words))
        return None

    def _meanings(self, command: Command, words: Sequence[str]) -> int:
        keys = set()
        for ph in self._phrases:
            if ph.command is command:
                for _, tags in _runs(ph.nfa, words):
                    keys.add(_key(command, _values(command, words, tags)[0]))
        return len(keys)


@dataclass(frozen=True)
class Conflict:
    """Two phrases (maybe the same one) that can be heard as the same `text` with two meanings."""

    command_a: str
    phrase_a: int
    command_b: str
    phrase_b: int
    text: str


def _pairs(words: Sequence[str]) -> set[tuple[str, str]]:
    seq = ["<s>", *words, "</s>"]
    return set(zip(seq, seq[1:]))


def _covering_paths(nfa: _Nfa, covered: set[tuple[str, str]]) -> Iterator[list[str]]:
    """Paths through the automaton that between them hold every word pair it allows."""
    n = len(nfa.edges)
    prefix: list[list[str] | None] = [None] * n
    prefix[nfa.start] = []
    queue = deque([nfa.start])
    incoming: list[list[tuple[int, str]]] = [[] for _ in range(n)]
    while queue:
        s = queue.popleft()
        for w, lst in nfa.edges[s].items():
            for _, t in lst:
                incoming[t].append((s, w))
                if prefix[t] is None:
                    prefix[t] = [*prefix[s], w]  # type: ignore[misc]
                    queue.append(t)
    suffix: list[list[str] | None] = [None] * n

    def tail(s: int) -> list[str]:
        # Shortest way to finish from s (acyclic, so the recursion ends).
        if suffix[s] is None:
            best: list[str] | None = [] if s in nfa.finals else None
            if best is None:
                for w, lst in nfa.edges[s].items():
                    for _, t in lst:
                        cand = [w, *tail(t)]
                        if best is None or len(cand) < len(best):
                            best = cand
            suffix[s] = best or []
        return suffix[s]  # type: ignore[return-value]

    def emit(words: list[str]) -> Iterator[list[str]]:
        new = _pairs(words) - covered
        if new:
            covered.update(new)
            yield words

    for s in range(n):
        before = [("<s>", None)] if s == nfa.start else [(w, p) for p, w in incoming[s]]
        after: list[tuple[str, int | None]] = [(w, t) for w, lst in nfa.edges[s].items() for _, t in lst]
        if s in nfa.finals:
            after.append(("</s>", None))
        for w1, p in before:
            for w2, t in after:
                if (w1, w2) in covered:
                    continue
                head = [] if p is None else [*prefix[p], w1]  # type: ignore[misc]
                rest = [] if t is None else [w2, *tail(t)]
                yield from emit(head + rest)


def _intersect(a: _Nfa, b: _Nfa) -> list[str] | None:
    """A shortest word sequence both automata accept, or None."""
    start = (a.start, b.start)
    parent: dict[tuple[int, int], tuple[tuple[int, int], str] | None] = {start: None}
    queue = deque([start])
    while queue:
        p, q = cur = queue.popleft()
        if p in a.finals and q in b.finals:
            words: list[str] = []
            node = cur
            while parent[node] is not None:
                node, w = parent[node]  # type: ignore[misc]
                words.append(w)
            return words[::-1]
        for w, la in a.edges[p].items():
            lb = b.edges[q].get(w)
            if not lb:
                continue
            for _, pn in la:
                for _, qn in lb:
                    if (pn, qn) not in parent:
                        parent[(pn, qn)] = (cur, w)
                        queue.append((pn, qn))
    return None


def _diverging(a: _Nfa, b: _Nfa, limit: int = 10) -> Iterator[list[str]]:
    """Texts both automata accept along paths whose slot spans differ (up to `limit` of them)."""
    start = (a.start, b.start, False)
    parent: dict[tuple, tuple | None] = {start: None}
    queue = deque([start])
    found = 0
    while queue:
        cur = queue.popleft()
        p, q, diverged = cur
        if diverged and p in a.finals and q in b.finals:
            words: list[str] = []
            node = cur
            while parent[node] is not None:
                node, w = parent[node]  # type: ignore[misc]
                words.append(w)
            yield words[::-1]
            found += 1
            if found >= limit:
                return
        for w, la in a.edges[p].items():
            lb = b.edges[q].get(w)
            if not lb:
                continue
            for ta, pn in la:
                for tb, qn in lb:
                    nxt = (pn, qn, diverged or ta != tb)
                    if nxt not in parent:
                        parent[nxt] = (cur, w)
                        queue.append(nxt)
