"""The hardware seam: the tally light, the physical mute control and the pin factory behind both.

- `pins`: the one GPIO seam (`make_pin_factory("auto" | "lgpio" | "mock")`).
- `indicator`: the light (`make_indicator`, `PATTERNS`); `show(state)` confirms before it returns.
- `mute`: the switch or button (`MuteControl.poll()`), debounced so a mute is never delayed.
- `apa102`: APA102 LEDs over SPI (ReSpeaker HATs).
- `pitfalls`: hardware checks for `tallylight check`; `profiles`: ready-made configs for boards.
Each device takes its pin factory (or SPI device) in its constructor, as gpiozero's devices do.
"""
