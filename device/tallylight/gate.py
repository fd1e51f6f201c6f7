"""The privacy gate: the one place that decides whether audio flows. (Being written.)"""

from enum import Enum


class State(str, Enum):
    MUTED = "muted"
    LISTENING = "listening"
    CAPTURING = "capturing"
    UPLOADING = "uploading"
    ERROR = "error"
