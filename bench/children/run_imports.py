"""What `tallylight run` imports before it listens, and nothing else: table 5 runs it under
`python -X importtime -m bench.children.run_imports` to rank the imports by time.

In this order on purpose (not sorted): a module shared by two is charged to the first that imports it.
"""
# ruff: noqa: F401, I001

import tallylight.cli
import tallylight.daemon
import tallylight.pipeline
import tallylight.wake
import tallylight.ears
import tallylight.vad
import tallylight.audio.device
import tallylight.hardware.indicator
import tallylight.hardware.mute
import tallylight.speech.understand
import tallylight.speech.sphinx
import tallylight.responder
import pyaudio
import pymicro_wakeword
import pocketsphinx
import webrtcvad
import gpiozero
