"""Word automata of the command phrases: each phrase tree compiled with its slot types to an
epsilon-free acyclic NFA whose edges carry the slot each word belongs to, and the walk that reads a
word sequence through one. The grammar (matching, recognizer grammars) and the conflict checks
both work on these automata.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from tallylight.speech import numbers
from tallylight.speech.command_types import SlotType
from tallylight.speech.phrase import Node, Seq, SlotRef, Word, parse_syntax


@dataclass
class Nfa:
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

    def word_set(self, start: int, end: int, dawg: _Dawg, tag: str | None) -> None:
        """Any one of a set of word sequences, from a minimal automaton of them (`_dawg`)."""
        nodes, finals = dawg
        ids = [self.state() for _ in nodes]
        self.eps[start].append(ids[0])
        for i, out in enumerate(nodes):
            for w, j in out:
                self.words[ids[i]].append((w, tag, ids[j]))
            if finals[i]:
                self.eps[ids[i]].append(end)

    def finish(self, start: int, final: int) -> Nfa:
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
        return Nfa(0, frozenset(finals), edges)


_DURATION_TREES: list[Seq] | None = None


def duration_trees() -> list[Seq]:
    global _DURATION_TREES
    if _DURATION_TREES is None:
        # Not parse_phrase: here {n} is a number type used several times, not a user's slot.
        _DURATION_TREES = [parse_syntax(p) for p in numbers.DURATION_PHRASES]
    return _DURATION_TREES


@lru_cache(maxsize=64)
def int_forms(lo: int, hi: int) -> tuple[str, ...]:
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


def compile_phrase(tree: Seq, slots: Mapping[str, SlotType]) -> Nfa:
    b = _Builder()

    def slot_fragment(start: int, end: int, slot: SlotType, tag: str) -> None:
        if slot.kind == "int":
            b.word_set(start, end, _dawg(int_forms(slot.lo, slot.hi)), tag)
        elif slot.kind == "enum":
            b.word_set(start, end, _dawg(tuple(slot.values)), tag)
        else:  # duration: its own phrases, every word tagged with the outer slot
            n = SlotType("n", "int", 1, numbers.DURATION_N_MAX)
            for t in duration_trees():
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


MAX_RUNS = 64  # parses of one text per phrase; more means a pathological grammar, not a command


def word_runs(nfa: Nfa, words: Sequence[str], state: int | None = None, pos: int = 0, full: bool = True):
    """Every path reading `words` from `state`: (end state, slot tags). With full=True only paths
    ending in a final state."""
    out: list[tuple[int, tuple]] = []
    dead: set[tuple[int, int]] = set()

    def walk(s: int, i: int, tags: tuple) -> bool:
        if len(out) >= MAX_RUNS or (s, i) in dead:
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
