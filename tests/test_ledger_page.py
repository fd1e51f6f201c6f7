"""`tallylight ledger --html` (the owner's picture of the ledger) and `--follow` (its live feed).

The page is checked as a person sees it: Debian's Chromium (installed by scripts/test) renders it
headless with the network off, and the screenshot must show each capture and upload where the ledger
puts it on the day's timeline.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tallylight import ledger as L
from tallylight import ledger_page as P


class Clock:
    """The ledger's clock, set by the test: each entry is written at the time given."""

    def __init__(self):
        self.t = "2026-11-30T08:00:00.000+00:00"

    def __call__(self):
        return self.t


def at(clock, hhmmss: str, day: int = 30) -> None:
    clock.t = f"2026-11-{day:02d}T{hhmmss}.000+00:00"


def known_ledger(path: Path) -> Path:
    """Two days: a capture at 10:00:00-10:00:03 on the first, an upload at 12:00:00-12:00:02 on the
    second, muted in the afternoon, and a crash (no stop entry) before the second start."""
    clock = Clock()
    led = L.Ledger(path, clock=clock)
    at(clock, "08:00:00")
    led.append("start", version="test", pid=1)
    at(clock, "08:00:01")
    led.append("state", state="listening", **{"from": "muted"}, reason="mute control", previous_s=1.0)
    at(clock, "10:00:00")
    led.append("state", state="capturing", **{"from": "listening"}, reason="wake word", previous_s=7199.0)
    at(clock, "10:00:03")
    led.append("capture", duration_s=3.0, handed_to="pocketsphinx", end="end")
    led.append("state", state="listening", **{"from": "capturing"}, reason="capture handed over", previous_s=3.0)
    at(clock, "14:00:00")
    led.append("state", state="muted", **{"from": "listening"}, reason="mute control", previous_s=14397.0)
    at(clock, "18:00:00")
    led.append("stop", reason="shutdown", state_before="muted")
    # The next morning (1 December): started, listening, an upload at noon, then power lost.
    clock.t = "2026-12-01T07:00:00.000+00:00"
    led.append("start", version="test", pid=2)
    clock.t = "2026-12-01T07:00:01.000+00:00"
    led.append("state", state="listening", **{"from": "muted"}, reason="at start", previous_s=1.0)
    clock.t = "2026-12-01T12:00:00.000+00:00"
    led.append("state", state="uploading", **{"from": "listening"}, reason="upload to ha", previous_s=17999.0)
    clock.t = "2026-12-01T12:00:02.000+00:00"
    led.append("upload", destination="homeassistant.local", bytes=64000)
    led.append("state", state="listening", **{"from": "uploading"}, reason="upload finished", previous_s=2.0)
    clock.t = "2026-12-01T20:00:00.000+00:00"
    led.append("state", state="muted", **{"from": "listening"}, reason="mute control", previous_s=1.0)
    led.close()
    return path


NOW = datetime(2026, 12, 1, 22, 0, tzinfo=UTC)


@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    import time

    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_segments_follow_the_ledger(tmp_path, utc):
    segments, transfers = P.read(known_ledger(tmp_path / "ledger.jsonl"), now=NOW)
    simple = [(s.state, s.start.strftime("%d %H:%M:%S"), s.end.strftime("%d %H:%M:%S")) for s in segments]
    assert ("capturing", "30 10:00:00", "30 10:00:03") in simple
    assert ("uploading", "01 12:00:00", "01 12:00:02") in simple
    assert ("off", "30 18:00:00", "01 07:00:00") in simple, "between a stop and the next start the mic was closed"
    assert simple[-1] == ("muted", "01 20:00:00", "01 22:00:00"), "the last state lasts until the page is made"
    assert [(t.kind, t.duration_s, t.handed_to, t.nbytes) for t in transfers] == [
        ("capture", 3.0, "pocketsphinx", None), ("upload", 2.0, "homeassistant.local", 64000)]
    # How each ended, in words: the ledger's codes ("early", "end") meant nothing to an owner.
    assert [t.how for t in transfers] == ["speech ended", ""]


def test_the_text_ledger_says_how_a_capture_ended_in_words():
    line = L.describe({"time": "2026-12-04T19:07:55.558", "event": "capture", "duration_s": 3.5,
                       "handed_to": "pocketsphinx", "end": "early"})
    assert line.endswith("handed to pocketsphinx and wiped (command recognized)"), line
    assert L.describe({"event": "capture", "end": "some_new_code"}).endswith("(some_new_code)")


def test_a_crash_shows_the_mic_closed_from_the_last_entry_to_the_next_start(tmp_path, utc):
    clock = Clock()
    led = L.Ledger(tmp_path / "ledger.jsonl", clock=clock)
    led.append("start", version="test", pid=1)
    at(clock, "09:00:00")
    led.append("state", state="listening", reason="mute control")
    at(clock, "11:00:00")
    led.append("start", version="test", pid=2)  # no stop: it crashed some time after 09:00
    led.close()
    segments, _ = P.read(tmp_path / "ledger.jsonl", now=NOW)
    assert [(s.state, s.start.hour, s.end.hour) for s in segments] == [("listening", 9, 9), ("off", 9, 11)]


def test_the_page_loads_nothing_and_escapes_what_the_ledger_says(tmp_path, utc):
    path = known_ledger(tmp_path / "ledger.jsonl")
    page = P.render(path, now=NOW)
    assert not any(s in page for s in ("src=", "href=", "url(", "@import", "<script", "<link")), "the page loads something"
    # The only URL is the SVG namespace, which names a vocabulary and loads nothing.
    assert page.count("http:") == page.count('xmlns="http://www.w3.org/2000/svg"') and "https:" not in page
    assert "default-src 'none'" in page
    assert f"Verified: {len(path.read_text().splitlines())} entries" in page
    assert "1 capture(s)" in page and "1 upload(s), 64000 bytes" in page
    led = L.Ledger(path)
    led.append("capture", duration_s=1.0, handed_to='<script>alert("x")</script><img src=http://x>', end="x")
    led.close()
    page = P.render(path, now=NOW)
    assert "<script" not in page and "<img" not in page and "&lt;script&gt;" in page


def test_an_edited_ledger_says_so_at_the_top_of_the_page(tmp_path, utc):
    path = known_ledger(tmp_path / "ledger.jsonl")
    lines = path.read_text().splitlines()
    entry = json.loads(lines[3])
    entry["duration_s"] = 0.5  # someone makes the capture look shorter
    lines[3] = json.dumps(entry)
    path.write_text("\n".join(lines) + "\n")
    page = P.render(path, now=NOW)
    assert "FAILED verification" in page and "line 4: its contents do not match its hash" in page


def test_ledger_html_command_writes_the_page(tmp_path, utc):
    path = known_ledger(tmp_path / "ledger.jsonl")
    out = tmp_path / "ledger.html"
    r = _tallylight("ledger", "--file", str(path), "--html", str(out), cwd=tmp_path)
    assert r.returncode == 0 and out.exists(), r.stderr
    assert "When the microphone was live" in out.read_text()
    r = _tallylight("ledger", "--file", str(path), "--html", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 1 and "is a folder" in r.stderr and "Traceback" not in r.stderr


def _tallylight(*args, cwd):
    conf = Path(cwd) / "t.toml"
    conf.write_text(f'[daemon]\nstate_dir = "{cwd}"\n')
    return subprocess.run([sys.executable, "-m", "tallylight", *args, "--config", str(conf)], capture_output=True,
                          text=True, timeout=120, cwd=cwd, env=dict(os.environ, TZ="UTC"))


# -- the page as a browser draws it ----------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(page: Path, png: Path, tmp: Path) -> None:
    # The flags keep Chromium off the network entirely (this machine has none, and the page must
    # need none): no background fetches, no component updates, no sync.
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions", "--hide-scrollbars", "--force-device-scale-factor=1",
            f"--user-data-dir={tmp / 'chromium-profile'}", "--window-size=1100,1000",
            f"--screenshot={png}", page.as_uri()]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert png.exists(), f"chromium made no screenshot: {r.stderr[-2000:]}"


def _runs(row, colour) -> list[tuple[int, int]]:
    """[start, end) x ranges in one pixel row where the colour is exactly `colour`."""
    runs, start = [], None
    for x, px in enumerate(row):
        if tuple(px[:3]) == colour and start is None:
            start = x
        elif tuple(px[:3]) != colour and start is not None:
            runs.append((start, x))
            start = None
    if start is not None:
        runs.append((start, len(row)))
    return runs


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (scripts/test installs it)")
def test_the_browser_draws_each_capture_and_upload_where_the_ledger_puts_it(tmp_path, utc):
    import numpy as np
    from PIL import Image

    path = known_ledger(tmp_path / "ledger.jsonl")
    page = tmp_path / "ledger.html"
    P.write(path, page, now=NOW)
    png = tmp_path / "shot.png"
    screenshot(page, png, tmp_path)
    img = np.asarray(Image.open(png).convert("RGB"))
    listening, muted = _rgb(P.COLOURS["listening"]), _rgb(P.COLOURS["muted"])

    def bar_rows(colour):
        return [y for y in range(img.shape[0]) if _runs(img[y], colour)]

    checked = 0
    for mark, hour, before, after in (("capturing", 10, (8, 0, 1), (14, 0, 0)), ("uploading", 12, (7, 0, 1), (20, 0, 0))):
        rows = bar_rows(_rgb(P.COLOURS[mark]))
        assert rows, f"no {mark} mark drawn at all"
        y = rows[len(rows) // 2]
        (m0, m1), = _runs(img[y], _rgb(P.COLOURS[mark]))
        assert m1 - m0 >= P.MIN_MARK_PX, f"the {mark} mark is too thin to see"
        # The day's scale, read off the same bar: where listening begins and where the mute begins.
        x_listen = _runs(img[y], listening)[0][0]
        x_mute = _runs(img[y], muted)[-1][0]
        px_per_s = (x_mute - x_listen) / ((after[0] - before[0]) * 3600 - before[2])
        expected = x_listen + ((hour - before[0]) * 3600 - before[2]) * px_per_s
        assert abs(m0 - expected) <= 2, f"{mark} drawn at x={m0}, the ledger puts it at x={expected:.1f}"
        assert abs(px_per_s * 86400 - P.DAY_WIDTH_PX) < 3, "a day's bar is not the width of a day"
        checked += 1
    assert checked == 2


# -- the live feed ---------------------------------------------------------------------------------
class Lines:
    """A text sink that a test can wait on."""

    def __init__(self):
        self.text = ""
        self._cv = threading.Condition()

    def write(self, s):
        with self._cv:
            self.text += s
            self._cv.notify_all()

    def flush(self):
        pass

    def wait_for(self, needle: str, timeout: float = 30) -> bool:
        with self._cv:
            return self._cv.wait_for(lambda: needle in self.text, timeout)


def test_follow_prints_each_change_as_it_is_written(tmp_path):
    path = tmp_path / "ledger.jsonl"
    led = L.Ledger(path)
    led.append("start", version="test", pid=1)
    out, stop = Lines(), threading.Event()
    t = threading.Thread(target=P.follow, args=(path, out, stop), kwargs={"poll_s": 0.02}, daemon=True)
    t.start()
    try:
        assert out.wait_for("daemon started")
        led.append("state", state="capturing", reason="wake word")
        assert out.wait_for("CAPTURING  (wake word)")
        # The daemon sets a damaged ledger aside and begins anew: the feed follows the new file.
        led.close()
        path.rename(tmp_path / "ledger.broken-1.jsonl")
        led = L.Ledger(path)
        led.append("state", state="muted", reason="mute control")
        assert out.wait_for("the ledger was replaced")
        assert out.wait_for("MUTED      (mute control)")
    finally:
        stop.set()
        t.join(10)
        led.close()
    assert not t.is_alive()


def test_follow_command_ends_cleanly_on_ctrl_c(tmp_path):
    import signal

    path = tmp_path / "ledger.jsonl"
    led = L.Ledger(path)
    led.append("start", version="test", pid=1)
    conf = tmp_path / "t.toml"
    conf.write_text(f'[daemon]\nstate_dir = "{tmp_path}"\n')
    proc = subprocess.Popen([sys.executable, "-m", "tallylight", "ledger", "--follow", "--config", str(conf)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "daemon started" in proc.stdout.readline()
        led.append("state", state="listening", reason="mute control")
        assert "LISTENING" in proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        led.close()
