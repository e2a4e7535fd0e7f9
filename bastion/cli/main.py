"""``bastion`` on the command line."""

from __future__ import annotations

import argparse
import errno
import importlib.util
import logging
import os
import socket
import ssl
import sys
from collections.abc import Callable, Sequence
from typing import Any

from bastion import __version__
from bastion._compiled import is_compiled
from bastion.cli.balance import add_balance_command, balance_command
from bastion.cli.envfile import EnvFileExport
from bastion.cli.loader import LoadError, add_app_dir, as_handler, check_target, import_target
from bastion.cli.logs import announce, configure_logging, show, where
from bastion.cli.parser import CommandParser, command_parser
from bastion.cli.settings import (
    ConfigError,
    Settings,
    add_arguments,
    cli_values,
    render,
    resolve,
)
from bastion.cli.top import add_top_command, top_command
from bastion.cli.up import add_up_command, up_command
from bastion.engine import ServerConfig, parse_bind, run
from bastion.engine.config import WorkerConfig
from bastion.engine.handler import Handler
from bastion.engine.listeners import BindSpec, systemd_sockets
from bastion.engine.tls import TLSConfig, TLSConfigError, server_context
from bastion.http import Limits
from bastion.observe.accesslog import access_log_observers
from bastion.observe.config import MonitorConfig
from bastion.process.workers import ServePlan, WorkerBootError
from bastion.static.cli import add_serve_command, serve_command
from bastion.websocket.config import WebSocketConfig

logger = logging.getLogger("bastion.server")
_LISTEN_HINTS = {
    errno.EADDRINUSE: " (is another server running there? stop it, or choose another port)",
    errno.EACCES: " (ports below 1024 need root or CAP_NET_BIND_SERVICE; choose another)",
    errno.EADDRNOTAVAIL: " (no interface of this machine has that address)",
}


COMMANDS = ("run", "serve", "balance", "up", "top")


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="bastion",
        usage="%(prog)s COMMAND [OPTIONS]",
        description="Python's http.server API on a production engine.",
    )
    build = "compiled" if is_compiled() else "pure Python"
    parser.add_argument("--version", action="version", version=f"bastion {__version__} ({build})")
    commands = parser.add_subparsers(dest="command", required=True, prog="bastion")
    run_parser = command_parser(
        commands,
        "run",
        "%(prog)s [OPTIONS] APP",
        help="serve an application: bastion run module:app",
        description="Serve an application (a bastion.App, WSGI, ASGI, or an http.server "
        "handler class). Every option can also be set as a BASTION_* environment variable or "
        "in a TOML file given with --config.",
    )
    add_arguments(run_parser)
    add_serve_command(commands).usage = "%(prog)s [OPTIONS] [DIR]"
    add_balance_command(commands)
    add_up_command(commands)
    add_top_command(commands)
    return parser


def server_config(settings: Settings) -> ServerConfig:
    return ServerConfig(
        limits=Limits(
            max_request_line=settings["max_request_line"],
            max_header_count=settings["max_header_count"],
            max_header_bytes=settings["max_header_bytes"],
            max_body_bytes=settings["max_body_size"],
        ),
        header_timeout=settings["header_timeout"],
        body_timeout=settings["body_timeout"],
        keepalive_timeout=settings["keepalive_timeout"],
        write_timeout=settings["write_timeout"],
        graceful_timeout=settings["graceful_timeout"],
        max_connections=settings["max_connections"],
        max_pipelined=settings["max_pipelined"],
        threads=settings["threads"],
        queue_size=settings["queue_size"],
        backlog=settings["backlog"],
        server_header=settings["server_header"],
        proxy_headers=settings["proxy_headers"],
        forwarded_allow_ips=tuple(settings["forwarded_allow_ips"]),
        access_log=settings["access_log"],
        access_log_format=settings["access_log_format"],
        # With a logging configuration the lines go to the bastion.access logger, for it to
        # route; otherwise straight to the file (or stdout), which is cheaper.
        access_log_file=None if settings["log_config"] else settings["access_log_file"],
    )


def worker_config(settings: Settings) -> WorkerConfig:
    return WorkerConfig(
        workers=settings["workers"],
        max_requests=settings["max_requests"],
        max_requests_jitter=settings["max_requests_jitter"],
        worker_timeout=settings["worker_timeout"],
        graceful_timeout=settings["graceful_timeout"],
        reuse_port=settings["reuse_port"],
        reload=settings["reload"],
        reload_paths=tuple(settings["reload_dir"]),
    )


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if settings["tls_cert"] is None:
        return None
    config = TLSConfig(
        cert=settings["tls_cert"],
        key=settings["tls_key"],
        password=settings["tls_key_password"],
        ca=settings["tls_ca"],
        verify_client=settings["tls_verify_client"],
        ciphers=settings["tls_ciphers"],
    )
    try:
        return server_context(config)
    except TLSConfigError as exc:
        raise settings.error(exc.key, exc.reason) from None


def build_plan(settings: Settings, inherited: Sequence[socket.socket] = ()) -> ServePlan:
    """Everything a generation of workers needs, checked; raises :class:`ConfigError`."""
    target = settings["app"]
    if not target:
        raise ConfigError(
            'no application given: bastion run module:app (or app = "module:app" in the '
            "config file, or BASTION_APP)"
        )
    try:
        check_target(target)
    except LoadError as exc:
        # APP on the command line is no flag to name; BASTION_APP or a file's key is.
        if settings.sources["app"] == "cli":
            raise ConfigError(str(exc)) from None
        raise settings.error("app", str(exc)) from None
    load = _loader(settings)
    sources = _source_roots(target, settings["app_dir"]) if settings["reload"] else []
    return engine_plan(settings, load, inherited, sources)


def engine_plan(
    settings: Settings,
    load_handler: Callable[[], Handler],
    inherited: Sequence[socket.socket] = (),
    sources: Sequence[str] = (),
) -> ServePlan:
    """A plan serving whatever ``load_handler`` makes with the engine settings; ``sources``
    are watched with --reload besides --reload-dir and the config file."""
    binds: list[BindSpec] = []
    if settings.sources["bind"] != "default" or not inherited:
        try:
            binds = [parse_bind(bind) for bind in settings["bind"]]
        except ValueError as exc:
            raise settings.error("bind", str(exc)) from None
    try:
        config = server_config(settings)
        workers = worker_config(settings)
    except ValueError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    context = tls_context(settings)
    watch = [*settings["reload_dir"], *sources] if settings["reload"] else []
    if settings.config_file and settings["reload"]:
        watch.append(settings.config_file)
    return ServePlan(
        load_handler=load_handler,
        server=config,
        workers=workers,
        binds=binds,
        ssl_context=context,
        watch=watch,
        monitor=monitor_config(settings),
    )


def monitor_config(settings: Settings) -> MonitorConfig:
    return MonitorConfig(
        admin_bind=settings["admin_bind"],
        admin_token=settings["admin_token"],
        shutdown_delay=settings["shutdown_delay"],
        health_checks=tuple(settings["health_check"]),
        health_check_timeout=settings["health_check_timeout"],
        health_path_prefix=settings["health_path_prefix"],
        max_series=settings["metrics_max_series"],
    )


def _loader(settings: Settings) -> Callable[[], Handler]:
    target, interface, root_path = settings["app"], settings["interface"], settings["root_path"]
    app_dir, factory = settings["app_dir"], settings["factory"]
    websocket = websocket_config(settings)

    def load() -> Handler:
        try:
            app = import_target(target, app_dir=app_dir, factory=factory)
            return as_handler(app, target, interface, root_path, websocket)
        except LoadError as exc:
            raise WorkerBootError(str(exc)) from exc

    return load


def websocket_config(settings: Settings) -> WebSocketConfig:
    """The ``--ws-*`` settings; 0 turns a ping deadline off, as uvicorn's flags do."""
    return WebSocketConfig(
        max_message_size=settings["ws_max_size"],
        max_frame_size=settings["ws_max_size"],
        receive_queue=settings["ws_max_queue"],
        ping_interval=settings["ws_ping_interval"] or None,
        ping_timeout=settings["ws_ping_timeout"] or None,
        compression=settings["ws_per_message_deflate"],
    )


def _source_roots(target: str, app_dir: str = "") -> list[str]:
    """What --reload watches: the application's top-level package, or its module's directory."""
    top = target.partition(":")[0].split(".")[0]
    add_app_dir(app_dir)
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return [os.path.abspath(app_dir or os.curdir)]
    if spec.submodule_search_locations:
        return list(spec.submodule_search_locations)
    if spec.origin and os.path.isfile(spec.origin):
        return [os.path.dirname(spec.origin) or os.getcwd()]
    return [os.path.abspath(app_dir or os.curdir)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    words = sys.argv[1:] if argv is None else list(argv)
    parser.check_command(words, COMMANDS)
    args = parser.parse_args(words)
    if args.command == "serve":
        return serve_command(args)
    if args.command == "top":
        return top_command(args, dict(os.environ))
    if args.command == "balance":
        return balance_command(args)
    if args.command == "up":
        return up_command(args)
    return run_command(args)


def run_command(args: argparse.Namespace) -> int:
    cli = cli_values(args)
    # Not os.environ itself: once --env-file's variables are in it, they would win over the
    # file on a reload as if they had been set outside.
    environ = dict(os.environ)
    return serve(lambda: resolve(cli, environ), build_plan, render if args.print_config else None)


def serve(
    settings_of: Callable[[], Settings],
    plan_of: Callable[[Settings, Sequence[socket.socket]], ServePlan],
    show: Callable[[Settings], str] | None = None,
) -> int:
    """Resolve the settings and run the supervisor over ``plan_of``'s plan until a signal;
    SIGHUP resolves them again, so a changed config file takes effect. With ``show``, print
    what it renders of the settings instead of serving."""
    environment = EnvFileExport(os.environ)
    try:
        settings = settings_of()
        if show is not None:
            sys.stdout.write(show(settings))
            return 0
        configure_logging(settings)
    except ConfigError as exc:
        return _fail(str(exc))
    environment.apply(settings.environment)
    for warning in settings.warnings:
        logger.warning("%s", warning)
    try:
        inherited = systemd_sockets()
    except OSError as exc:
        return _fail(f"socket activation: {exc}")
    try:
        plan = plan_of(settings, inherited)
    except ConfigError as exc:
        return _fail(str(exc))
    if not hasattr(os, "fork"):
        return _run_in_process(plan, inherited)
    from bastion.process.supervisor import Supervisor  # POSIX signals: imported where they exist

    def reload_plan() -> ServePlan:
        fresh = settings_of()
        configure_logging(fresh)
        environment.apply(fresh.environment)
        return plan_of(fresh, inherited)

    supervisor = Supervisor(plan, reload_plan=reload_plan, inherited=inherited, on_ready=_announce)
    return bind_and_run(supervisor)


def bind_and_run(runner: Any) -> int:
    """Bind a Supervisor's (or a ``bastion up`` Stack's) listeners, say where the admin
    listener is, and run it until it stops; the process's exit status."""
    try:
        runner.bind()
    except OSError as exc:
        return _cannot_listen(exc)
    if runner.admin_urls:
        announce(logger, f"admin (health, metrics, dashboard) on {where(runner.admin_urls)}")
    return int(runner.run())


def _cannot_listen(exc: OSError) -> int:
    # The engine's message names the address (an admin listener's adds that it is one).
    named = isinstance(exc.strerror, str) and "cannot listen on" in exc.strerror
    message = exc.strerror if named else f"cannot listen: {exc}"
    print(f"bastion: error: {message}{_LISTEN_HINTS.get(exc.errno or 0, '')}", file=sys.stderr)
    return 1


def _run_in_process(plan: ServePlan, inherited: Sequence[socket.socket]) -> int:
    """Where there is no fork (Windows): one process, no supervisor."""
    if plan.workers.workers > 1 or plan.workers.reload:
        logger.warning("worker processes and --reload need fork(): serving in this process")
    try:
        handler = plan.load_handler()
    except WorkerBootError as exc:
        return _fail(str(exc))
    binds = [str(spec) for spec in plan.binds] + [f"fd://{s.fileno()}" for s in inherited]
    try:
        run(
            handler,
            binds,
            plan.server,
            ssl_context=plan.ssl_context,
            # engine.run logs the addresses itself: only what the log does not show is added.
            on_ready=lambda server: show(logger, f"serving on {where(server.urls)}"),
            observers=access_log_observers(plan.server),
        )
    except OSError as exc:
        return _cannot_listen(exc)
    return 0


def _fail(message: str) -> int:
    print(f"bastion: error: {message}", file=sys.stderr)
    return 2


def _announce(urls: list[str]) -> None:
    announce(logger, f"serving on {where(urls)} (press Ctrl-C to stop)")
