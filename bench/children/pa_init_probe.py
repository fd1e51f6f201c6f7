"""RSS of a process holding the wake engine, before and after PortAudio's initialisation
(`pyaudio.PyAudio()`, which MicSource.open() calls), and which ALSA plugins and libraries it loaded.
Table 4's note on PortAudio. Prints one JSON line.

    python -m bench.children.pa_init_probe
"""

import json
import os
import re
import subprocess

import pyaudio

from tallylight.config import WakeConfig
from tallylight.ears import make_wake_detector


def rss() -> float:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024


def resident_by_file() -> dict[str, float]:
    out, name = {}, ""
    with open("/proc/self/smaps") as f:
        for line in f:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):
                parts = line.split(None, 5)
                name = parts[5].strip() if len(parts) > 5 else ""
            elif first == "Rss:" and name.startswith("/"):
                out[name] = out.get(name, 0.0) + int(line.split()[1]) / 1024
    return out


def links(path: str) -> set[str]:
    """The file and every library it loads, as ldd resolves them."""
    text = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
    found = {os.path.realpath(line.split("=>")[1].split("(")[0].strip()) for line in text.splitlines()
             if "=>" in line and "/" in line.split("=>")[1]}
    return found | {os.path.realpath(path)}


def main() -> None:
    detector = make_wake_detector(WakeConfig())  # held: the process the daemon is before it opens the mic
    before, files_before = rss(), resident_by_file()
    pa = pyaudio.PyAudio()
    after, files_after = rss(), resident_by_file()
    new = {f: mib for f, mib in files_after.items() if f not in files_before}
    plugins = sorted({f for f in new if "/alsa-lib/" in f})
    # Each plugin's share: the resident MiB of the files it brought in that nothing loaded before
    # (the libraries it links to), the largest plugin first, each file counted once.
    try:
        closures = {p: {f for f in links(p) if f in new} for p in plugins}
    except OSError:
        closures = {}
    shares, counted = {}, set()
    for p in sorted(closures, key=lambda p: -sum(new[f] for f in closures[p])):
        own = closures[p] - counted
        counted |= own
        shares[p.rsplit("/", 1)[-1]] = [sum(new[f] for f in own), len(own)]
    with open("/proc/self/maps") as f:
        libs = len({line.split()[-1] for line in f if ".so" in line})
    print(json.dumps({"before": before, "after": after, "plugins": [p.rsplit("/", 1)[-1] for p in plugins],
                      "shares": shares, "libs": libs}))
    pa.terminate()
    detector.close()


if __name__ == "__main__":
    main()
