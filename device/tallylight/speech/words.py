"""What a word is, for the phrases in the config and for the text the recognizers hand back."""

from __future__ import annotations

import re
import unicodedata

_ALT_PRON = re.compile(r"\(\d+\)$")  # pocketsphinx marks alternate pronunciations: "the(2)"


def is_word_char(c: str) -> bool:
    # Lowercase letters of any script (vosk has models for many languages), combining marks that
    # belong to them, and the apostrophe of "what's".
    if c == "'":
        return True
    if c.isalpha():
        return not c.isupper()
    return unicodedata.category(c).startswith("M")


def normalize_words(text: str) -> list[str]:
    """Recognizer output -> the grammar's words: lowercase, no hyphens, no punctuation, no
    pocketsphinx markers ("the(2)", "<sil>"). "[unk]" is kept, so it never matches."""
    words = []
    for w in text.lower().replace("-", " ").split():
        if w.startswith("<") and w.endswith(">"):
            continue
        w = _ALT_PRON.sub("", w).strip(".,!?;:\"")
        if w:
            words.append(w)
    return words
