"""The gate's upload API (gate.py rule 9, P3) and its order of closing (rule 2), on a real ledger and a
real LED over gpiozero's mock pins. The uplink will use this API; the daemon does not upload yet."""

from __future__ import annotations

import os
import threading
import time

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from tallylight import ledger as L
from tallylight.config import IndicatorConfig
from tallylight.gate import PrivacyGate, State
from tallylight.hardware.indicator import make_indicator

LED_PIN = 27


class Rig:
    """A listening gate. `seen` notes, in order, every mic close, wipe and ledger entry, and for each
    entry the light's pattern at the moment it was written."""

    def __init__(self, tmp_path):
        self.factory = MockFactory(pin_class=MockPWMPin)
        self.light = make_indicator(IndicatorConfig(kind="led", pin=LED_PIN), self.factory)
        self.path = tmp_path / "ledger.jsonl"
        self.ledger = L.Ledger(self.path)
        self.seen: list[tuple] = []
        append = self.ledger.append

        def noted(event, **fields):
            self.seen.append(("ledger", event, fields.get("state"), getattr(self.light.pattern, "name", None)))
            return append(event, **fields)

        self.ledger.append = noted
        self.gate = PrivacyGate(self.light, self.ledger, close_mic=lambda why: self.seen.append(("close_mic", why)),
                                wipe=lambda: self.seen.append(("wipe",)))
        self.gate.switch_changed(muted=False)
        self.seen.clear()

    def entries(self, event):
        return [e for _, e, _ in L.read_entries(self.path) if e["event"] == event]

    def close(self):
        self.light.close()
        self.ledger.close()
        self.factory.close()


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    r.close()


def test_nothing_may_be_sent_outside_an_upload(rig):
    assert not rig.gate.allow_send(100)
    assert rig.gate.begin_capture()
    assert not rig.gate.allow_send(100), "a capture is not an upload"


def test_an_upload_shows_its_light_before_it_is_ledgered_and_records_destination_and_bytes(rig):
    assert rig.gate.begin_upload("homeassistant.local")
    assert rig.seen == [("ledger", "state", "uploading", "UPLOADING")], "the upload light comes first (P3)"
    assert rig.gate.uploading and rig.light.pattern.name == "UPLOADING"
    assert rig.gate.allow_send(3200) and rig.gate.allow_send(3200)
    rig.gate.end_upload("homeassistant.local", 6400)
    assert rig.gate.state is State.LISTENING and not rig.gate.allow_send(1)
    [up] = rig.entries("upload")
    assert (up["destination"], up["bytes"]) == ("homeassistant.local", 6400)
    assert ("close_mic", "upload finished") not in rig.seen, "an upload that ends leaves the mic open"


def test_an_upload_cut_off_by_a_mute_is_wiped_and_ledgered_with_the_bytes_sent(rig):
    assert rig.gate.begin_upload("homeassistant.local")
    assert rig.gate.allow_send(640)
    rig.seen.clear()
    rig.gate.switch_changed(muted=True)
    assert rig.seen[:2] == [("close_mic", "mute control"), ("wipe",)], "mic closed and audio wiped before any fsync"
    [up] = rig.entries("upload")
    assert (up["destination"], up["bytes"], up["end"]) == ("homeassistant.local", 640, "cut off: mute control")
    assert rig.gate.state is State.MUTED and not rig.gate.allow_send(1)


def test_a_light_lost_during_an_upload_stops_it_at_its_next_blink(rig):
    """The upload light blinks (5 per second): a light that dies is found at its next blink, within
    0.1 s, and from then on not one more byte is allowed; the bytes allowed until then are ledgered."""
    assert rig.gate.begin_upload("homeassistant.local")
    assert rig.gate.allow_send(640)
    rig.light._device.close()  # the LED's GPIO is gone
    sent, deadline = 640, time.monotonic() + 10
    while rig.gate.allow_send(640):
        sent += 640
        assert time.monotonic() < deadline, "the lost light was never noticed"
        threading.Event().wait(0.005)
    assert rig.gate.state is State.ERROR and ("wipe",) in rig.seen and not rig.gate.allow_send(1)
    [up] = rig.entries("upload")
    assert up["bytes"] == sent and up["end"] == "cut off: error"


def test_an_upload_the_ledger_cannot_record_never_starts(rig):
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, rig.ledger._fd)
    os.close(full)
    assert not rig.gate.begin_upload("homeassistant.local")
    assert rig.gate.state is State.ERROR and not rig.gate.allow_send(1)


@pytest.mark.parametrize("destination, nbytes", [("elsewhere", 10), ("homeassistant.local", 11)])
def test_an_upload_that_reports_more_than_it_was_allowed_fails_closed(rig, destination, nbytes):
    assert rig.gate.begin_upload("homeassistant.local")
    assert rig.gate.allow_send(10)
    rig.gate.end_upload(destination, nbytes)
    assert rig.gate.state is State.ERROR and "were allowed" in rig.gate.error_reason


def test_a_mic_that_cannot_be_closed_fails_closed(tmp_path):
    def stuck(why):
        raise OSError("PortAudio: stream stop failed")

    factory = MockFactory(pin_class=MockPWMPin)
    gate = PrivacyGate(make_indicator(IndicatorConfig(kind="led", pin=LED_PIN), factory),
                       L.Ledger(tmp_path / "ledger.jsonl"), close_mic=stuck)
    gate.switch_changed(muted=False)
    gate.switch_changed(muted=True)
    assert gate.state is State.ERROR and "could not close the microphone" in gate.error_reason
