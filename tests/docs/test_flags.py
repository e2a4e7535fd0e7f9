"""The flags the documentation mentions and the flags the CLI accepts are the same set.

Both directions fail naming the flag: a page that documents a flag no command accepts (or a
command line in a sample that its command would refuse), and a flag a command accepts that
the generated reference would not list.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pytest

from bastion.cli.parser import SPELLED_ELSEWHERE
from tests.docs.pages import DOCS, Mention, documents, mentions

sys.path.insert(0, str(DOCS / "_build"))

import clireference


def refused(found: list[Mention], accepted: dict[str, set[str]], others: set[str]) -> list[str]:
    """What is wrong with ``found``, one line per flag that is not accepted."""
    every = set().union(*accepted.values())
    problems = []
    for mention in found:
        if mention.command is not None:
            if mention.flag not in accepted[mention.command]:
                problems.append(
                    f"{mention.where}: {mention.command} does not accept {mention.flag}"
                )
        elif mention.flag not in every and mention.flag not in others:
            problems.append(f"{mention.where}: no bastion command accepts {mention.flag}")
    return problems


def undocumented(parsers: dict[str, argparse.ArgumentParser], reference: str) -> list[str]:
    """Flags a command accepts that its section of the generated reference does not list."""
    problems = []
    sections = re.split(r"^## ", reference, flags=re.M)
    for words, parser in parsers.items():
        section = next((s for s in sections if s.startswith(f"`{words}`")), "")
        for flag in sorted(clireference.option_strings(parser)):
            if f"`{flag}`" not in section:
                problems.append(f"{words} accepts {flag}, which the CLI reference does not list")
    return problems


@pytest.fixture(scope="module")
def accepted() -> dict[str, set[str]]:
    return {words: clireference.option_strings(p) for words, p in clireference.commands().items()}


def test_every_flag_the_docs_mention_is_accepted(accepted: dict[str, set[str]]) -> None:
    found = [m for path in documents() for m in mentions(path)]
    assert len(found) > 100  # the scan sees the pages
    others = set(SPELLED_ELSEWHERE)
    problems = refused(found, accepted, others)
    assert not problems, "documented but not accepted:\n" + "\n".join(problems)


def test_every_accepted_flag_is_in_the_reference() -> None:
    parsers = clireference.commands()
    problems = undocumented(parsers, clireference.render_cli())
    assert not problems, "accepted but not documented:\n" + "\n".join(problems)
    assert {"bastion run", "bastion serve", "bastion balance", "bastion up", "bastion top"} <= set(
        parsers
    )


def test_every_setting_is_a_configuration_key() -> None:
    from bastion.cli.settings import OPTIONS

    table = clireference.render_config()
    missing = [o.name for o in OPTIONS if f"`{o.name.replace('_', '-')}`" not in table]
    assert not missing, f"settings missing from the configuration reference: {missing}"


def test_a_flag_no_command_accepts_is_named(tmp_path: Path, accepted: dict[str, set[str]]) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Use `--no-such-flag` with care.\n\n"
        "```sh\nbastion run app:app --workers 2 --wokers 3\n```\n\n"
        "    bastion top --admin 127.0.0.1:9100 --interval 1 --bind 127.0.0.1\n"
    )
    problems = refused(list(mentions(page)), accepted, set())
    assert problems == [
        f"{page}:1: no bastion command accepts --no-such-flag",
        f"{page}:4: bastion run does not accept --wokers",
        f"{page}:7: bastion top does not accept --bind",
    ]


def test_a_flag_the_reference_leaves_out_is_named() -> None:
    parsers = clireference.commands()
    parsers["bastion run"].add_argument("--secret-knob", help=argparse.SUPPRESS)
    problems = undocumented(parsers, clireference.render_cli())
    assert problems == ["bastion run accepts --secret-knob, which the CLI reference does not list"]


def test_another_tools_flags_are_allowed_in_a_marked_first_column(
    tmp_path: Path, accepted: dict[str, set[str]]
) -> None:
    page = tmp_path / "page.md"
    table = "| `--ssl-version` | none |\n| `--limit-x` | `--not-ours` |\n"
    page.write_text(table)
    assert len(refused(list(mentions(page)), accepted, set())) == 3
    page.write_text(
        "<!-- flag-check: the first column of each table holds another tool's flags -->\n" + table
    )
    assert refused(list(mentions(page)), accepted, set()) == [
        f"{page}:3: no bastion command accepts --not-ours"
    ]
