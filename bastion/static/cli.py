"""``bastion serve [DIR]``: ``python -m http.server``, grown up.

``add_serve_command(subparsers)`` adds the command to an ``argparse`` sub-parser set and
``serve_command(args)`` runs it; ``main(argv)`` does both for ``python -m bastion.static``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from bastion.engine import ServerConfig, parse_bind, run
from bastion.engine.config import default_threads
from bastion.observe.accesslog import AccessLog
from bastion.static.handler import StaticFiles

_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")  # trace: uvicorn's name
DESCRIPTION = (
    "Serve the files under a directory over HTTP/1.1: listings, ranges, conditional requests, "
    "precompressed .br/.gz siblings, sendfile. Stops cleanly on Ctrl-C."
)


def _port(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}")
    return int(text)


def _positive_int(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments, on any parser."""
    parser.add_argument(
        "dir", nargs="?", metavar="DIR", help="the directory to serve (default: the current one)"
    )
    parser.add_argument(
        "--directory", "-d", metavar="DIR", help="the directory to serve (same as DIR)"
    )
    parser.add_argument(
        "--bind",
        "-b",
        action="append",
        metavar="ADDRESS",
        help="an address (0.0.0.0, ::) or host:port, [ipv6]:port, unix:/path, fd://N; "
        "repeatable (default 127.0.0.1)",
    )
    parser.add_argument(
        "--port",
        "-p",
        type=_port,
        default=8000,
        help="port for addresses given without one (default %(default)s; 0 picks a free one)",
    )
    parser.add_argument(
        "--no-listings", action="store_true", help="answer 404 for directories without an index"
    )
    parser.add_argument(
        "--follow-symlinks",
        action="store_true",
        help="follow symlinks that lead outside the directory (refused by default)",
    )
    parser.add_argument(
        "--cache-control",
        metavar="VALUE",
        help="Cache-Control sent with every file, e.g. 'public, max-age=3600'",
    )
    parser.add_argument(
        "--index",
        default="index.html",
        metavar="NAME",
        help="file served for a directory (default %(default)s; '' for none)",
    )
    parser.add_argument(
        "--no-precompressed",
        action="store_true",
        help="never serve NAME.br / NAME.gz in place of NAME",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=default_threads(),
        help="threads for directory listings and copying reads (default %(default)s)",
    )
    parser.add_argument(
        "--quiet", "-q", action="store_true", help="no access log lines (http.server's, on stderr)"
    )
    parser.add_argument("--log-level", choices=_LEVELS, default="warning", type=str.lower)


def add_serve_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``serve`` to the sub-parsers of a ``bastion`` command line; returns its parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve", help="serve a directory: bastion serve [DIR]", description=DESCRIPTION
    )
    add_arguments(parser)
    return parser


def bind_address(spec: str, port: int) -> str:
    """``spec`` with ``port`` added when it names only a host (``0.0.0.0``, ``::``, ``example``)."""
    if spec.startswith(("unix:", "fd://", "[")):
        return spec
    if spec.count(":") > 1:  # a bare IPv6 address
        return f"[{spec}]:{port}"
    if ":" in spec:
        return spec
    return f"{spec}:{port}"


def serve_command(args: argparse.Namespace) -> int:
    """Run ``bastion serve`` with parsed ``args``; the process's exit status."""
    logging.basicConfig(
        level=logging.DEBUG - 5 if args.log_level == "trace" else args.log_level.upper(),
        format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.dir and args.directory and args.dir != args.directory:
        print("bastion serve: error: give the directory once (DIR or --directory)", file=sys.stderr)
        return 2
    directory = args.directory or args.dir or os.getcwd()
    try:
        binds = [bind_address(spec, args.port) for spec in args.bind or ["127.0.0.1"]]
        for bind in binds:
            parse_bind(bind)
        static = StaticFiles(
            directory,
            listings=not args.no_listings,
            follow_symlinks=args.follow_symlinks,
            cache_control=args.cache_control,
            index=args.index,
            precompressed=not args.no_precompressed,
        )
        config = ServerConfig(threads=args.threads)
    except (OSError, ValueError) as exc:
        hint = ""
        if args.dir and args.dir.isdigit() and not os.path.exists(args.dir):
            hint = f" (to choose the port, use --port {args.dir})"
        print(f"bastion serve: error: {exc}{hint}", file=sys.stderr)
        return 2

    def ready(server: Any) -> None:
        for url in server.urls:
            shown = url + "/" if url.startswith("http") else url
            print(
                f"Bastion serving on {shown} (directory {static.directory}; press Ctrl-C to stop)",
                file=sys.stderr,
                flush=True,
            )

    # What python -m http.server prints for each request, on the same stream.
    observers = [] if args.quiet else [AccessLog("http.server", sys.stderr)]
    try:
        run(static, binds, config, on_ready=ready, observers=observers)
    except OSError as exc:
        # A ListenError names the address itself: cannot listen on 127.0.0.1:8000: ...
        reason = exc if "cannot listen on" in str(exc) else f"cannot listen: {exc}"
        print(f"bastion serve: error: {reason}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were in place
        return 0
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bastion serve", description=DESCRIPTION)
    add_arguments(parser)
    return serve_command(parser.parse_args(argv))
