"""What the tests and scripts/bench both use to make their input, from a checkout (never installed:
setuptools finds packages in device/ only): espeak-ng speech (speech.py), real capture devices on a
machine with no sound card (audio_rigs.py), the wake word corpus (wake_corpus.py), the English vosk
test model (vosk_english.py) and a fake Home Assistant (fake_home_assistant.py).

Importable from the checkout's root: pytest puts it on sys.path (pyproject.toml `pythonpath`), and
scripts/bench runs `python -m bench` there.
"""
