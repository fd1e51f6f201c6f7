"""`tallylight listen` over one long recording of many commands: listen_file with the shipped config
and make_understander, as the CLI runs it, in a fresh process (table 9). VmRSS is read each time a
capture has been handed over (the consumer's finish() returned). Prints one JSON line.

    python -m bench.children.listen_memory CONFIG WAV STATE_DIR ENGINE VOSK_MODEL    (ENGINE "none": no recognizer)
"""

import dataclasses
import gc
import io
import json
import sys
import time
import types
from pathlib import Path

from tallylight import config
from tallylight.hardware.indicator import TerminalIndicator
from tallylight.ledger import Ledger
from tallylight.listen import listen_file
from tallylight.speech.understand import make_understander


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def sizes(roots, skip=frozenset()):
    """sys.getsizeof over everything reachable from roots but `skip` (ids), not descending into
    classes, modules or functions: (bytes, the ids seen)."""
    seen, total, todo = set(skip), 0, list(roots)
    while todo:
        o = todo.pop()
        if id(o) in seen or isinstance(o, (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)):
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        todo.extend(gc.get_referents(o))
    return total, seen


class Nobody:
    """engine "none": takes each capture's audio and hears nothing (the pipeline without a recognizer)."""

    name = "nobody"

    def process(self, block):
        return [], False

    def finish(self, t):
        return []

    def reset(self):
        pass

    def close(self):
        pass


class Sampled:
    """The consumer, untouched; VmRSS read when its finish() returns."""

    def __init__(self, inner):
        self.inner, self.name, self.rss, self.kept = inner, inner.name, [], None

    def process(self, block):
        return self.inner.process(block)

    def finish(self, t):
        events = self.inner.finish(t)
        if self.kept is None:  # listen_file's in-memory ledger and stand-in light, to be sized at the end
            found = gc.get_objects()
            self.kept = ([o for o in found if type(o) is Ledger and o.path is None],
                         [o for o in found if type(o) is TerminalIndicator and isinstance(o.out, io.StringIO)])
            del found
        self.rss.append(rss_kib())
        return events

    def reset(self):
        self.inner.reset()

    def close(self):
        self.inner.close()


def main(config_path: str, wav: str, state_dir: str, engine: str, vosk_model: str) -> None:
    cfg = config.load(config_path)
    cfg = dataclasses.replace(cfg, daemon=dataclasses.replace(cfg.daemon, state_dir=state_dir))
    if engine != "none":
        cfg = dataclasses.replace(cfg, recognizer=dataclasses.replace(cfg.recognizer, engine=engine, vosk_model=vosk_model))
    consumer = Sampled(Nobody() if engine == "none" else make_understander(cfg))
    loaded = rss_kib()
    c0 = time.process_time()
    events = listen_file(cfg, Path(wav), consumer)
    cpu = time.process_time() - c0
    # What listen keeps of each capture: the events it returns, its in-memory ledger's entries (not
    # counting what exists for the whole run: the consumer's grammar and models, the config) and the
    # text its stand-in light wrote (ASCII: a byte a character).
    ledgers, lights = consumer.kept or ([], [])
    _, shared = sizes([consumer.inner, cfg])
    records, _ = sizes([events] + [ledger.entries for ledger in ledgers], skip=shared)
    records += sum(len(light.out.getvalue()) for light in lights)
    print(json.dumps({"loaded": loaded, "rss": consumer.rss, "cpu_s": cpu, "records": records,
                      "ledgers": len(ledgers), "lights": len(lights),
                      "captures": sum(e.kind == "capture" for e in events),
                      "wakes": sum(e.kind == "wake" for e in events),
                      "intents": sum(e.kind == "intent" for e in events)}))


if __name__ == "__main__":
    main(*sys.argv[1:6])
