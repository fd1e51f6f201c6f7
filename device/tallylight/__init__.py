"""tallylight: an offline smart speaker whose light shows exactly when audio is kept or sent."""

__version__ = "0.1.0"
