import os
from pathlib import Path

import pytest

from testkit import speech

REPO = Path(__file__).resolve().parents[1]

# The real-device rigs' fixtures (file_mic_rig, pulse_mic_rig) for every test module.
pytest_plugins = ["rig_fixtures"]


def pytest_addoption(parser):
    parser.addoption(
        "--all", action="store_true", dest="heavy_roots",
        help="also run the installs into debootstrap roots (Debian bookworm, and arm64 under qemu): "
             "about 8 more minutes here; CI runs them",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("heavy_roots"):
        return
    skip = pytest.mark.skip(reason="installs into a debootstrap root (minutes): scripts/test --all runs it, as CI does")
    for item in items:
        if "heavy_root" in item.keywords:
            item.add_marker(skip)


def _shared_dir() -> Path | None:
    """../shared beside the checkout (there in CI and for developers, never in a user's clone)."""
    env = os.environ.get("TALLYLIGHT_SHARED")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared", REPO.parent.parent / "shared"]:
        if (cand / "speech" / "SOURCES.md").exists():
            return cand
    return None


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_speech() -> Path:
    """The real recordings in ../shared/speech; the test is skipped with a reason when absent."""
    d = _shared_dir()
    if d is None:
        pytest.skip("../shared/speech is not here (it exists for CI and developers, not in a user's clone)")
    return d / "speech"


@pytest.fixture(scope="session")
def synth():
    """espeak-ng + sox speech maker (see testkit/speech.py)."""
    if not speech.have_tools():
        pytest.fail("espeak-ng and sox are needed: scripts/test installs them (apt-get install espeak-ng sox)")
    return speech.synth
