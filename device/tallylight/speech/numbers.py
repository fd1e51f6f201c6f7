"""English number words and spoken durations, both ways.

Recognizers hand us words ("twenty one"), never digits, so typed slots are parsed from words here:
integers 0..999 and durations ("an hour and a half", "one hour ten minutes") in seconds. The set of
forms accepted for each integer is fixed and small (`spoken_forms`) so that the recognizer's grammar
and the matcher agree exactly on what counts as a number.
"""

from __future__ import annotations

import re
from functools import lru_cache

MAX_INT = 999

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]

# Duration grammar, in the phrase syntax of tallylight.speech.phrase ({n} is a number 1..99). The
# automaton and grammar modules build the recognizer grammar from these; `parse_duration` reads the same
# language. tests/test_grammar.py checks that the two agree.
DURATION_N_MAX = 99
DURATION_PHRASES: tuple[str, ...] = (
    # "two hours", "an hour and ten minutes", "one hour ten minutes and five seconds"
    "({n} (hour|hours) | an hour) [[and] ({n} (minute|minutes) | a minute)] [[and] ({n} (second|seconds) | a second)]",
    # "ten minutes", "a minute and thirty seconds"
    "({n} (minute|minutes) | a minute) [[and] ({n} (second|seconds) | a second)]",
    "({n} (second|seconds) | a second)",
    # "an hour and a half", "two and a half minutes", "half an hour"
    "(an|one) hour and a half",
    "(a|one) minute and a half",
    "{n} and a half (hours|minutes)",
    "half an hour",
    "half a minute",
)
_UNIT_SECONDS = {"hour": 3600, "minute": 60, "second": 1}
_ARTICLE_UNIT = {"an": "hour", "a": "minute"}  # "an hour", "a minute" (and "a second", below)


def _normalize(text: str) -> list[str]:
    # "twenty-one" and "Twenty One" are the same number; extra spaces mean nothing.
    return text.lower().replace("-", " ").split()


def int_to_words(n: int) -> str:
    """The usual English words for 0..999: 21 -> "twenty one", 105 -> "one hundred and five"."""
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_INT:
        raise ValueError(f"int_to_words takes a whole number from 0 to {MAX_INT}, not {n!r}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (" " + _ONES[ones] if ones else "")
    hundreds, rest = divmod(n, 100)
    head = _ONES[hundreds] + " hundred"
    return head + (" and " + int_to_words(rest) if rest else "")


def spoken_forms(n: int) -> tuple[str, ...]:
    """Every way the grammar accepts `n` to be said, the usual one (`int_to_words`) first.

    Beyond 99: with or without "and" ("one hundred five"), and "a hundred" for "one hundred".
    """
    first = int_to_words(n)
    if n < 100:
        return (first,)
    hundreds, rest = divmod(n, 100)
    heads = [_ONES[hundreds] + " hundred"] + (["a hundred"] if hundreds == 1 else [])
    if not rest:
        return tuple(heads)
    tail = int_to_words(rest)
    forms = []
    for head in heads:
        forms += [f"{head} and {tail}", f"{head} {tail}"]
    return tuple(forms)


@lru_cache(maxsize=1)
def _form_table() -> dict[str, int]:
    return {form: n for n in range(MAX_INT + 1) for form in spoken_forms(n)}


def words_to_int(text: str) -> int:
    """Parse number words 0..999 ("ninety nine", "one hundred and five", "twenty-one").

    Raises ValueError for anything that is not one of `spoken_forms` of some number.
    """
    key = " ".join(_normalize(text))
    try:
        return _form_table()[key]
    except KeyError:
        raise ValueError(f"not a number from zero to nine hundred and ninety nine: {text!r}") from None


def _number_1_99(words: list[str], i: int) -> tuple[int, int] | None:
    """A number 1..99 starting at words[i]: (value, index after it), longest form first."""
    for length in (2, 1):
        chunk = words[i : i + length]
        if len(chunk) < length:
            continue
        try:
            value = words_to_int(" ".join(chunk))
        except ValueError:
            continue
        if 1 <= value <= DURATION_N_MAX:
            return value, i + length
    return None


def _unit(word: str, plural_ok: bool, singular_ok: bool) -> str | None:
    base = word[:-1] if word.endswith("s") else word
    if base not in _UNIT_SECONDS:
        return None
    if (word == base and not singular_ok) or (word != base and not plural_ok):
        return None
    return base


def parse_duration(text: str) -> int:
    """Seconds in a spoken duration: "five minutes" -> 300, "an hour and a half" -> 5400,
    "one hour ten minutes" -> 4200, "ninety seconds" -> 90, "half a minute" -> 30.

    Accepts exactly the language of `DURATION_PHRASES`; raises ValueError for anything else.
    """
    words = _normalize(text)
    bad = ValueError(f"not a duration like 'five minutes' or 'an hour and a half': {text!r}")
    if not words:
        raise bad
    # The "half" forms stand alone.
    if words in (["half", "an", "hour"], ["half", "a", "minute"]):
        return _UNIT_SECONDS[words[2]] // 2
    if len(words) == 5 and words[2:] == ["and", "a", "half"]:
        # "(an|one) hour and a half", "(a|one) minute and a half"
        if (words[0], words[1]) in (("an", "hour"), ("one", "hour"), ("a", "minute"), ("one", "minute")):
            return _UNIT_SECONDS[words[1]] * 3 // 2
        raise bad
    if len(words) >= 5 and words[-4:-1] == ["and", "a", "half"]:
        # "{n} and a half (hours|minutes)"
        got = _number_1_99(words, 0)
        unit = words[-1]
        if got is None or got[1] != len(words) - 4 or unit not in ("hours", "minutes"):
            raise bad
        return got[0] * _UNIT_SECONDS[unit[:-1]] + _UNIT_SECONDS[unit[:-1]] // 2
    # Parts in falling order of size, each at most once, with an optional "and" before the second
    # and third: "one hour [and] ten minutes [and] five seconds".
    total, i, last_size = 0, 0, None
    while i < len(words):
        if last_size is not None and words[i] == "and":
            i += 1
        if i >= len(words):
            raise bad
        if words[i] in ("a", "an") and i + 1 < len(words):
            unit = _unit(words[i + 1], plural_ok=False, singular_ok=True)
            # "an hour", "a minute", "a second": nothing else takes an article here.
            if unit is None or (words[i] == "an") != (unit == "hour"):
                raise bad
            value, i = 1, i + 2
        else:
            got = _number_1_99(words, i)
            if got is None or got[1] >= len(words):
                raise bad
            value, i = got
            unit = _unit(words[i], plural_ok=True, singular_ok=True)
            if unit is None:
                raise bad
            i += 1
        size = _UNIT_SECONDS[unit]
        if last_size is not None and size >= last_size:
            raise bad
        total += value * size
        last_size = size
    return total


MAX_DURATION_S = DURATION_N_MAX * 3600 + 59 * 60 + 59


def duration_to_words(seconds: int) -> str:
    """The usual words for a duration: 4200 -> "one hour and ten minutes", 90 -> "one minute and
    thirty seconds". `parse_duration` reads the result back."""
    if not isinstance(seconds, int) or isinstance(seconds, bool) or not 1 <= seconds <= MAX_DURATION_S:
        raise ValueError(f"duration_to_words takes whole seconds from 1 to {MAX_DURATION_S}, not {seconds!r}")
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{int_to_words(v)} {unit}{'' if v == 1 else 's'}"
        for v, unit in ((hours, "hour"), (minutes, "minute"), (secs, "second"))
        if v
    ]
    return parts[0] if len(parts) == 1 else " ".join(parts[:-1]) + " and " + parts[-1]


_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def parse_range(text: str) -> tuple[int, int] | None:
    """ "1-99" -> (1, 99); None when `text` is not of that shape (the caller says what is wrong)."""
    m = _RANGE.match(text)
    return (int(m.group(1)), int(m.group(2))) if m else None
