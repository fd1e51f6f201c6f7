"""What a voice command is once parsed: `Command`, the `SlotType` of each {slot}, and the templates
(replies, argv elements) that slot values are filled into. Plain frozen data with no parsing, so the
config parser (`commands`) and the grammar built from the commands both stand on it.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


class FrozenMap(Mapping):
    """A read-only, hashable dict, so that frozen dataclasses holding mappings stay frozen."""

    __slots__ = ("_d", "_h")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._d = dict(*args, **kwargs)
        self._h: int | None = None

    def __getitem__(self, key: Any) -> Any:
        return self._d[key]

    def __iter__(self) -> Iterator:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __hash__(self) -> int:
        if self._h is None:
            self._h = hash(frozenset(self._d.items()))
        return self._h

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._d) == dict(other)

    def __repr__(self) -> str:
        return f"FrozenMap({self._d!r})"


# Slots a timer takes its length from: an int slot with one of these names (its unit in seconds), or
# any duration slot. The config check and the timer action both read it.
TIMER_UNIT_SLOTS = {"hours": 3600, "minutes": 60, "seconds": 1}


@dataclass(frozen=True)
class SlotType:
    """What a {slot} can be: kind "int" (lo..hi spoken as words), "enum" (`values` maps the words
    heard to the value given to the action) or "duration" (spoken length, as whole seconds)."""

    name: str
    kind: str
    lo: int | None = None
    hi: int | None = None
    values: Mapping[str, str] = field(default_factory=FrozenMap)

    def describe(self) -> str:
        if self.kind == "int":
            return f"{self.lo}-{self.hi}"
        if self.kind == "duration":
            return "duration"
        return "one of " + ", ".join(repr(v) for v in self.values)


@dataclass(frozen=True)
class Command:
    """One voice command: how it can be said, what it does and what the speaker says back."""

    name: str
    phrases: tuple[str, ...]
    slots: Mapping[str, SlotType]
    action: str
    options: Mapping[str, Any]
    reply: str | None = None


def template_fields(template: str) -> list[str]:
    """The {names} in a template; ValueError for anything but plain {name} and {{ }} escapes."""
    out = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"{e} (write {{{{ and }}}} for literal braces)") from None
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if not re.match(r"^[a-z_][a-z0-9_]*$", name) or spec or conv:
            written = f"{name}{'!' + conv if conv else ''}{':' + spec if spec else ''}"
            raise ValueError(f"{{{written}}} is not a plain {{name}}")
        out.append(name)
    return out


def fill_template(template: str, values: Mapping[str, str]) -> str:
    """Replace each {name} by values[name] (the values themselves are not re-read as templates)."""
    parts = []
    for literal, name, _, _ in string.Formatter().parse(template):
        parts.append(literal)
        if name is not None:
            parts.append(str(values[name]))
    return "".join(parts)
