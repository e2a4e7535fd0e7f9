"""``bastion`` on the command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from bastion import __version__
from bastion.cli.loader import INTERFACES, LoadError, as_handler, import_target
from bastion.engine import ServerConfig, parse_bind, run
from bastion.http import Limits

_LEVELS = ("critical", "error", "warning", "info", "debug")


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return int(text)


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    defaults = ServerConfig()
    limits = Limits()
    net = parser.add_argument_group("listening")
    net.add_argument(
        "--bind",
        "-b",
        action="append",
        metavar="ADDRESS",
        help="host:port, [ipv6]:port, unix:/path or fd://N; repeatable (default 127.0.0.1:8000)",
    )
    net.add_argument("--backlog", type=_positive_int, default=defaults.backlog)
    work = parser.add_argument_group("concurrency")
    work.add_argument(
        "--threads",
        type=_positive_int,
        default=defaults.threads,
        help="threads for blocking handlers (default %(default)s)",
    )
    work.add_argument(
        "--queue-size",
        type=int,
        default=defaults.queue_size,
        help="blocking requests that may wait for a thread before 503 (default %(default)s)",
    )
    work.add_argument("--max-connections", type=_positive_int, default=defaults.max_connections)
    work.add_argument("--max-pipelined", type=_positive_int, default=defaults.max_pipelined)
    times = parser.add_argument_group("deadlines (seconds)")
    times.add_argument("--header-timeout", type=_positive_float, default=defaults.header_timeout)
    times.add_argument("--body-timeout", type=_positive_float, default=defaults.body_timeout)
    times.add_argument(
        "--keepalive-timeout", type=_positive_float, default=defaults.keepalive_timeout
    )
    times.add_argument("--write-timeout", type=_positive_float, default=defaults.write_timeout)
    times.add_argument("--graceful-timeout", type=float, default=defaults.graceful_timeout)
    sizes = parser.add_argument_group("request limits")
    sizes.add_argument("--max-request-line", type=_positive_int, default=limits.max_request_line)
    sizes.add_argument("--max-header-count", type=_positive_int, default=limits.max_header_count)
    sizes.add_argument("--max-header-bytes", type=_positive_int, default=limits.max_header_bytes)
    sizes.add_argument("--max-body-size", type=int, default=limits.max_body_bytes)
    parser.add_argument(
        "--no-server-header", action="store_true", help="do not send a Server header"
    )
    parser.add_argument("--log-level", choices=_LEVELS, default="info")


def _config_from(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        limits=Limits(
            max_request_line=args.max_request_line,
            max_header_count=args.max_header_count,
            max_header_bytes=args.max_header_bytes,
            max_body_bytes=args.max_body_size,
        ),
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        keepalive_timeout=args.keepalive_timeout,
        write_timeout=args.write_timeout,
        graceful_timeout=args.graceful_timeout,
        max_connections=args.max_connections,
        max_pipelined=args.max_pipelined,
        threads=args.threads,
        queue_size=args.queue_size,
        backlog=args.backlog,
        server_header=not args.no_server_header,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bastion", description="Python's http.server API on a production engine."
    )
    parser.add_argument("--version", action="version", version=f"bastion {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="serve an application: bastion run module:app")
    run_parser.add_argument("target", help="module:attribute, or module:factory() to call it")
    run_parser.add_argument(
        "--interface",
        choices=INTERFACES,
        default="auto",
        help="what the target is; by default it is worked out from the object",
    )
    run_parser.add_argument(
        "--root-path",
        default="",
        help="the URL prefix the application is mounted under (WSGI SCRIPT_NAME, ASGI root_path)",
    )
    _add_server_options(run_parser)
    return parser


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    binds = args.bind or ["127.0.0.1:8000"]
    try:
        for bind in binds:
            parse_bind(bind)
        config = _config_from(args)
        handler = as_handler(
            import_target(args.target), args.target, args.interface, args.root_path
        )
    except (LoadError, ValueError) as exc:
        print(f"bastion: error: {exc}", file=sys.stderr)
        return 2
    try:
        run(handler, binds, config, on_ready=_announce)
    except OSError as exc:
        print(f"bastion: error: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


def _announce(server: object) -> None:
    for url in getattr(server, "urls", []):
        print(f"Bastion serving on {url} (press Ctrl-C to stop)", file=sys.stderr, flush=True)
