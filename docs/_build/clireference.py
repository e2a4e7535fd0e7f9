"""The command-line and configuration reference, generated from the parsers the CLI runs.

Every ``bastion`` command's flags are read from the ``argparse`` parser that
``bastion.cli.main.build_parser`` builds, ``python -m bastion.compat``'s from the parser its
``main`` builds, and the configuration keys from ``bastion.cli.settings.OPTIONS``: a flag
added to the CLI appears here without anyone writing a line of documentation, and one
removed disappears.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

from bastion.cli import balance, up
from bastion.cli.main import build_parser
from bastion.cli.settings import APPLICATION, OPTIONS, Option, _show

CLI_MARKER = "<!-- generated: cli -->"
CONFIG_MARKER = "<!-- generated: config -->"


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__(parser.prog)
        self.parser = parser


@contextmanager
def _capturing() -> Iterator[None]:
    def capture(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        raise _Captured(self)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", capture):
        yield


def compat_parser() -> argparse.ArgumentParser:
    """The parser ``python -m bastion.compat`` builds inside its ``main``."""
    from bastion.compat.command import main

    with _capturing():
        try:
            main([])
        except _Captured as captured:
            return captured.parser
    raise RuntimeError("python -m bastion.compat parsed no arguments")


def commands() -> dict[str, argparse.ArgumentParser]:
    """Every command line Bastion accepts, by the words that start it."""
    root = build_parser()
    found: dict[str, argparse.ArgumentParser] = {"bastion": root}
    for action in root._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, parser in action.choices.items():
                found[f"bastion {name}"] = parser
    found["python -m bastion.compat"] = compat_parser()
    return found


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every ``-x``/``--name`` the parser accepts."""
    return {flag for action in parser._actions for flag in action.option_strings}


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _value(action: argparse.Action) -> str:
    if not action.option_strings or action.nargs == 0:
        return ""
    if action.choices:
        return " \\| ".join(f"`{choice}`" for choice in action.choices)
    metavar = action.metavar or action.dest.upper()
    return f"`{metavar}`"


def _help(action: argparse.Action, parser: argparse.ArgumentParser) -> str:
    text = action.help or ""
    if "%(" in text:
        text = text % {**vars(action), "prog": parser.prog}
    return _cell(text)


def _names(action: argparse.Action) -> str:
    if action.option_strings:
        return ", ".join(f"`{flag}`" for flag in action.option_strings)
    return f"`{action.metavar or action.dest.upper()}`"


def render_command(words: str, parser: argparse.ArgumentParser) -> str:
    """One command: its usage, then a table per argument group."""
    usage = parser.format_usage().strip().removeprefix("usage: ")
    lines = [f"## `{words}`", "", f"    {usage}", ""]
    if parser.description:
        lines += [_cell(parser.description), ""]
    for group in parser._action_groups:
        actions = [
            action
            for action in group._group_actions
            if action.help != argparse.SUPPRESS
            and not isinstance(action, argparse._SubParsersAction)
        ]
        if not actions:
            continue
        title = group.title or "arguments"
        lines += [f"**{title}**", "", "| argument | value | what it does |", "| --- | --- | --- |"]
        lines += [
            f"| {_names(action)} | {_value(action)} | {_help(action, parser)} |"
            for action in actions
        ]
        lines.append("")
    return "\n".join(lines)


def render_cli() -> str:
    return "\n".join(render_command(words, parser) for words, parser in commands().items())


def _commands_taking(option: Option) -> str:
    taken = ["run"]
    if option.name not in APPLICATION:
        taken.append("balance")
    if any(other.name == option.name for other in up.UP.options):
        taken.append("up (stack-wide)" if option.name in up.STACK_WIDE else "up")
    return ", ".join(taken)


def render_config() -> str:
    """The settings table: one row per key, with its flag, variable and default."""
    lines = [
        "| key | flag | environment | type | default | commands | what it sets |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for option in OPTIONS:
        key = option.name.replace("_", "-")
        flag = "`APP` (argument)" if option.name == "app" else f"`{option.flag}`"
        kind = " \\| ".join(f"`{c}`" for c in option.choices) if option.choices else option.kind
        default = _cell(option.shown_default or _show(option.default))
        lines.append(
            f"| `{key}` | {flag} | `{option.env}` | {kind} | {default} | "
            f"{_commands_taking(option)} | {_cell(option.help)} |"
        )
    lines += [
        "",
        "`bastion balance` also takes these flags, which describe its one pool of upstreams; "
        "in a file they are keys of a `[[route]]` table instead:",
        "",
        "| flag | `[[route]]` key | default | what it sets |",
        "| --- | --- | --- | --- |",
    ]
    for option, path in balance.ROUTE_FLAGS:
        default = "" if option.default is None else _cell(_show(option.default))
        lines.append(f"| `{option.flag}` | `{'.'.join(path)}` | {default} | {_cell(option.help)} |")
    return "\n".join(lines) + "\n"


def expand(markdown: str) -> str:
    """``markdown`` with the generated tables in place of their markers."""
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, render_cli())
    if CONFIG_MARKER in markdown:
        markdown = markdown.replace(CONFIG_MARKER, render_config())
    return markdown
