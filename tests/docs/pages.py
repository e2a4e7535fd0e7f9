"""What the documentation holds: its pages, their code samples, and the flags they mention.

The README counts as a page here. A page marks a sample that is deliberately not run with
a comment on the line before it, ``<!-- sample: skip REASON -->``; other directives say how
to run one (see ``Sample``). A page whose tables list another tool's flags in their first
column says so with
``<!-- flag-check: the first column of each table holds another tool's flags -->``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
FOREIGN_FIRST_COLUMN = "<!-- flag-check: the first column of each table holds another tool's flags"
_FENCE = re.compile(
    r"^(?P<indent> *)```(?P<lang>[\w.+-]*)[^\n]*\n(?P<code>.*?)^(?P=indent)```", re.M | re.S
)
_DIRECTIVE = re.compile(r"<!--\s*sample:\s*(?P<words>.*?)\s*-->\s*$")
_FLAG = re.compile(r"(?<![\w/.-])(--[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*)")
_INLINE = re.compile(r"`([^`\n]+)`")
# A command line of Bastion's, in a shell sample or a unit file: its flags are that command's.
_COMMAND = re.compile(
    r"(?:^|[\s=$])(?:(?:python3?\s+-m\s+)?bastion\s+(?P<sub>run|serve|balance|up|top)"
    r"|python3?\s+-m\s+bastion\.compat)"
    r"(?=\s|$)"
)


def pages() -> list[Path]:
    """Every Markdown page of the site, generated-into ones included."""
    return sorted(path for path in DOCS.rglob("*.md") if "_build" not in path.parts)


def documents() -> list[Path]:
    """What the samples and flag checks read: the site's pages and the README, whose samples
    follow the same conventions."""
    return [*pages(), README]


def name(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


@dataclass
class Sample:
    """A Python code block and how to run it.

    Directives: ``skip REASON`` alone (only its imports run); or, comma-separated,
    ``continues`` (run after the page's previous Python block, whose names it uses);
    ``serve NAME`` (serve the module's ``NAME`` through a real server); ``get PATH`` (the
    request to send, ``/`` by default); ``status N`` (the status expected, 200 by default);
    ``websocket`` (open a WebSocket to the path instead, send ``hello`` and expect it echoed).
    A block that calls ``bastion.engine.run`` is served on a free port with that request,
    never where it says.
    """

    page: str
    line: int
    code: str
    previous: Sample | None = None
    skip: str = ""
    continues: bool = False
    serve: str = ""
    path: str = "/"
    status: int = 200
    websocket: bool = False

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    def source(self) -> str:
        if self.continues and self.previous is not None:
            return self.previous.source() + "\n" + self.code
        return self.code


def _directive(sample: Sample, words: str) -> None:
    if words.startswith("skip"):  # the reason is free text, commas and all
        sample.skip = words.removeprefix("skip").strip() or "no reason given"
        return
    for item in (part.strip() for part in words.split(",")):
        verb, _, rest = item.partition(" ")
        if verb == "continues":
            sample.continues = True
        elif verb == "serve" and rest:
            sample.serve = rest
        elif verb == "get" and rest:
            sample.path = rest
        elif verb == "websocket":
            sample.websocket = True
        elif verb == "status" and rest.isdigit():
            sample.status = int(rest)
        else:
            raise ValueError(f"{sample.id}: unknown sample directive {item!r}")
    if sample.continues and sample.previous is None:
        raise ValueError(f"{sample.id}: 'continues', but no Python block comes before it")


def samples(path: Path) -> Iterator[Sample]:
    text = path.read_text(encoding="utf-8")
    previous: Sample | None = None
    for match in _FENCE.finditer(text):
        if match.group("lang") not in ("python", "py", "python3"):
            continue
        line = text.count("\n", 0, match.start()) + 1
        indent = len(match.group("indent"))
        code = "\n".join(row[indent:] for row in match.group("code").splitlines())
        sample = Sample(name(path), line, code, previous)
        before = text[: match.start()].rstrip().rsplit("\n", 1)[-1]
        directive = _DIRECTIVE.search(before)
        if directive:
            _directive(sample, directive.group("words"))
        previous = sample
        yield sample


@dataclass
class Mention:
    """A flag a page mentions, and which command's it must be (None: any of them)."""

    flag: str
    where: str
    command: str | None = None
    commands: list[str] = field(default_factory=list)


# Pages about other programs as much as Bastion: only Bastion's command lines are checked there.
COMPARES = {"docs/benchmarks.md": "runs peers and benchmark scripts with their own flags"}


def mentions(path: Path) -> Iterator[Mention]:
    """The ``--flags`` of a page: in inline code, and on Bastion's command lines in blocks."""
    text = path.read_text(encoding="utf-8")
    only_commands = name(path) in COMPARES
    foreign_first_column = FOREIGN_FIRST_COLUMN in text
    blocks = [(m.start(), m.end()) for m in _FENCE.finditer(text)]
    offset = 0
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        where = f"{name(path)}:{number}"
        in_block = any(start <= offset < end for start, end in blocks)
        offset += len(line)
        if in_block or line.startswith("    "):
            yield from _command_flags(line, where)
            continue
        if foreign_first_column and line.startswith("|"):
            line = "|" + line.split("|", 2)[-1]
        for span in _INLINE.findall(line):
            command = _COMMAND.search(span)
            if command:
                yield from _command_flags(span, where)
            elif span.lstrip().startswith("-") and not only_commands:
                for flag in _FLAG.findall(span):
                    yield Mention(flag.replace("_", "-") if "_" in flag else flag, where)


def _command_flags(line: str, where: str) -> Iterator[Mention]:
    command = _COMMAND.search(line)
    if command is None:
        return
    words = (
        f"bastion {command.group('sub')}" if command.group("sub") else "python -m bastion.compat"
    )
    rest = line[command.end() :].split("#", 1)[0]
    for flag in _FLAG.findall(rest):
        yield Mention(flag, where, words)
