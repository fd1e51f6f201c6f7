"""What a newcomer reads first (README.md and the pages it links) says what the code does: the
replies of "say this, see that", the promise table's rule numbers, the pictures and pages it links."""

from __future__ import annotations

import re

from tallylight.speech.commands import default_commands
from tallylight.speech.grammar import Grammar

WAKE = "okay nabu, "


def _section(text: str, title: str) -> str:
    return text.split(title, 1)[1].split("\n\n", 2)[1]


def test_say_this_see_that_gives_the_replies_the_default_commands_give(repo):
    """The quick start's replies are those the built-in commands say ("Okay, 1 minute timer started."
    was not: the reply says the words heard, "one")."""
    table = _section((repo / "README.md").read_text(), "**Say this, see that.**")
    g = Grammar(default_commands())
    checked = 0
    for line in table.splitlines()[2:]:
        said, seen = (c.strip() for c in line.strip("|").split("|"))
        if not said.startswith(f'"{WAKE}'):
            continue
        m = g.match(said.strip('"').removeprefix(WAKE))
        assert m is not None, f"the default commands do not take {said}"
        for follow_up in re.findall(rf'"{WAKE}([^"]+)"', seen):  # "A minute later it rings: "okay nabu, stop""
            assert g.match(follow_up) is not None, follow_up
        replies = [q for q in re.findall(r'"([^"]+)"', seen) if not q.startswith(WAKE)]
        if not replies:  # the row says what is seen, not heard
            continue
        assert replies[0] == m.reply_text({"time": "10:13 PM"}), said
        checked += 1
    assert checked >= 3, table


def test_the_promise_table_numbers_its_rules_p1_to_p7_without_a_gap(repo):
    text = (repo / "README.md").read_text().split("## The promise", 1)[1].split("\n## ", 1)[0]
    numbers = re.findall(r"^\| (P\d+) \|", text, re.M)
    assert sorted(set(numbers), key=lambda p: int(p[1:])) == [f"P{i}" for i in range(1, 8)], numbers
    assert numbers == sorted(numbers, key=lambda p: int(p[1:])), numbers


def test_every_picture_and_page_the_readme_links_is_in_the_repository(repo):
    text = (repo / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert "docs/wiring.svg" in local and "docs/ledger-page.png" in local
    missing = [t for t in local if not (repo / t).exists()]
    assert not missing, missing


def test_docs_pages_have_real_titles(repo):
    """docs/install.md was titled "(notes for the README)"."""
    for page in sorted((repo / "docs").glob("*.md")):
        first = page.read_text().splitlines()[0]
        assert first.startswith("# ") and "notes" not in first.lower() and "readme" not in first.lower(), (page.name, first)


def test_the_quick_start_gives_commands_that_exist_in_a_clone(repo):
    """A newcomer types what the quick start says: `tallylight ledger --html ...` was "command not
    found" in a clone, where the command is .venv/bin/tallylight (scripts/setup.sh makes it there)."""
    text = (repo / "README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = [c for c in re.findall(r"`([^`]+)`", text.replace("\n", " ")) if re.match(r"(\S*/)?tallylight ", c)]
    assert commands, "the quick start gives no tallylight command"
    assert all(c.startswith(".venv/bin/tallylight ") for c in commands), commands
    setup = (repo / "scripts" / "setup.sh").read_text()
    assert 'TL_VENV="$TL_ROOT/.venv"' in setup, "scripts/setup.sh no longer makes the .venv the README names"
