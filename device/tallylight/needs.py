"""Whether the libraries an engine needs can be used here, and the one line that says how to get them.

Shared by the wake engine and recognizer registries (`wake_engines`, `speech.recognizers`): both
`tallylight check` and the start of `run`/`listen` ask it, so the two say the same thing.
"""

from __future__ import annotations

import importlib


def unavailable(what: str, needs: tuple[str, ...], install: str) -> str | None:
    """None when every module in `needs` imports; else one line naming the module, why, and `install`.

    The modules are really imported (not only looked up): a library whose wheel is there but whose
    shared library cannot load (vosk without libatomic1) shows here, not at the first capture.
    """
    for module in needs:
        try:
            importlib.import_module(module)
        except Exception as e:  # ImportError, or an OSError from a shared library that cannot load
            return f"{what} needs the {module} module, which cannot be used here ({type(e).__name__}: {e}): {install}"
    return None
