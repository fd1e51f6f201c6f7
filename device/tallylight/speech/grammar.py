"""One definition of the voice commands drives both the recognizer's grammar and the intent matcher.

From the phrase trees (`phrase`) of all commands, compiled to word automata (`automaton`), `Grammar`
gives:
- JSGF text for pocketsphinx (`to_jsgf`), with each slot type as one shared rule;
- a word list for vosk's grammar mode (`vosk_phrases`);
- exact matching of recognized text (`match`), completing truncated hypotheses (`complete`), and
  enumerating (`expand`, `sample`).
Matching never guesses: a text that does not parse, or parses to two different intents, gives None.
`conflicts` checks that two commands can never be heard the same way.
"""

from __future__ import annotations

import itertools
import logging
import random
import re
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from tallylight.speech import numbers
from tallylight.speech.automaton import MAX_RUNS, Nfa, compile_phrase, duration_trees, int_forms, word_runs
from tallylight.speech.command_types import Command, FrozenMap, SlotType, fill_template
from tallylight.speech.phrase import Node, Seq, SlotRef, Word, parse_phrase
from tallylight.speech.words import normalize_words

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class CompiledPhrase:
    """One phrase of a command (`index` in its `phrases`), as a tree and as a word automaton."""

    command: Command
    index: int
    tree: Seq
    nfa: Nfa


def slot_values(command: Command, words: Sequence[str], tags: Sequence[str | None]) -> tuple[dict, dict]:
    """The typed values (5, "lounge", 5400) and the words heard for each slot along one run."""
    spans: dict[str, list[str]] = {}
    for w, t in zip(words, tags, strict=True):
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


def intent_key(command: Command, typed: Mapping) -> tuple:
    """Two runs with the same key mean the same thing: the same command and slot values."""
    return (command.name, tuple(sorted(typed.items())))


class Grammar:
    """The commands' grammar: recognizer grammars out, recognized text in, intents out."""

    def __init__(self, commands: Sequence[Command]) -> None:
        self.commands: tuple[Command, ...] = tuple(commands)
        compiled = []
        for cmd in self.commands:
            for i, text in enumerate(cmd.phrases):
                tree = parse_phrase(text)
                compiled.append(CompiledPhrase(cmd, i, tree, compile_phrase(tree, cmd.slots)))
        self.phrases: tuple[CompiledPhrase, ...] = tuple(compiled)

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
        for ph in self.phrases:
            runs = word_runs(ph.nfa, words)
            if len(runs) >= MAX_RUNS:
                return None  # too many readings to be sure they agree: refuse rather than guess
            for _, tags in runs:
                typed, heard = slot_values(ph.command, words, tags)
                match = Match(ph.command, FrozenMap(typed), joined, FrozenMap(heard))
                found.setdefault(intent_key(ph.command, typed), match)
        return self._resolve(found)

    def complete(self, prefix_words: str, max_missing: int = 2) -> Match | None:
        """Resolve a truncated hypothesis ("set a timer for five", the last word lost) to the one
        intent it can grow into by adding at most `max_missing` words. None when there is no such
        intent or more than one ("set a timer for twenty" may be twenty or twenty one)."""
        words = normalize_words(prefix_words)
        if not words:
            return None
        found: dict[tuple, Match] = {}
        for ph in self.phrases:
            runs = word_runs(ph.nfa, words, full=False)
            if len(runs) >= MAX_RUNS:
                return None
            for state, tags in runs:
                for more, more_tags in self._tails(ph.nfa, state, max_missing):
                    all_words = [*words, *more]
                    typed, heard = slot_values(ph.command, all_words, [*tags, *more_tags])
                    key = intent_key(ph.command, typed)
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
        for ph in self.phrases:
            runs = word_runs(ph.nfa, words, full=False)
            if len(runs) >= MAX_RUNS:
                return False
            if any(ph.nfa.edges[state] for state, _ in runs):
                return False
        return True

    @staticmethod
    def _tails(nfa: Nfa, state: int, budget: int) -> Iterator[tuple[list[str], list]]:
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
        for ph in self.phrases:
            seen: set[str] = set()
            stack: list[tuple[int, tuple, tuple]] = [(ph.nfa.start, (), ())]
            while stack:
                s, ws, tags = stack.pop()
                if s in ph.nfa.finals:
                    text = " ".join(ws)
                    if text not in seen:
                        seen.add(text)
                        yield text, ph.command.name, slot_values(ph.command, ws, tags)[0]
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
        for ph in self.phrases:
            memo: dict[int, int] = {}

            def paths(s: int, nfa: Nfa = ph.nfa, memo: dict = memo) -> int:
                if s not in memo:
                    memo[s] = (s in nfa.finals) + sum(paths(n) for lst in nfa.edges[s].values() for _, n in lst)
                return memo[s]

            total += paths(ph.nfa.start)
        return total

    def sample(self, rng: random.Random) -> tuple[str, str, dict]:
        """One random (text, command name, typed slots): a random walk, each phrase equally likely."""
        ph = rng.choice(self.phrases)
        s, ws, tags = ph.nfa.start, [], []
        while True:
            out = [(w, t, n) for w, lst in ph.nfa.edges[s].items() for t, n in lst]
            if not out or (s in ph.nfa.finals and rng.randrange(len(out) + 1) == 0):
                break
            w, t, s = rng.choice(out)
            ws.append(w)
            tags.append(t)
        return " ".join(ws), ph.command.name, slot_values(ph.command, ws, tags)[0]

    def vocabulary(self) -> set[str]:
        """Every word the grammar can produce."""
        return {w for ph in self.phrases for e in ph.nfa.edges for w in e}

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
                    type_rules[rule] = " | ".join(int_forms(slot.lo, slot.hi))
            elif slot.kind == "duration":
                rule = "duration"
                if rule not in type_rules:
                    n = SlotType("n", "int", 1, numbers.DURATION_N_MAX)
                    type_rules[rule] = " | ".join(render(t, cmd, {"n": n}) for t in duration_trees())
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
            bodies = [render(ph.tree, cmd, cmd.slots) for ph in self.phrases if ph.command is cmd]
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
        for ph in self.phrases:
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


def _pairs(words: Sequence[str]) -> set[tuple[str, str]]:
    seq = ["<s>", *words, "</s>"]
    return set(itertools.pairwise(seq))


def _covering_paths(nfa: Nfa, covered: set[tuple[str, str]]) -> Iterator[list[str]]:
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
