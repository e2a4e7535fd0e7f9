"""The ``.env`` format ``--env-file`` reads: python-dotenv's common subset, byte tables."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bastion.cli.envfile import EnvFileError, EnvFileExport, read_env_file

LINES = r"""
# a comment, then a blank line

PLAIN=value
export EXPORTED=yes
SPACED = around the sign
COMMENTED=kept # dropped
HASH=no#comment
SINGLE='as ${PLAIN} written \n # kept'
DOUBLE="line\none \"quoted\" ${PLAIN}"  # dropped
EMPTY=
REFERENCE=${PLAIN}-${OUTSIDE}
DEFAULTED=${UNSET:-fallback}
UNKNOWN=${UNSET}
"""


def test_each_form_of_line(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text(LINES)
    assert read_env_file(str(path), {"OUTSIDE": "env"}) == {
        "PLAIN": "value",
        "EXPORTED": "yes",
        "SPACED": "around the sign",
        "COMMENTED": "kept",
        "HASH": "no#comment",
        "SINGLE": r"as ${PLAIN} written \n # kept",
        "DOUBLE": 'line\none "quoted" value',
        "EMPTY": "",
        "REFERENCE": "value-env",
        "DEFAULTED": "fallback",
        "UNKNOWN": "",
    }


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("NAME\n", "1: expected NAME=value, got 'NAME'"),
        ("OK=1\n2BAD=x\n", "2: expected NAME=value, got '2BAD=x'"),
        ("A='open\n", "1: A: the closing ' is missing"),
        ('A="open\n', '1: A: the closing " is missing'),
        ('A="x" y\n', "1: A: unexpected 'y' after the quoted value"),
    ],
)
def test_a_line_that_is_not_understood_is_named(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / ".env"
    path.write_text(text)
    with pytest.raises(EnvFileError) as caught:
        read_env_file(str(path), {})
    assert str(caught.value) == f"{path}:{problem}"


def test_the_environment_wins_and_a_reload_takes_back_what_the_file_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SET_OUTSIDE", "outside")
    monkeypatch.delenv("FROM_FILE", raising=False)
    monkeypatch.delenv("DROPPED", raising=False)
    export = EnvFileExport(os.environ)
    export.apply({"SET_OUTSIDE": "file", "FROM_FILE": "1", "DROPPED": "1"})
    assert (os.environ["SET_OUTSIDE"], os.environ["FROM_FILE"]) == ("outside", "1")
    export.apply({"FROM_FILE": "2"})  # the file, read again
    assert os.environ["FROM_FILE"] == "2" and "DROPPED" not in os.environ
    export.apply({})
    assert "FROM_FILE" not in os.environ and os.environ["SET_OUTSIDE"] == "outside"
