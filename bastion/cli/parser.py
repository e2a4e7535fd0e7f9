"""The ``argparse`` parser every ``bastion`` command uses, with errors a newcomer can act on.

People arrive with the flags of the tools they know (uvicorn's ``--ssl-keyfile``, gunicorn's
``--timeout``) and with typos. argparse reports an unknown flag from the top-level parser,
with the top-level usage, because a subcommand hands what it does not know back to its
parent; here the subcommand that was run reports it itself, in one line, with the flag it
probably meant.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Sequence
from typing import Any, NoReturn

# Flags of uvicorn and gunicorn whose Bastion spelling is too far off for a fuzzy match.
SPELLED_ELSEWHERE = {
    "--ssl-certfile": "--tls-cert",
    "--certfile": "--tls-cert",
    "--ssl-keyfile": "--tls-key",
    "--keyfile": "--tls-key",
    "--ssl-keyfile-password": "--tls-key-password",
    "--ssl-ca-certs": "--tls-ca",
    "--ca-certs": "--tls-ca",
    "--ssl-ciphers": "--tls-ciphers",
    "--uds": "--bind unix:PATH",
    "--fd": "--bind fd://N",
    "--timeout": "--worker-timeout",
    "--timeout-keep-alive": "--keepalive-timeout",
    "--keep-alive": "--keepalive-timeout",
    "--timeout-graceful-shutdown": "--graceful-timeout",
    "--limit-max-requests": "--max-requests",
    "--limit-concurrency": "--max-connections",
    "--access-logfile": "--access-log-file",
    "--error-logfile": "--error-log-file",
    "--log-file": "--error-log-file",
    "--log-config-json": "--log-config",
}


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that refuses what it does not know itself, in the words of the
    command that was run. Sub-parsers made with ``add_subparsers`` are of this class too."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(self.unknown(extras))
        return parsed, extras

    def unknown(self, extras: list[str]) -> str:
        """What to say about arguments nothing took: the first flag, else the first word."""
        flag = next((word for word in extras if word.startswith("-") and word != "-"), None)
        if flag is None:
            word = extras[0]
            port = word.isdigit() and "--port" in self._option_string_actions
            hint = f" (to choose the port, use --port {word})" if port else ""
            return f"unexpected argument {word!r}{hint}"
        name = flag.partition("=")[0]
        known = [option for option in self._option_string_actions if option.startswith("--")]
        other = SPELLED_ELSEWHERE.get(name)
        if other is not None and other.split()[0] in known:
            return f"unknown option {name}: Bastion spells it {other}"
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"unknown option {name}{hint}"

    def error(self, message: str) -> NoReturn:
        # The usage line only, never argparse's page of every option: the error is the news.
        usage = self.usage % {"prog": self.prog} if self.usage else self.format_usage()
        usage = usage.strip().removeprefix("usage: ")
        self.exit(
            2,
            f"usage: {usage}   ({self.prog} --help lists every option)\n"
            f"{self.prog}: error: {message}\n",
        )

    def check_command(self, argv: Sequence[str], commands: Sequence[str]) -> None:
        """Refuse a first word that is no command before argparse does, to say what to type:
        uvicorn and gunicorn take the application first, so ``bastion main:app`` is a habit."""
        if not argv:
            self.error(f"give a command: {', '.join(commands)}")
        word = argv[0]
        if word in commands or word in ("-h", "--help", "--version"):
            return
        if word.startswith("-"):
            where = "options go after the command"
            self.error(f"{word} is not an option of {self.prog} itself: {where}")
        if ":" in word:
            self.error(f"{word!r} is not a command; to serve it: {self.prog} run {word}")
        close = difflib.get_close_matches(word, commands, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        self.error(f"unknown command {word!r}{hint}: expected one of {', '.join(commands)}")


def command_parser(commands: Any, name: str, usage: str, **kwargs: Any) -> CommandParser:
    """A subcommand's parser, with a one-line ``usage`` (argparse's would list every flag)."""
    parser: CommandParser = commands.add_parser(name, usage=usage, **kwargs)
    return parser
