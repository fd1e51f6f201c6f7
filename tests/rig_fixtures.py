"""pytest fixtures around testkit/audio_rigs.py's real capture devices, for every test module
(tests/conftest.py lists this module in `pytest_plugins`)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from testkit.audio_rigs import FileMics, file_mics, have_pulseaudio, pulse_mic


@pytest.fixture
def file_mic_rig(tmp_path):
    """A factory: `file_mic_rig({"testmic": samples}, rate=..., channels=...)` -> FileMics, active
    for the rest of the test (ALSA_CONFIG_PATH restored afterwards)."""
    stack = []

    def make(devices: Mapping[str, np.ndarray | bytes], **kw) -> FileMics:
        cm = file_mics(tmp_path / f"mics{len(stack)}", devices, **kw)
        mics = cm.__enter__()
        stack.append(cm)
        return mics

    yield make
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


@pytest.fixture
def pulse_mic_rig(tmp_path):
    """A running PulseAudio null-sink mic (16 kHz, 6 channels, ALSA device 'virtmon'); skipped with
    a reason when PulseAudio or the ALSA pulse plugin is missing."""
    if not have_pulseaudio():
        pytest.skip("pulseaudio, pulseaudio-utils and libasound2-plugins are needed (scripts/test installs them)")
    with pulse_mic(tmp_path) as mic:
        yield mic
