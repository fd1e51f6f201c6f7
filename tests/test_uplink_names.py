"""Names from Home Assistant: the uplink reads the entities and areas exposed to Assist (with the owner's token,
from the aiohttp fake of Home Assistant's WebSocket API), bounds and cleans them, sends them to the daemon as
ExposedNames, and the daemon rebuilds its grammar with them. They only extend Home Assistant's sentences: a
name that would sound like a local command is dropped and logged, and every local command keeps its meaning.
"""

import asyncio
import logging
import shutil
import tempfile
from pathlib import Path

import pytest
from fake_home_assistant import TOKEN, FakeHomeAssistant
from test_uplink_conversation import FakeDaemon, until
from test_uplink_daemon import Rig, UplinkThread
from test_uplink_daemon import until as until_sync

from tallylight.speech import ha_sentences
from tallylight.speech.commands import default_commands
from tallylight.speech.grammar import Grammar
from tallylight.uplink import messages
from tallylight.uplink.daemon_client import DaemonBridge, cancel_and_wait, names_message
from tallylight.uplink.home_assistant import HomeAssistantClient, HomeAssistantOptions

LOCAL = default_commands()


def heard_as(grammar: Grammar, text: str) -> str | None:
    match = grammar.match(text)
    return match.command.name if match else None


def test_names_from_home_assistant_extend_its_sentences_and_never_take_a_local_phrase():
    built = ha_sentences.build(["kitchen light"], ["kitchen"], LOCAL, exposed_names=["porch lamp", "light", "timer"],
                               exposed_areas=["porch"])
    g = Grammar((*LOCAL, built.command))
    assert heard_as(g, "turn on the porch lamp") == "home_assistant"
    assert heard_as(g, "turn off the porch lamp") == "home_assistant"
    assert heard_as(g, "turn on the kitchen light") == "home_assistant"  # the config's names stay
    assert heard_as(g, "turn on the timer") == "home_assistant"  # a local word, but no clash: kept
    # "light" would make Home Assistant's "turn on [the] {name}" say the config's light_on: it goes, not the
    # sentence (which still carries the other names) and not the local command.
    assert heard_as(g, "turn on the light") == "light_on" and heard_as(g, "turn off the light") == "light_off"
    assert [line for line in built.left_out if "Home Assistant's name" in line] == [
        "Home Assistant's name 'light': 'turn on the light' would be heard as commands.light_on, a local command: "
        "left out"]
    # Without the exposed names the phrases are the same in number: nothing was lost to "light".
    assert built.phrases == ha_sentences.build(["kitchen light"], ["kitchen"], LOCAL).phrases


def test_a_flood_of_names_is_bounded_and_a_flood_of_local_words_is_not_searched():
    local_words = ["on", "off", "stop", "the light", "five", "one", "two", "three", "four", "six", "seven",
                   "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "what", "time"]
    flood = local_words + [f"gadget {chr(97 + i % 26)}{chr(97 + i // 26 % 26)}{chr(97 + i // 676 % 26)}"
                           for i in range(10_000)]
    built = ha_sentences.build([], ["kitchen"], LOCAL, exposed_names=flood)
    g = Grammar((*LOCAL, built.command))
    for local in ("turn on the light", "turn off the light", "stop", "what time is it"):
        assert heard_as(g, local) == heard_as(Grammar(LOCAL), local) is not None, local
    assert any(f"more than {ha_sentences.MAX_NAMES} names" in line for line in built.left_out)
    assert sum(f"more than {ha_sentences.MAX_SUSPECTS} such" in line for line in built.left_out) == 4
    assert heard_as(g, "turn on the gadget aaa") == "home_assistant"


def test_the_uplink_cleans_and_bounds_what_home_assistant_says_before_the_daemon_sees_it():
    raw = (["Porch Lamp", "porch-lamp", "Bob's_Fan", "lamp\x00evil", "x" * 100_000, "lamp 2", "<script>", "Café"]
           + [f"gadget {chr(97 + i % 26)}{chr(97 + i // 26 % 26)}{chr(97 + i // 676 % 26)}" for i in range(10_000)])
    msg, why = names_message(raw, ["Living Room", "living_room", "Garden\nERROR forged"])
    assert msg.names[:3] == ("porch lamp", "bob's fan", "café")
    assert len(msg.names) == messages.MAX_EXPOSED_NAMES and msg.areas == ("living room",)
    assert messages.decode(messages.FrameSplitter().feed(messages.encode(msg))[0], messages.TO_DAEMON_KINDS) == msg
    assert len(why) == 6 and all("\n" not in w and "\x00" not in w and len(w) < 200 for w in why), why
    assert why[-2] == f"{len(raw) - 5 - messages.MAX_EXPOSED_NAMES} more names than the 200 the grammar takes"


def test_the_bridge_reads_the_exposed_names_and_sends_them_to_each_new_daemon_connection(tmp_path):
    async def main():
        ha = FakeHomeAssistant(entities={"light.porch": {"name": "Porch Lamp", "aliases": ["Front Light"]},
                                         "switch.secret": {"name": "Safe Lock", "exposed": False}},
                               areas=[{"name": "Porch", "aliases": ["Veranda"]}])
        await ha.start()
        daemon = FakeDaemon(tmp_path / "d.sock")
        await daemon.start()
        client = HomeAssistantClient(HomeAssistantOptions(ha.url, TOKEN, timeout_s=5))
        bridge = DaemonBridge(daemon.path, "test", retry_s=0.05, max_retry_s=0.1, home_assistant=client)
        link = asyncio.ensure_future(bridge.run())
        names = asyncio.ensure_future(bridge.follow_names(every_s=0.1))
        want = messages.ExposedNames(("porch lamp", "front light"), ("porch", "veranda"))
        await until(lambda: want in daemon.got)
        await asyncio.sleep(0.5)  # five more reads of the same names ...
        assert daemon.got.count(want) == 1  # ... are not sent again
        daemon.writers[-1].close()  # the daemon restarts: its new connection gets them again
        await until(lambda: daemon.got.count(want) == 2)
        kinds = [m["type"] for m in ha.received if m["type"] != "auth"]
        assert {"homeassistant/expose_entity/list", "get_states", "config/entity_registry/get_entries",
                "config/area_registry/list"} <= set(kinds)
        for task in (names, link):
            await cancel_and_wait(task)
        await bridge.close()
        await daemon.close()
        await ha.close()

    asyncio.run(asyncio.wait_for(main(), 60))


@pytest.fixture
def short_dir():
    d = Path(tempfile.mkdtemp(prefix="tl-", dir="/tmp"))  # a unix socket's path: at most 107 bytes
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_home_assistant_exposes_porch_lamp_and_the_daemon_hears_it_while_a_malicious_flood_is_bounded(
        tmp_path, short_dir, synth, caplog):
    from tallylight.speech.understand import make_understander

    import speech

    caplog.set_level(logging.WARNING)
    entities = {"light.aaa_porch": {"name": "Porch Lamp"}, "light.aab_light": {"name": "Light"},
                "light.aac_evil": {"name": "lamp\x00\nERROR forged"}, "light.aad_huge": {"name": "lamp " * 20_000}}
    entities |= {f"switch.flood_{i:05d}": {"name": f"gadget {chr(97 + i % 26)}{chr(97 + i // 26 % 26)}"
                                                   f"{chr(97 + i // 676 % 26)}"} for i in range(10_000)}
    sock = short_dir / "uplink.sock"
    audio = speech.pcm(synth("okay nabu, turn on the porch lamp", lead_s=0.3, tail_s=1.5))
    rig = Rig(tmp_path / "state", sock, muted=False, audio=audio, areas=["kitchen"], understander=make_understander,
              extra={"recognizer": {"engine": "pocketsphinx"}})
    with UplinkThread(sock, tts="none", entities=entities, areas=[{"name": "Porch"}]) as up, rig:
        follow = asyncio.run_coroutine_threadsafe(up.bridge.follow_names(every_s=3600), up.loop)
        until_sync(lambda: "porch lamp" in rig.daemon.exposed_names[0], 60, "the grammar rebuilt with the names")
        names, areas = rig.daemon.exposed_names
        assert len(names) == messages.MAX_EXPOSED_NAMES and areas == ("porch",)
        assert not any("\n" in n or "\x00" in n or len(n) > 60 for n in names)
        grammar = rig.daemon.pipeline.consumer.grammar
        assert heard_as(grammar, "turn on the light") == "light_on"  # HA's "Light" did not take it
        assert heard_as(grammar, "turn on the porch lamp") == "home_assistant"
        rig.mic.speak.set()
        until_sync(lambda: up.ha.runs(), what="Home Assistant asked")
        follow.cancel()
    (run,) = up.ha.runs()
    assert run["input"] == {"text": "turn on the porch lamp"}
    assert any("'light': 'turn on the light' would be heard as commands.light_on" in r.getMessage()
               for r in caplog.records)
    notes = [e for e in rig.ledger() if e["event"] == "home_assistant_names"]
    assert notes and notes[0]["names"] == messages.MAX_EXPOSED_NAMES
    assert up.audio_bytes == 0 and "uploading" not in rig.states and rig.rc == 0 and rig.mic.violations == []
