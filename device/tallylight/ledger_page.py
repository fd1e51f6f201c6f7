"""The owner's view of the ledger: one self-contained HTML page, and a live feed of new entries.

`render(path)` reads a ledger (never writes it) and returns a page with no network resources, no
scripts and no external fonts, so it can be opened from a USB stick years later:
- the verification result at the top (the same `ledger.verify` as `tallylight ledger --verify`);
- a timeline per day of muted, listening, capturing, uploading, error and "not running";
- a table of every capture and upload: when, how long, handed to what, how many bytes.

Times are shown in the local time zone of the machine that makes the page (its name is printed).
Everything that comes from the ledger is escaped: an edited ledger can make the page say false
things (verification then says it was edited) but cannot put markup or links into it.

`follow(path, out)` prints the ledger's lines as `tallylight ledger` does, then each new entry as it
is written, and says so when the daemon sets a damaged ledger aside and starts a new one.
"""

from __future__ import annotations

import html
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from tallylight import ledger as L

# States drawn on the timeline, with the colour of each. "off" is the time between a stop (or the
# last entry before a start with no stop: a crash) and the next start: the daemon was not running,
# so the microphone was closed.
COLOURS = {
    "muted": "#9e9e9e",
    "listening": "#a5d6a7",
    "capturing": "#d50000",
    "uploading": "#2962ff",
    "error": "#ff8f00",
    "off": "#dde3ea",
}
LABELS = {
    "muted": "muted (mic closed)",
    "listening": "listening for the wake word",
    "capturing": "capturing (audio kept in RAM)",
    "uploading": "uploading (audio leaving the device)",
    "error": "error (mic closed)",
    "off": "not running (mic closed)",
}
DAY_WIDTH_PX = 960  # one day's bar: 40 px an hour
BAR_HEIGHT_PX = 28
# A capture of 3 s is 0.03 px of a day: states that show audio kept or sent are drawn at least this
# wide, so none can hide in the picture (each has a tooltip with its exact times).
MIN_MARK_PX = 3


@dataclass(frozen=True)
class Segment:
    state: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Transfer:
    """A capture (audio held in RAM and handed over) or an upload (audio sent off the device)."""

    kind: str
    end: datetime
    duration_s: float | None
    handed_to: str
    nbytes: int | None
    how: str


def _when(entry: dict[str, Any]) -> datetime | None:
    try:
        t = datetime.fromisoformat(str(entry.get("time")))
    except ValueError:
        return None
    return t.astimezone() if t.tzinfo else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read(path: Path, now: datetime | None = None) -> tuple[list[Segment], list[Transfer]]:
    """The ledger's states as segments in time, and its captures and uploads. The last state lasts
    until its stop entry, or (the daemon still running) until `now`."""
    segments: list[Segment] = []
    transfers: list[Transfer] = []
    state: str | None = None
    since: datetime | None = None
    last_seen: datetime | None = None
    uploading_since: datetime | None = None  # an upload entry has bytes, not its duration

    def close(at: datetime) -> None:
        if state is not None and since is not None and at >= since:
            segments.append(Segment(state, since, at))

    for _, entry, _ in L.read_entries(path):
        when = _when(entry) if entry else None
        if when is None:
            continue
        event = entry.get("event")
        if event == "start":
            if state not in (None, "off") and last_seen is not None:
                close(last_seen)  # no stop entry: it crashed or lost power some time after this
                state, since = "off", last_seen
            close(when)
            state, since = None, None
        elif event == "stop":
            close(when)
            state, since = "off", when
        elif event == "state" and isinstance(entry.get("state"), str):
            close(when)
            state, since = (entry["state"] if entry["state"] in COLOURS else "error"), when
            if state == "uploading":
                uploading_since = when
        elif event in ("capture", "upload"):
            duration = _number(entry.get("duration_s"))
            if duration is None and event == "upload" and uploading_since is not None:
                duration = (when - uploading_since).total_seconds()
            transfers.append(Transfer(
                kind=event, end=when, duration_s=duration,
                handed_to=str(entry.get("handed_to") or entry.get("destination") or "?"),
                nbytes=int(entry["bytes"]) if _number(entry.get("bytes")) is not None else None,
                how=L.end_words(entry.get("end")),
            ))
        last_seen = when
    if state is not None and since is not None and state != "off":
        close(max(since, now or datetime.now().astimezone()))
    return segments, transfers


def _days(segments: list[Segment]) -> dict[datetime, list[Segment]]:
    """Segments cut at local midnight, by day (each day's key is its midnight)."""
    days: dict[datetime, list[Segment]] = {}
    for seg in segments:
        start = seg.start
        while start < seg.end or (start == seg.end and seg.start == seg.end):
            midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
            next_midnight = (midnight + timedelta(days=1, hours=2)).replace(hour=0)  # across a DST change too
            end = min(seg.end, next_midnight)
            days.setdefault(midnight, []).append(Segment(seg.state, start, end))
            if end == seg.end:
                break
            start = end
    return days


def _x(t: datetime, midnight: datetime) -> float:
    day_s = ((midnight + timedelta(days=1, hours=2)).replace(hour=0) - midnight).total_seconds()
    return (t - midnight).total_seconds() / day_s * DAY_WIDTH_PX


def _fmt(t: datetime) -> str:
    return t.strftime("%H:%M:%S")


def _day_svg(midnight: datetime, segments: list[Segment]) -> str:
    rects = []
    # The brief states that matter most are drawn last, so a capture is never hidden under its neighbours.
    order = {"off": 0, "listening": 1, "muted": 2, "error": 3, "capturing": 4, "uploading": 5}
    for seg in sorted(segments, key=lambda s: order.get(s.state, 0)):
        x0, x1 = _x(seg.start, midnight), _x(seg.end, midnight)
        width = x1 - x0
        if seg.state in ("capturing", "uploading", "error") and width < MIN_MARK_PX:
            x0, width = max(0.0, min(x0, DAY_WIDTH_PX - MIN_MARK_PX)), MIN_MARK_PX
        seconds = (seg.end - seg.start).total_seconds()
        rects.append(
            f'<rect class="seg {seg.state}" x="{x0:.2f}" y="0" width="{max(width, 0.0):.2f}" height="{BAR_HEIGHT_PX}" '
            f'fill="{COLOURS[seg.state]}" data-state="{seg.state}" data-start="{html.escape(seg.start.isoformat())}" '
            f'data-end="{html.escape(seg.end.isoformat())}"><title>{html.escape(LABELS[seg.state])}: '
            f'{_fmt(seg.start)} to {_fmt(seg.end)} ({seconds:.1f} s)</title></rect>'
        )
    ticks = "".join(
        f'<line x1="{h * DAY_WIDTH_PX / 24:.0f}" y1="{BAR_HEIGHT_PX}" x2="{h * DAY_WIDTH_PX / 24:.0f}" '
        f'y2="{BAR_HEIGHT_PX + 5}" stroke="#555"/><text x="{h * DAY_WIDTH_PX / 24:.0f}" y="{BAR_HEIGHT_PX + 17}" '
        f'font-size="10" text-anchor="{"start" if h == 0 else "end" if h == 24 else "middle"}">{h:02d}:00</text>'
        for h in range(0, 25, 3)
    )
    return (
        f'<svg class="day" width="{DAY_WIDTH_PX}" height="{BAR_HEIGHT_PX + 20}" viewBox="0 0 {DAY_WIDTH_PX} '
        f'{BAR_HEIGHT_PX + 20}" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'aria-label="{midnight:%Y-%m-%d}">'
        f'<rect x="0" y="0" width="{DAY_WIDTH_PX}" height="{BAR_HEIGHT_PX}" fill="#fafafa" stroke="#ccc"/>'
        f"{''.join(rects)}{ticks}</svg>"
    )


_STYLE = """
body { font-family: sans-serif; margin: 24px; color: #212121; max-width: 1000px; }
h1 { font-size: 22px; margin: 0 0 4px; }
.verdict { padding: 10px 14px; border-radius: 6px; margin: 12px 0 20px; font-weight: bold; }
.verdict.ok { background: #e8f5e9; border: 2px solid #2e7d32; }
.verdict.failed { background: #ffebee; border: 2px solid #c62828; }
.verdict ul { font-weight: normal; margin: 6px 0 0; }
.legend span { display: inline-block; margin-right: 14px; font-size: 13px; }
.legend i { display: inline-block; width: 14px; height: 14px; border: 1px solid #999; vertical-align: middle;
            margin-right: 4px; }
h2 { font-size: 16px; margin: 18px 0 4px; }
table { border-collapse: collapse; font-size: 13px; margin-top: 8px; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
th { background: #f5f5f5; }
.small { color: #616161; font-size: 12px; }
"""


def render(path: str | os.PathLike, now: datetime | None = None) -> str:
    """The whole page, as text."""
    path = Path(path)
    check = L.verify(path)
    segments, transfers = read(path, now)
    made = (now or datetime.now().astimezone()).astimezone()
    zone = made.tzname() or "local time"
    esc = html.escape
    if check.ok:
        verdict = (f'<div class="verdict ok">Verified: {check.entries} entries, the hash chain and the head '
                   "file are intact.</div>")
    else:
        items = "".join(f"<li>{esc(p)}</li>" for p in check.problems)
        verdict = (f'<div class="verdict failed">FAILED verification: {len(check.problems)} problem(s). '
                   f"What this page shows may not be what happened.<ul>{items}</ul></div>")
    legend = "".join(f'<span><i style="background:{COLOURS[s]}"></i>{esc(LABELS[s])}</span>' for s in COLOURS)
    days = _days(segments)
    timeline = "".join(f"<h2>{day:%A %d %B %Y}</h2>{_day_svg(day, segs)}" for day, segs in sorted(days.items())) or (
        "<p>No state changes recorded yet.</p>")
    rows = []
    for t in transfers:
        start = t.end - timedelta(seconds=t.duration_s) if t.duration_s is not None else None
        rows.append(
            f'<tr class="{t.kind}"><td>{esc(t.kind)}</td><td>{esc(f"{start:%Y-%m-%d %H:%M:%S}" if start else "?")}</td>'
            f"<td>{esc(f'{t.end:%Y-%m-%d %H:%M:%S}')}</td>"
            f"<td>{esc(f'{t.duration_s:.1f} s' if t.duration_s is not None else '')}</td>"
            f"<td>{esc(t.handed_to)}</td><td>{esc(str(t.nbytes) if t.nbytes is not None else '')}</td>"
            f"<td>{esc(t.how)}</td></tr>"
        )
    captures = sum(1 for t in transfers if t.kind == "capture")
    uploads = [t for t in transfers if t.kind == "upload"]
    sent = sum(t.nbytes or 0 for t in uploads)
    table = ("<table><tr><th>what</th><th>from</th><th>to</th><th>how long</th><th>handed to / sent to</th>"
             f"<th>bytes</th><th>ended by</th></tr>{''.join(rows)}</table>") if rows else "<p>None recorded.</p>"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        # Nothing may load from anywhere: this page is read offline and must not call home.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>tallylight ledger: {esc(path.name)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>When the microphone was live</h1>"
        f'<div class="small">{esc(str(path))}; made {made:%Y-%m-%d %H:%M:%S} ({esc(zone)}); times in {esc(zone)}</div>'
        f"{verdict}<div class=\"legend\">{legend}</div>{timeline}"
        f"<h2>Captures and uploads</h2><p>{captures} capture(s) kept in RAM and wiped after recognition; "
        f"{len(uploads)} upload(s), {sent} bytes sent off the device.</p>{table}"
        "</body></html>\n"
    )


def write(path: str | os.PathLike, out: str | os.PathLike, now: datetime | None = None) -> None:
    """Write the page to `out` (replaced whole: a reader never sees half a page)."""
    out = Path(out)
    text = render(path, now)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)


def follow(path: str | os.PathLike, out: TextIO, stop: threading.Event | None = None, poll_s: float = 0.25) -> None:
    """Print the ledger's lines, then each new one as it is appended, until `stop` is set. A ledger
    that is replaced (set aside as damaged, a new chain begun) is followed into its new file."""
    path = Path(path)
    stop = stop or threading.Event()
    pending = b""
    position = 0
    identity: tuple[int, int] | None = None
    while not stop.is_set():
        try:
            st = path.stat()
        except FileNotFoundError:
            st = None
        if st is not None:
            now_identity = (st.st_dev, st.st_ino)
            if identity is not None and (now_identity != identity or st.st_size < position):
                print("-- the ledger was replaced (set aside as damaged, or deleted): following the new one",
                      file=out, flush=True)
                position, pending = 0, b""
            identity = now_identity
            if st.st_size > position:
                with open(path, "rb") as f:
                    f.seek(position)
                    data = f.read()
                position += len(data)
                lines = (pending + data).split(b"\n")
                pending = lines.pop()  # an entry being written: printed once its newline is there
                for line in _describe_lines(lines):
                    print(line, file=out, flush=True)
        stop.wait(poll_s)


def _describe_lines(lines: Iterable[bytes]) -> Iterable[str]:
    for raw in lines:
        if raw.strip():
            yield L.describe(L.parse_line(raw.decode("utf-8", errors="replace")))
