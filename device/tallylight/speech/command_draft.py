"""What the checks of one command are handed: `CommandDraft`, the command part-way through parsing,
and `Option`, one option of an action. The action registry (tallylight.actions) describes each
action's options and its own config check with these, and the config parser (commands) runs them,
so neither needs the other's insides.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tallylight.errors import ConfigError
from tallylight.speech.command_types import FrozenMap, SlotType, template_fields
from tallylight.speech.phrase import Seq, required_slots


@dataclass(frozen=True)
class Option:
    """One option key of an action (`pin`, `argv`, ...): its TOML types, whether it must be given,
    a check that returns what was expected (None: fine), and the value filled in when it is left out."""

    types: tuple[type, ...]
    required: bool = False
    check: Callable[[Any], str | None] | None = None
    default: Any = None  # filled in when not given (None: left out, the action uses [actions])


@dataclass(frozen=True)
class CommandDraft:
    """A command part-way through its checks: where it is written, and its phrases and slots once
    read, which the reply, argv and action checks after them need."""

    where: str
    base: str  # "commands.NAME", the start of every key in the messages
    trees: tuple[Seq, ...] = ()
    slots: Mapping[str, SlotType] = field(default_factory=FrozenMap)

    def fail(self, key: str, detail: str) -> ConfigError:
        """The one-line error for `key` of this command (".pin", ".phrases[0]")."""
        return ConfigError(f"{self.where}: {self.base}{key}: {detail}")

    def always(self) -> set[str]:
        """The slots heard in every phrase, which a template may always use."""
        return set.intersection(*(required_slots(t) for t in self.trees))

    def fail_at(self, full_key: str, detail: str) -> ConfigError:
        """The one-line error for a key given whole ("commands.lamp.argv[1]")."""
        return ConfigError(f"{self.where}: {full_key}: {detail}")

    def check_template(self, key: str, template: Any, extra: frozenset[str]) -> None:
        """A reply or argv element may use the slots heard in every phrase and the action's `extra` values."""
        if not isinstance(template, str):
            raise self.fail_at(key, f"must be a string, not {template!r}")
        try:
            names = template_fields(template)
        except ValueError as e:
            raise self.fail_at(key, f"bad template {template!r}: {e}") from None
        always = self.always()
        for n in names:
            if n in extra or n in always:
                continue
            if n in self.slots:
                i = next(i for i, t in enumerate(self.trees) if n not in required_slots(t))
                raise self.fail_at(
                    key,
                    f"uses {{{n}}}, but phrases[{i}] can be said without it "
                    "(make it required there, or leave it out here)",
                )
            known = ", ".join("{" + k + "}" for k in sorted(always | extra)) or "none"
            raise self.fail_at(key, f"uses {{{n}}}, which this command does not have (it has: {known})")
