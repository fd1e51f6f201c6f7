"""Config checks on the commands' grammar: no text may be heard as two commands, or as one command
with two different slot values. Both are searched on the phrases' word automata, never by
enumerating texts (a duration slot alone allows millions).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from tallylight.speech.automaton import Nfa, word_runs
from tallylight.speech.command_types import Command
from tallylight.speech.grammar import Grammar, intent_key, slot_values


@dataclass(frozen=True)
class Conflict:
    """Two phrases (maybe the same one) that can be heard as the same `text` with two meanings."""

    command_a: str
    phrase_a: int
    command_b: str
    phrase_b: int
    text: str


def find_conflict(grammar: Grammar) -> Conflict | None:
    """The first way two commands can be heard the same, or one text gives two different slot
    values in one command; None when every text has one meaning."""
    for a, b in itertools.combinations(grammar.phrases, 2):
        if a.command.name == b.command.name:
            continue
        words = _intersect(a.nfa, b.nfa)
        if words is not None:
            return Conflict(a.command.name, a.index, b.command.name, b.index, " ".join(words))
    for a, b in itertools.combinations_with_replacement(grammar.phrases, 2):
        if a.command.name != b.command.name or not a.command.slots:
            continue
        for words in _diverging(a.nfa, b.nfa):
            if _meanings(grammar, a.command, words) > 1:
                return Conflict(a.command.name, a.index, b.command.name, b.index, " ".join(words))
    return None


def _meanings(grammar: Grammar, command: Command, words: Sequence[str]) -> int:
    keys = set()
    for ph in grammar.phrases:
        if ph.command is command:
            for _, tags in word_runs(ph.nfa, words):
                keys.add(intent_key(command, slot_values(command, words, tags)[0]))
    return len(keys)


def _words_to(node: tuple, parent: dict[tuple, tuple | None]) -> list[str]:
    """The words along the breadth-first search's path from the start to `node`."""
    words: list[str] = []
    while parent[node] is not None:
        node, w = parent[node]  # type: ignore[misc]
        words.append(w)
    return words[::-1]


def _intersect(a: Nfa, b: Nfa) -> list[str] | None:
    """A shortest word sequence both automata accept, or None."""
    start = (a.start, b.start)
    parent: dict[tuple, tuple | None] = {start: None}
    queue = deque([start])
    while queue:
        p, q = cur = queue.popleft()
        if p in a.finals and q in b.finals:
            return _words_to(cur, parent)
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


def _diverging(a: Nfa, b: Nfa, limit: int = 10) -> Iterator[list[str]]:
    """Texts both automata accept along paths whose slot spans differ (up to `limit` of them)."""
    start = (a.start, b.start, False)
    parent: dict[tuple, tuple | None] = {start: None}
    queue = deque([start])
    found = 0
    while queue:
        cur = queue.popleft()
        p, q, diverged = cur
        if diverged and p in a.finals and q in b.finals:
            yield _words_to(cur, parent)
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

