"""Hardware pitfalls for `tallylight check`, with fake /dev, /proc/asound/cards and config.txt in
tmp_path; and the hardware profiles, each parsed by the real config loader."""

import json
import subprocess
import sys
import tomllib

import pytest

from tallylight import config
from tallylight.errors import ConfigError
from tallylight.hardware import pitfalls, profiles

CARDS_2MIC = """ 0 [vc4hdmi        ]: vc4-hdmi - vc4-hdmi
                      vc4-hdmi
 1 [seeed2micvoicec]: seeed-2mic-voice - seeed-2mic-voicecard
                      seeed-2mic-voicecard
"""
CARDS_4MIC = " 1 [seeed4micvoicec]: seeed-4mic-voice - seeed-4mic-voicecard\n"
CARDS_HDMI_ONLY = " 0 [vc4hdmi        ]: vc4-hdmi - vc4-hdmi\n                      vc4-hdmi\n"
CARDS_WM8960 = " 1 [wm8960soundcard]: simple-card - wm8960-soundcard\n"


@pytest.fixture
def machine(tmp_path):
    """A fake Pi: /dev, /proc/asound/cards and config.txt, all empty to start with."""
    dev = tmp_path / "dev"
    dev.mkdir()
    cards = tmp_path / "cards"
    cards.write_text(CARDS_HDMI_ONLY)
    boot = tmp_path / "config.txt"
    boot.write_text("[all]\ndtparam=audio=on\n")

    class M:
        pass

    m = M()
    m.dev, m.cards, m.boot = dev, cards, boot
    m.check = lambda cfg, profile=None: pitfalls.check_hardware(
        cfg, profile=profile, dev=dev, cards=cards, boot_config=boot)
    return m


def cfg_of(**sections):
    return config.from_dict(sections)


def apa102(**kw):
    return cfg_of(indicator={"kind": "apa102", **kw})


def assert_one_liners(problems):
    assert problems and all(p and "\n" not in p for p in problems)


# --- SPI ---------------------------------------------------------------------------------------

def test_spi_missing_for_apa102(machine):
    problems = pitfalls.spi_problems(apa102(), machine.dev, machine.boot)
    assert_one_liners(problems)
    assert "spidev0.0" in problems[0] and "raspi-config nonint do_spi 0" in problems[0]


def test_spi_switched_on_but_not_rebooted(machine):
    machine.boot.write_text("dtparam=spi=on\n")
    problems = pitfalls.spi_problems(apa102(), machine.dev, machine.boot)
    assert len(problems) == 1 and "reboot" in problems[0]


def test_spi_commented_out_is_not_on(machine):
    machine.boot.write_text("#dtparam=spi=on\n")
    assert "raspi-config" in pitfalls.spi_problems(apa102(), machine.dev, machine.boot)[0]


def test_spi_present_or_not_needed(machine):
    (machine.dev / "spidev0.1").touch()
    assert pitfalls.spi_problems(apa102(spi_device=1), machine.dev, machine.boot) == []
    assert pitfalls.spi_problems(cfg_of(indicator={"kind": "led"}), machine.dev, machine.boot) == []


# --- ReSpeaker LED power and count -------------------------------------------------------------

def test_respeaker_power_pin_missing_by_profile(machine):
    machine.cards.write_text(CARDS_4MIC)
    problems = pitfalls.respeaker_led_problems(apa102(led_count=12), "respeaker-4mic", machine.cards, machine.boot)
    assert_one_liners(problems)
    assert "indicator.power_pin = 5" in problems[0] and "4-mic" in problems[0]


def test_respeaker_detected_from_the_sound_card(machine):
    machine.cards.write_text(CARDS_2MIC)
    problems = pitfalls.respeaker_led_problems(apa102(), None, machine.cards, machine.boot)
    assert len(problems) == 1 and "power_pin" in problems[0] and "2-mic" in problems[0]


def test_respeaker_detected_from_config_txt(machine):
    machine.boot.write_text("dtoverlay=seeed-8mic-voicecard\n")
    problems = pitfalls.respeaker_led_problems(apa102(power_pin=5), None, machine.cards, machine.boot)
    assert problems == ["indicator.led_count is 3 but the ReSpeaker 6-mic array has 12 LEDs: "
                        "set indicator.led_count = 12"]


def test_respeaker_leds_configured_right(machine):
    machine.cards.write_text(CARDS_4MIC)
    cfg = apa102(led_count=12, power_pin=5)
    assert pitfalls.respeaker_led_problems(cfg, None, machine.cards, machine.boot) == []


def test_no_respeaker_no_power_advice(machine):
    assert pitfalls.respeaker_led_problems(apa102(), None, machine.cards, machine.boot) == []


# --- the sound card after a kernel update ------------------------------------------------------

def test_seeed_card_gone_after_kernel_update(machine):
    machine.boot.write_text("dtparam=i2s=on\ndtoverlay=seeed-2mic-voicecard\n")
    problems = pitfalls.sound_card_problems(cfg_of(), None, machine.cards, machine.boot)
    assert_one_liners(problems)
    p = problems[0]
    assert "ReSpeaker 2-mic" in p and "kernel update" in p
    assert "dtoverlay=wm8960-soundcard" in p and "seeed-voicecard" in p and "USB microphone" in p


def test_4mic_card_gone_suggests_reinstall(machine):
    problems = pitfalls.sound_card_problems(cfg_of(), "respeaker-4mic", machine.cards, machine.boot)
    assert len(problems) == 1 and "re-run the seeed-voicecard driver install" in problems[0]


def test_no_sound_cards_at_all(machine):
    machine.cards.unlink()
    problems = pitfalls.sound_card_problems(cfg_of(), "respeaker-6mic", machine.cards, machine.boot)
    assert len(problems) == 1 and "no sound cards at all" in problems[0]


def test_mainline_overlay_card_missing_gets_its_own_advice(machine):
    machine.boot.write_text("dtoverlay=wm8960-soundcard\n")
    problems = pitfalls.sound_card_problems(cfg_of(), None, machine.cards, machine.boot)
    assert len(problems) == 1 and "dtparam=i2s=on" in problems[0]


def test_card_present(machine):
    machine.boot.write_text("dtoverlay=seeed-2mic-voicecard\n")
    machine.cards.write_text(CARDS_2MIC)
    assert pitfalls.sound_card_problems(cfg_of(), None, machine.cards, machine.boot) == []
    machine.boot.write_text("dtoverlay=wm8960-soundcard\n")
    machine.cards.write_text(CARDS_WM8960)
    assert pitfalls.sound_card_problems(cfg_of(), "respeaker-2mic", machine.cards, machine.boot) == []


def test_usb_mic_expects_no_card(machine):
    assert pitfalls.sound_card_problems(cfg_of(), "usb-mic-switch-led", machine.cards, machine.boot) == []


# --- pins and light settings -------------------------------------------------------------------

FAN = {"phrases": ["fan on"], "action": "gpio", "set": "on"}


@pytest.mark.parametrize("sections, clash", [
    ({"mute": {"pin": 27}, "indicator": {"kind": "led", "pin": 27}},
     "mute.pin and indicator.pin are both GPIO27: give each its own pin"),
    ({"mute": {"pin": 24}, "indicator": {"kind": "rgbled", "red_pin": 23, "green_pin": 24, "blue_pin": 25}},
     "mute.pin and indicator.green_pin are both GPIO24: give each its own pin"),
    ({"indicator": {"kind": "rgbled", "red_pin": 23, "green_pin": 23, "blue_pin": 25}},
     "indicator.red_pin and indicator.green_pin are both GPIO23: give each its own pin"),
    ({"mute": {"pin": 10}, "indicator": {"kind": "apa102"}},
     "mute.pin is GPIO10, which is the SPI0 MOSI line: move it to a free GPIO"),
    ({"mute": {"pin": 26}, "indicator": {"kind": "apa102", "spi_bus": 1, "power_pin": 21}},
     "indicator.power_pin is GPIO21, which is the SPI1 SCLK line: move it to a free GPIO"),
    ({"indicator": {"kind": "apa102", "spi_bus": 1}},  # the default mute.pin 17 is SPI1's CE1
     "mute.pin is GPIO17, which is the SPI1 CE1 line: move it to a free GPIO"),
    # The default light commands drive GPIO22: an RGB LED with its red leg there collides.
    ({"indicator": {"kind": "rgbled", "red_pin": 22, "green_pin": 23, "blue_pin": 24}},
     "the default command light_on drives GPIO22, which indicator.red_pin also uses: give one of them a free GPIO"),
    ({"commands": {"fan": {**FAN, "pin": 17}}},
     "commands.fan drives GPIO17, which mute.pin also uses: give one of them a free GPIO"),
    ({"commands": {"fan": {**FAN, "pin": 9}}, "indicator": {"kind": "apa102"}},
     "commands.fan drives GPIO9, which is the SPI0 MISO line: move it to a free GPIO"),
    # A ReSpeaker profile: its I2S lines and its LED power pin are known from the config alone.
    ({"hardware": {"profile": "respeaker-2mic"}, "commands": {"fan": {**FAN, "pin": 18}}},
     "commands.fan drives GPIO18, which is the I2S clock line: move it to a free GPIO"),
    ({"hardware": {"profile": "respeaker-4mic"}, "commands": {"fan": {**FAN, "pin": 5}}},
     "commands.fan drives GPIO5, which indicator.power_pin also uses: give one of them a free GPIO"),
])
def test_two_things_on_one_pin_are_refused_at_load(tmp_path, sections, clash):
    with pytest.raises(ConfigError) as e:
        cfg_of(**sections)
    assert str(e.value) == f"<config>: {clash}"
    # Through the file and the CLI: exit 78 and one line, before anything is opened.
    text = "".join(f"[{name}]\n" + "".join(f"{k} = {tomllib_value(v)}\n" for k, v in keys.items())
                   for name, keys in sections.items() if name != "commands")
    for name, cmd in sections.get("commands", {}).items():
        text += f"[commands.{name}]\n" + "".join(f"{k} = {tomllib_value(v)}\n" for k, v in cmd.items())
    path = tmp_path / "clash.toml"
    path.write_text(text)
    r = subprocess.run([sys.executable, "-m", "tallylight", "run", "--config", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 78 and r.stderr.strip() == f"tallylight: {path}: {clash}"


def tomllib_value(v):
    return json.dumps(v)  # strings, numbers and lists of strings are written alike in TOML and JSON


@pytest.mark.parametrize("sections", [
    {"mute": {"pin": -1}, "indicator": {"kind": "rgbled", "red_pin": 23, "green_pin": 24, "blue_pin": 25,
                                         "power_pin": -1}},
    {"indicator": {"kind": "terminal", "pin": 17}},  # the terminal light uses no pin
    {"indicator": {"kind": "led", "red_pin": 17}},  # red_pin means nothing to a plain LED
    {"indicator": {"kind": "apa102", "pin": 10}},  # nor indicator.pin to APA102 LEDs
    {"commands": {"fan": {**FAN, "pin": 26}, "fan_off": {**FAN, "phrases": ["fan off"], "pin": 26}}},
])
def test_pins_that_do_not_clash_load(sections):
    cfg_of(**sections)


def test_pin_on_the_i2s_lines_of_a_sound_hat_this_machine_has(machine):
    """A HAT known only from the sound card (no profile): that is for `tallylight check`."""
    machine.cards.write_text(CARDS_2MIC)
    cfg = cfg_of(indicator={"kind": "rgbled", "red_pin": 18, "green_pin": 23, "blue_pin": 24})
    problems = pitfalls.pin_problems(cfg, None, machine.cards, machine.boot)
    assert problems == ["indicator.red_pin is GPIO18, which is the I2S clock line: move it to a free GPIO"]
    cfg = cfg_of(commands={"fan": {**FAN, "pin": 18}})
    assert pitfalls.pin_problems(cfg, None, machine.cards, machine.boot) == [
        "commands.fan drives GPIO18, which is the I2S clock line: move it to a free GPIO"]
    assert pitfalls.pin_problems(cfg_of(commands={"fan": {**FAN, "pin": 26}}), None, machine.cards, machine.boot) == []
    machine.cards.write_text(CARDS_HDMI_ONLY)
    assert pitfalls.pin_problems(cfg, None, machine.cards, machine.boot) == []


def test_led_cannot_glow_and_too_dim(machine):
    problems = pitfalls.indicator_problems(cfg_of(indicator={"kind": "led", "listening_glow": 0.2}), machine.dev)
    assert len(problems) == 1 and "pwmled" in problems[0]
    problems = pitfalls.indicator_problems(cfg_of(indicator={"kind": "pwmled", "brightness": 0.07}), machine.dev)
    assert len(problems) == 1 and "too dim" in problems[0]


def test_terminal_light_on_a_pi(machine):
    cfg = cfg_of(indicator={"kind": "terminal"})
    assert pitfalls.indicator_problems(cfg, machine.dev) == []  # no GPIO: the terminal is all there is
    (machine.dev / "gpiochip0").touch()
    problems = pitfalls.indicator_problems(cfg, machine.dev)
    assert len(problems) == 1 and "nothing in the room shows" in problems[0]


def test_a_sound_setup_has_no_problems(machine):
    (machine.dev / "spidev0.1").touch()
    machine.cards.write_text(CARDS_2MIC)
    machine.boot.write_text("dtparam=spi=on\ndtoverlay=seeed-2mic-voicecard\n")
    merged = profiles.merge({}, profiles.load_profile("respeaker-2mic"))
    assert machine.check(config.from_dict(merged), "respeaker-2mic") == []


def test_check_hardware_collects_everything(machine):
    machine.boot.write_text("dtoverlay=seeed-4mic-voicecard\n")
    problems = machine.check(cfg_of(mute={"pin": 19}, indicator={"kind": "apa102"}))
    text = "\n".join(problems)
    for needle in ("raspi-config", "power_pin", "led_count", "sound card", "I2S frame"):
        assert needle in text
    assert_one_liners(problems)


# --- profiles ----------------------------------------------------------------------------------

EXPECTED_PROFILES = {"respeaker-2mic", "respeaker-4mic", "respeaker-6mic", "usb-mic-switch-led", "rgb-led"}


def test_profiles_are_there(repo):
    assert set(profiles.profile_names([repo / "config" / "profiles"])) == EXPECTED_PROFILES
    assert repo / "config" / "profiles" == profiles.CHECKOUT_PROFILES


@pytest.mark.parametrize("name", sorted(EXPECTED_PROFILES))
def test_every_profile_parses_over_the_default_config(repo, name):
    base = tomllib.loads((repo / "config" / "tallylight.toml").read_text())
    overlay = profiles.load_profile(name, [repo / "config" / "profiles"])
    cfg = config.from_dict(profiles.merge(base, overlay), where=name)
    for section, keys in overlay.items():
        for key, value in keys.items():
            assert getattr(getattr(cfg, section), key) == value
    # And over an empty config (every other key at its default).
    config.from_dict(profiles.merge({}, overlay), where=name)


@pytest.mark.parametrize("name", sorted(EXPECTED_PROFILES))
def test_no_profile_shares_a_pin_with_the_shipped_commands(repo, name, machine):
    base = tomllib.loads((repo / "config" / "tallylight.toml").read_text())
    cfg = config.from_dict(profiles.merge(base, profiles.load_profile(name, [repo / "config" / "profiles"])), where=name)
    problems = pitfalls.pin_problems(cfg, name, machine.cards, machine.boot)
    assert [p for p in problems if "also uses" in p or "both GPIO" in p] == []


@pytest.mark.parametrize("name", sorted(EXPECTED_PROFILES))
def test_every_profile_key_is_commented(repo, name):
    """Each key has a comment on its line or heads a group of keys that a comment introduces."""
    lines = (repo / "config" / "profiles" / f"{name}.toml").read_text().splitlines()

    def is_key(line):
        return "=" in line and not line.lstrip().startswith(("#", "["))

    for i, line in enumerate(lines):
        if not is_key(line) or "#" in line:
            continue
        j = i - 1
        while j >= 0 and is_key(lines[j]):
            j -= 1
        assert j >= 0 and lines[j].startswith("#"), (name, line)


def test_profile_hardware_facts(repo):
    dirs = [repo / "config" / "profiles"]
    two = profiles.load_profile("respeaker-2mic", dirs)
    assert two["mute"] == {"control": "button", "pin": 17, "pull_up": True}
    assert two["indicator"]["led_count"] == 3 and two["indicator"]["power_pin"] == 5
    six = profiles.load_profile("respeaker-6mic", dirs)
    assert six["audio"]["channel_mode"] == "single"  # never the loopback channels 7-8
    assert profiles.load_profile("respeaker-4mic", dirs)["indicator"]["led_count"] == 12


def test_profile_lookup_order_and_unknown(tmp_path):
    a, b = tmp_path / "etc", tmp_path / "checkout"
    a.mkdir()
    b.mkdir()
    (a / "x.toml").write_text("[indicator]\nkind = 'led'\n")
    (b / "x.toml").write_text("[indicator]\nkind = 'pwmled'\n")
    (b / "y.toml").write_text("")
    assert profiles.profile_names([a, b]) == ["x", "y"]
    assert profiles.profile_path("x", [a, b]) == a / "x.toml"
    with pytest.raises(ConfigError) as err:
        profiles.profile_path("nope", [a, b])
    assert "known profiles: x, y" in str(err.value)
    with pytest.raises(ConfigError):
        profiles.profile_path("../etc/passwd", [a, b])


def test_profile_may_not_set_other_sections(tmp_path):
    (tmp_path / "sneaky.toml").write_text("[indicator]\nkind = 'led'\n[debug]\nrecord_dir = '/tmp'\n")
    with pytest.raises(ConfigError) as err:
        profiles.load_profile("sneaky", [tmp_path])
    assert "[debug]" in str(err.value)
    (tmp_path / "broken.toml").write_text("[indicator\n")
    with pytest.raises(ConfigError) as err:
        profiles.load_profile("broken", [tmp_path])
    assert "not valid TOML" in str(err.value)


def test_merge_overlays_tables_and_changes_neither_input():
    base = {"audio": {"device": "", "channels": 0}, "commands": {"a": {"say": "x"}}}
    overlay = {"audio": {"channels": 4}, "indicator": {"kind": "apa102"}}
    merged = profiles.merge(base, overlay)
    assert merged == {"audio": {"device": "", "channels": 4}, "commands": {"a": {"say": "x"}},
                      "indicator": {"kind": "apa102"}}
    assert base == {"audio": {"device": "", "channels": 0}, "commands": {"a": {"say": "x"}}}
    merged["indicator"]["kind"] = "led"
    assert overlay["indicator"]["kind"] == "apa102"
