"""The ``.env`` format ``--env-file`` reads: python-dotenv's common subset, byte tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.cli.envfile import EnvFileError, read_env_file

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
