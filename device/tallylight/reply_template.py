"""Reply templates from the config: `render` fills their `{name}` fields.

Apart from reply.py (which makes sound, with numpy) so that what only checks or renders a reply's
words, the config check and the actions, loads no numpy: the uplink loads the config too, and numpy
is about 16 MiB of its memory (scripts/bench table 11).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

_FIELD = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


def render(template: str, fields: Mapping[str, Any]) -> str:
    """Fill `{name}` fields of a reply template from `fields`.

    Only plain `{name}` is understood (no `{a.b}`, `{a[0]}`, `{a!r}` or format specs: a template
    comes from a config file and must not reach into Python objects the way str.format can).
    An unknown or malformed field is left out with a warning; `{{` and `}}` give literal braces.
    """

    def fill(m: re.Match) -> str:
        token = m.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        name = m.group(1)
        if name.isidentifier() and name in fields:
            value = fields[name]
            return "" if value is None else str(value)
        log.warning("reply template %r: no field {%s}; left out", template, name)
        return ""

    text = _FIELD.sub(fill, template)
    # A left-out field leaves a double space or a space before punctuation.
    text = re.sub(r"[ \t]{2,}", " ", text)
    text = re.sub(r" +([.,!?;:])", r"\1", text)
    return text.strip()
