"""Known hardware pitfalls, for `tallylight check`: each function returns a list of problems, one
line each, naming the fix. They only read files, never touch a pin; every path is a parameter so the
tests can hand in fakes. The one rule the config alone decides, two things on one pin
(`pin_clashes`), config.load applies too, so such a config never starts.

The pitfalls are the ones users of HAT-based voice assistants hit most: SPI not enabled for the APA102
LEDs, the ReSpeaker LED power line on GPIO5, the wrong LED count, the sound card gone after a kernel
update (Seeed's out-of-tree driver must be rebuilt for every kernel), and two things wired to one pin.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from tallylight.choices import IndicatorKind
from tallylight.hardware.apa102 import ENABLE_SPI

if TYPE_CHECKING:  # only for annotations: config.load applies pin_clashes
    from tallylight.config import Config

BOOT_CONFIGS = (Path("/boot/firmware/config.txt"), Path("/boot/config.txt"))  # Bookworm on, before
CARDS = Path("/proc/asound/cards")

# ReSpeaker boards: LED count, whether GPIO5 powers the LEDs, and how to get the sound card back.
_RESPEAKER = {
    "2mic": {
        "name": "ReSpeaker 2-mic HAT",
        "leds": 3,
        "power": "some revisions of the ReSpeaker 2-mic HAT power their LEDs from GPIO5",
        "card": ("seeed-2mic", "seeed2mic", "wm8960"),
        "fix": "use the kernel's own driver (add dtoverlay=wm8960-soundcard to {boot}, remove "
        "dtoverlay=seeed-2mic-voicecard, reboot), or re-run the seeed-voicecard install for this "
        "kernel, or use a USB microphone (profile usb-mic-switch-led)",
    },
    "4mic": {
        "name": "ReSpeaker 4-mic array",
        "leds": 12,
        "power": "the ReSpeaker 4-mic array powers its LED ring from GPIO5",
        "card": ("seeed-4mic", "seeed4mic"),
        "fix": "re-run the seeed-voicecard driver install for this kernel (it must be rebuilt after "
        "every kernel update) and reboot, or use a USB microphone (profile usb-mic-switch-led)",
    },
    "6mic": {
        "name": "ReSpeaker 6-mic array",
        "leds": 12,
        "power": "the ReSpeaker 6-mic array powers its LED ring from GPIO5",
        "card": ("seeed-8mic", "seeed8mic"),
        "fix": "re-run the seeed-voicecard driver install for this kernel (it must be rebuilt after "
        "every kernel update) and reboot, or use a USB microphone (profile usb-mic-switch-led)",
    },
}
_OVERLAYS = {"seeed-2mic-voicecard": "2mic", "wm8960-soundcard": "2mic",
             "seeed-4mic-voicecard": "4mic", "seeed-8mic-voicecard": "6mic"}

# Header pins claimed by the SPI driver per bus (MOSI, MISO, SCLK, chip selects), by an I2S sound
# HAT (clock, frame, data in, data out) and by its codec's I2C control bus.
SPI_PINS = {0: {10: "SPI0 MOSI", 9: "SPI0 MISO", 11: "SPI0 SCLK", 8: "SPI0 CE0", 7: "SPI0 CE1"},
            1: {20: "SPI1 MOSI", 19: "SPI1 MISO", 21: "SPI1 SCLK", 18: "SPI1 CE0", 17: "SPI1 CE1", 16: "SPI1 CE2"}}
I2S_PINS = {18: "I2S clock", 19: "I2S frame", 20: "I2S data in", 21: "I2S data out", 2: "I2C SDA", 3: "I2C SCL"}


def _read(path: Path | None) -> str:
    try:
        return path.read_text(errors="replace") if path is not None else ""
    except OSError:
        return ""


def _boot_config(boot_config: Path | None) -> Path:
    if boot_config is not None:
        return boot_config
    return next((p for p in BOOT_CONFIGS if p.exists()), BOOT_CONFIGS[0])


def _boot_lines(text: str) -> list[str]:
    """The active (not commented) lines of config.txt, without spaces."""
    return [re.sub(r"\s+", "", line.split("#", 1)[0]) for line in text.splitlines() if line.split("#", 1)[0].strip()]


def respeaker_model(profile: str | None = None, cards: Path = CARDS, boot_config: Path | None = None) -> str | None:
    """"2mic", "4mic" or "6mic" when a ReSpeaker is in use (by profile name, sound card or
    config.txt overlay), else None."""
    if profile_model(profile):
        return profile_model(profile)
    text = _read(cards).lower()
    for model, info in _RESPEAKER.items():
        if any(c in text for c in info["card"] if c.startswith("seeed")):
            return model
    for line in _boot_lines(_read(_boot_config(boot_config))):
        m = re.match(r"dtoverlay=([\w-]+)", line)
        if m and m.group(1).startswith("seeed-") and m.group(1) in _OVERLAYS:
            return _OVERLAYS[m.group(1)]
    return None


def spi_problems(cfg: Config, dev: Path = Path("/dev"), boot_config: Path | None = None) -> list[str]:
    """APA102 LEDs configured but the SPI device node is missing."""
    ind = cfg.indicator
    if ind.kind != IndicatorKind.APA102:
        return []
    node = dev / f"spidev{ind.spi_bus}.{ind.spi_device}"
    if node.exists():
        return []
    boot = _boot_config(boot_config)
    if "dtparam=spi=on" in _boot_lines(_read(boot)):
        return [f"SPI is switched on in {boot} but {node} is missing: reboot to apply it "
                "(the APA102 LEDs need it)"]
    return [f"SPI is not enabled (no {node}) but indicator.kind = 'apa102' needs it: {ENABLE_SPI}"]


def respeaker_led_problems(cfg: Config, profile: str | None = None, cards: Path = CARDS,
                           boot_config: Path | None = None) -> list[str]:
    """On a ReSpeaker: the GPIO5 LED power line and the LED count."""
    ind = cfg.indicator
    model = respeaker_model(profile, cards, boot_config)
    if model is None or ind.kind != IndicatorKind.APA102:
        return []
    info = _RESPEAKER[model]
    problems = []
    if ind.power_pin == -1:
        problems.append(f"indicator.power_pin is not set but {info['power']}: set indicator.power_pin = 5 "
                        "(or use the respeaker profile), else the LEDs may stay dark")
    if ind.led_count != info["leds"]:
        problems.append(f"indicator.led_count is {ind.led_count} but the {info['name']} has {info['leds']} "
                        f"LEDs: set indicator.led_count = {info['leds']}")
    return problems


def sound_card_problems(cfg: Config, profile: str | None = None, cards: Path = CARDS,
                        boot_config: Path | None = None) -> list[str]:
    """A ReSpeaker card is expected (profile, or its overlay in config.txt) but ALSA does not have it."""
    boot = _boot_config(boot_config)
    overlays = [m.group(1) for line in _boot_lines(_read(boot)) if (m := re.match(r"dtoverlay=([\w-]+)", line))]
    expected: str | None = None
    if profile and profile.startswith("respeaker-"):
        expected = profile_model(profile)
    if expected is None:
        expected = next((_OVERLAYS[o] for o in overlays if o in _OVERLAYS), None)
    if expected is None:
        return []
    info = _RESPEAKER[expected]
    text = _read(cards).lower()
    if any(c in text for c in info["card"]):
        return []
    name = info["name"]
    fix = info["fix"].format(boot=boot)
    if expected == "2mic" and "wm8960-soundcard" in overlays:
        # Already on the kernel's own driver: it is not a rebuild that is missing.
        name = "WM8960 (ReSpeaker 2-mic HAT)"
        fix = (f"check that the HAT is seated and that dtparam=i2s=on and dtparam=i2c_arm=on are in {boot}, "
               "then reboot; or use a USB microphone (profile usb-mic-switch-led)")
    where = f"not in {cards}" if text else f"missing ({cards} is empty or unreadable: no sound cards at all)"
    return [f"the {name} sound card is {where}; a kernel update often breaks its driver: {fix}"]


def profile_model(profile: str | None) -> str | None:
    """"2mic", "4mic" or "6mic" when the hardware profile names a ReSpeaker, else None."""
    return next((model for model in _RESPEAKER if profile == f"respeaker-{model}"), None)


def pin_clashes(cfg: Config, i2s_hat: bool) -> list[str]:
    """Two things on one GPIO, from the config alone: the mute control, the light's pins, the SPI bus of
    APA102 LEDs, the pins voice commands drive and, when `i2s_hat`, the I2S/I2C lines of a sound HAT.
    config.load refuses a config with any; -1 ("not wired") clashes with nothing."""
    ind = cfg.indicator
    ours: list[tuple[str, int]] = [("mute.pin", cfg.mute.pin)]
    if ind.kind in (IndicatorKind.LED, IndicatorKind.PWMLED, IndicatorKind.AUTO):
        ours.append(("indicator.pin", ind.pin))
    elif ind.kind == IndicatorKind.RGBLED:
        ours += [("indicator.red_pin", ind.red_pin), ("indicator.green_pin", ind.green_pin),
                 ("indicator.blue_pin", ind.blue_pin)]
    elif ind.kind == IndicatorKind.APA102:
        ours.append(("indicator.power_pin", ind.power_pin))
    ours = [(k, p) for k, p in ours if p != -1]
    # The pins the voice commands drive (a relay, a lamp): the default light commands use GPIO22.
    from tallylight.speech.commands import default_commands, parse_commands

    commands = parse_commands(cfg.commands, str(cfg.path or "<config>")) if cfg.commands else default_commands()
    driven = {cmd.options["pin"]: f"commands.{cmd.name}" if cfg.commands else f"the default command {cmd.name}"
              for cmd in reversed(commands) if cmd.action == "gpio"}  # reversed: the first one names the pin
    problems = []
    seen: dict[int, str] = {}
    for key, pin in ours:
        if pin in seen:
            problems.append(f"{seen[pin]} and {key} are both GPIO{pin}: give each its own pin")
        else:
            seen[pin] = key
    taken: dict[int, str] = {}
    if ind.kind == IndicatorKind.APA102:
        taken.update(SPI_PINS.get(ind.spi_bus, {}))
    if i2s_hat:
        taken.update(I2S_PINS)
    for key, pin in ours:
        if pin in taken:
            problems.append(f"{key} is GPIO{pin}, which is the {taken[pin]} line: move it to a free GPIO")
    for pin, key in sorted(driven.items()):
        if pin in seen:
            problems.append(f"{key} drives GPIO{pin}, which {seen[pin]} also uses: give one of them a free GPIO")
        elif pin in taken:
            problems.append(f"{key} drives GPIO{pin}, which is the {taken[pin]} line: move it to a free GPIO")
    return problems


def pin_problems(cfg: Config, profile: str | None = None, cards: Path = CARDS,
                 boot_config: Path | None = None) -> list[str]:
    """pin_clashes with what this machine shows: the I2S/I2C pins of a sound HAT found by its sound card
    or config.txt overlay (one the config's profile does not name, so config.load could not know)."""
    text = _read(cards).lower()
    has_i2s = "seeed" in text or "wm8960" in text or respeaker_model(profile, cards, boot_config) is not None
    return pin_clashes(cfg, has_i2s)


def indicator_problems(cfg: Config, dev: Path = Path("/dev")) -> list[str]:
    """Light settings that defeat the light."""
    ind = cfg.indicator
    problems = []
    if ind.kind == IndicatorKind.LED and ind.listening_glow > 0:
        problems.append("indicator.listening_glow is set but kind = 'led' cannot dim (it stays off while "
                        "listening): use kind = 'pwmled', or set listening_glow = 0")
    if ind.brightness < 0.1:
        problems.append(f"indicator.brightness = {ind.brightness:g} is too dim to see in daylight: "
                        "set it to 0.05 or more")
    if ind.kind == IndicatorKind.TERMINAL and any(dev.glob("gpiochip*")):
        problems.append("indicator.kind = 'terminal': nothing in the room shows when audio is captured; "
                        "wire an LED and set indicator.kind (see config/profiles/)")
    return problems


def check_hardware(cfg: Config, *, profile: str | None = None, dev: Path = Path("/dev"),
                   cards: Path = CARDS, boot_config: Path | None = None) -> list[str]:
    """Every hardware pitfall that applies to `cfg` on this machine."""
    return [
        *spi_problems(cfg, dev, boot_config),
        *respeaker_led_problems(cfg, profile, cards, boot_config),
        *sound_card_problems(cfg, profile, cards, boot_config),
        *pin_problems(cfg, profile, cards, boot_config),
        *indicator_problems(cfg, dev),
    ]
