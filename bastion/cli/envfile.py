"""``--env-file``: environment variables from a ``.env`` file, as uvicorn reads them.

The format is python-dotenv's common subset: ``NAME=value`` lines, blank lines and ``#``
comments, an optional ``export`` in front, values in single quotes (taken as written) or
double quotes (``\\n``, ``\\t``, ``\\"`` and ``\\\\`` escapes, ``${NAME}`` expanded), and unquoted
values (a `` #`` starts a comment; ``${NAME}`` expanded). ``${NAME:-default}`` gives a default.
A variable already set in the environment wins over the file, as with python-dotenv.
A line that is none of these stops start-up naming the file and the line, instead of being
skipped: a skipped line is a setting silently missing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

_LINE = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)")
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


class EnvFileError(ValueError):
    """The file cannot be read or a line of it cannot be understood."""


def read_env_file(path: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables ``path`` sets, in order; ``${NAME}`` looks in ``environ``, then in the
    lines above."""
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except FileNotFoundError:
        raise EnvFileError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EnvFileError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    values: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _LINE.fullmatch(stripped)
        if match is None:
            raise EnvFileError(f"{path}:{number}: expected NAME=value, got {stripped!r}")
        name, raw = match.groups()
        try:
            values[name] = _value(raw, {**values, **environ})
        except ValueError as exc:
            raise EnvFileError(f"{path}:{number}: {name}: {exc}") from None
    return values


def _value(raw: str, known: Mapping[str, str]) -> str:
    if raw[:1] == "'":
        end = raw.find("'", 1)
        if end < 0:
            raise ValueError("the closing ' is missing")
        _only_comment_after(raw[end + 1 :])
        return raw[1:end]
    if raw[:1] == '"':
        out: list[str] = []
        index = 1
        while index < len(raw):
            char = raw[index]
            if char == "\\" and index + 1 < len(raw):
                following = raw[index + 1]
                out.append(_ESCAPES.get(following, "\\" + following))
                index += 2
                continue
            if char == '"':
                _only_comment_after(raw[index + 1 :])
                return _expand("".join(out), known)
            out.append(char)
            index += 1
        raise ValueError('the closing " is missing')
    value = re.split(r"\s#", raw, maxsplit=1)[0].strip()
    return _expand(value, known)


def _only_comment_after(rest: str) -> None:
    rest = rest.strip()
    if rest and not rest.startswith("#"):
        raise ValueError(f"unexpected {rest!r} after the quoted value")


def _expand(value: str, known: Mapping[str, str]) -> str:
    return _REFERENCE.sub(lambda found: known.get(found[1], found[2] or ""), value)


class EnvFileExport:
    """Puts a file's variables into ``os.environ`` for the workers the supervisor forks, and
    takes back, on the next call, those the file no longer sets (a reload re-reads it).
    Variables of the environment the server was started in are never touched."""

    def __init__(self, started_with: Mapping[str, str]) -> None:
        self.started_with = dict(started_with)
        self.exported: set[str] = set()

    def apply(self, values: Mapping[str, str]) -> None:
        for name in self.exported - set(values):
            os.environ.pop(name, None)
        self.exported = {name for name in values if name not in self.started_with}
        for name in self.exported:
            os.environ[name] = values[name]
