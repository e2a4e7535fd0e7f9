"""``bastion balance``: the reverse proxy and load balancer, served like ``bastion run``.

The engine settings (workers, TLS, limits, deadlines, logs, the admin listener) are
``bastion run``'s, from the same flags, ``BASTION_*`` variables and config file keys, less the
three that name an application. What is balanced comes either from the ``--upstream`` flags
(one route, every request) or from the ``[[route]]`` tables of the config file, never both;
the ``[balancer]`` table holds what is not per route. See docs/balancing.md.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any

from bastion.balancer.config import (
    BalancerConfig,
    HashKey,
    HealthCheck,
    RetryPolicy,
    Route,
    Timeouts,
    Upstream,
    strategy_name,
)
from bastion.balancer.control import BalancerControl
from bastion.balancer.discovery import (
    DiscoveredUpstream,
    Discovery,
    is_discovered,
    latest_sets,
    settings_from_table,
)
from bastion.balancer.health import HealthJob
from bastion.balancer.proxy import Balancer
from bastion.cli import balancefile
from bastion.cli.inplace import LiveBalance, engine_key
from bastion.cli.parser import command_parser
from bastion.cli.settings import (
    APPLICATION,
    OPTIONS,
    Command,
    ConfigError,
    Option,
    Settings,
    add_arguments,
    cli_values,
    convert,
    render,
    resolve,
)
from bastion.engine.handler import Handler
from bastion.process.filewatch import FileWatch
from bastion.process.workers import ServePlan

BALANCE = Command(
    "balance",
    options=tuple(option for option in OPTIONS if option.name not in APPLICATION),
    tables=balancefile.TABLES,
)

# The flags that describe the one route of a balancer without [[route]] tables, and where
# each goes in that route's table.
ROUTE_FLAGS: tuple[tuple[Option, tuple[str, ...]], ...] = (
    (Option("upstream", "str", None, "an upstream server, URL or URL,weight=N (a number >= 0; "
            "default 1); repeatable", "balancing", metavar="URL"), ("upstreams",)),
    (Option("strategy", "str", "round-robin", "round-robin, random, least-connections, p2c, "
            "peak-ewma (p2c-ewma), ring-hash, maglev or bounded-load", "balancing",
            metavar="NAME"), ("strategy",)),
    (Option("hash_key", "str", "client", "what a hashing strategy hashes: client, path, "
            "header:NAME or cookie:NAME", "balancing", metavar="KEY"), ("hash_key",)),
    (Option("connect_timeout", "float", Timeouts().connect, "seconds to open an upstream "
            "connection", "balancing", positive=True, metavar="S"), ("timeouts", "connect")),
    (Option("response_timeout", "float", Timeouts().response, "seconds from a request sent to "
            "its response head", "balancing", positive=True, metavar="S"),
     ("timeouts", "response")),
    (Option("retries", "int", RetryPolicy().attempts - 1, "further attempts on another server "
            "when it is safe (0: none)", "balancing", minimum=0, metavar="N"),
     ("retry", "attempts")),
    (Option("health_path", "str", None, "check every upstream with GET PATH (active health "
            "checks, default intervals)", "balancing", metavar="PATH"), ("health", "path")),
    (Option("upstream_ca", "str", None, "https upstreams: trust this CA file (or directory) "
            "instead of the system's store", "balancing", metavar="FILE"), ("tls", "ca")),
    (Option("upstream_cert", "str", None, "https upstreams: show them this client "
            "certificate (mutual TLS)", "balancing", metavar="FILE"), ("tls", "cert")),
    (Option("upstream_key", "str", None, "the client certificate's key, if not in its file",
            "balancing", metavar="FILE"), ("tls", "key")),
    (Option("upstream_server_name", "str", None, "https upstreams: the name sent (SNI) and "
            "checked in their certificates, instead of their host", "balancing",
            metavar="NAME"), ("tls", "server_name")),
)  # fmt: skip


def add_balance_command(subparsers: Any) -> argparse.ArgumentParser:
    parser = command_parser(
        subparsers,
        "balance",
        "%(prog)s [OPTIONS] (--upstream URL ... | --config FILE)",
        help="reverse proxy and load balancer: bastion balance --upstream URL ...",
        description="Balance requests over upstream servers: --upstream flags for one pool, "
        "or [[route]] tables in a TOML file given with --config. Every engine option of "
        "bastion run applies, also as a BASTION_* environment variable or a key in the file.",
    )
    group = parser.add_argument_group("balancing (command line only; in a file, [[route]])")
    for option, _ in ROUTE_FLAGS:
        group.add_argument(
            option.flag,
            action="append" if option.name == "upstream" else "store",
            default=argparse.SUPPRESS,
            metavar=option.metavar,
            help=f"{option.help} (default: {option.default})" if option.default else option.help,
        )
    add_arguments(parser, BALANCE)
    return parser


def balance_command(args: argparse.Namespace) -> int:
    from bastion.cli.main import serve  # that module registers this command

    cli = cli_values(args)
    names = [option.name for option, _ in ROUTE_FLAGS]
    flags = {name: getattr(args, name) for name in names if hasattr(args, name)}

    running: list[LiveBalance] = []
    watching: list[FileWatch] = []  # the config file, when there is one to watch
    environ = dict(os.environ)  # as bastion run keeps it: --env-file's variables left out

    def settings_of() -> Settings:
        # Read before the file is parsed: an edit made meanwhile is seen as a change.
        before = watching[0].read() if watching else None
        settings = resolve(cli, environ, BALANCE)
        path = settings.config_file
        # With --reload, the source watcher already reloads when the file changes.
        if path is None or settings["reload"] or not hasattr(os, "fork"):
            watching.clear()
        elif watching and watching[0].path == path:
            watching[0].loaded = before
        else:
            watching[:] = [FileWatch(path)]
        return settings

    def plan(settings: Settings, inherited: Sequence[socket.socket]) -> ServePlan:
        built = balance_plan(settings, flags, inherited, running)
        built.jobs.extend(watching)
        return built

    def show(settings: Settings) -> str:
        return render(settings) + balancefile.render(balancer_config(settings, flags))

    return serve(settings_of, plan, show if args.print_config else None)


def balance_plan(
    settings: Settings,
    flags: dict[str, Any],
    inherited: Sequence[socket.socket] = (),
    running: list[LiveBalance] | None = None,
) -> ServePlan:
    """The plan: workers running the Balancer, and the supervisor holding the configuration
    (a reload that changes only it is applied in place: :mod:`bastion.cli.inplace`) and
    running the active health checks once for all of them. ``running`` holds the running
    plan's :class:`LiveBalance`, this one's once built: a server that was down stays down
    across a reload until it passes its checks."""
    from bastion.cli.main import engine_plan  # that module registers this command

    found = discovery_for(settings)
    config = balancer_config(settings, flags, found)
    # Without fork() there is no supervisor: each Balancer checks for itself.
    supervised = hasattr(os, "fork")
    plan = engine_plan(settings, balancer_loader(config, active_checks=not supervised), inherited)
    if not supervised:
        return plan
    running = running if running is not None else []
    previous = running[0].health.checker.verdicts() if running else None
    health = HealthJob(config, initial=previous)
    control = BalancerControl(config, verdicts=lambda: health.checker.verdicts())
    control.on_change.append(health.reconfigure)
    # The configuration first: a worker that starts is sent it before the verdicts about it.
    plan.jobs.extend((control, health))
    plan.adopt = live = LiveBalance(engine_key(settings), control, health, running, plan.jobs)
    running[:] = [live]
    add_discovery(plan, found, config)
    return plan


def balancer_loader(config: BalancerConfig, *, active_checks: bool) -> Callable[[], Handler]:
    """Each worker builds its own Balancer: connection pools and passive signals are per
    process. ``active_checks``: it probes the upstreams itself rather than hearing the
    supervisor's verdicts."""

    def load() -> Handler:
        return Balancer(config, active_checks=active_checks)

    return load


def add_discovery(plan: ServePlan, found: Discovery, config: BalancerConfig) -> None:
    """The job that keeps ``found``'s discovered upstreams current, through the plan's
    BalancerControl (one is added when the plan has none). Without fork() there is no
    supervisor: the names stay as they were resolved at startup."""
    if not found.routes or not hasattr(os, "fork"):
        return
    control = next((job for job in plan.jobs if isinstance(job, BalancerControl)), None)
    if control is None:
        control = BalancerControl(config)
        plan.jobs.insert(0, control)
    job = found.job(control)
    if job is not None:
        plan.jobs.append(job)


def discovery_for(settings: Settings) -> Discovery:
    """The ``[discovery]`` table; names the running plan resolves start from its last
    good sets (a reload waits for no DNS answer it already has)."""
    try:
        return Discovery(settings_from_table(settings.tables.get("discovery")), latest_sets())
    except ValueError as exc:
        path = settings.config_file
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None


def balancer_config(
    settings: Settings, flags: dict[str, Any], discovery: Discovery | None = None
) -> BalancerConfig:
    """What to balance, from the flags or the file; raises :class:`ConfigError`. Upstreams
    to discover are resolved here, once, into ``discovery``."""
    path = settings.config_file
    tables = settings.tables
    if "route" in tables and flags:
        flag = next(option.flag for option, _ in ROUTE_FLAGS if option.name in flags)
        raise ConfigError(
            f"{flag}: cannot be combined with the [[route]] tables of {path}; "
            "set it in a route there instead"
        )
    if "route" not in tables and "upstream" not in flags:
        raise ConfigError(
            "nothing to balance: give --upstream URL (repeatable), or [[route]] tables in a "
            "--config file"
        )
    trusted = tuple(settings["forwarded_allow_ips"]) if settings["proxy_headers"] else ()
    found = discovery if discovery is not None else discovery_for(settings)
    routes = _flag_routes(flags, found) if "upstream" in flags else None
    try:
        if routes is None:
            routes = balancefile.routes(tables["route"], found)
        return balancefile.balancer(routes, tables.get("balancer"), trusted)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None


def _flag_routes(flags: dict[str, Any], discovery: Discovery) -> tuple[Route, ...]:
    """The one route the flags describe, each flag checked under its own name."""
    table: dict[str, Any] = {}
    for option, (key, *sub) in ROUTE_FLAGS:
        if option.name not in flags:
            continue
        raw = flags[option.name]
        try:
            value = _flag_value(option, raw, table)
        except ValueError as exc:
            raise ConfigError(f"{option.flag}: {exc}") from None
        if sub:
            table.setdefault(key, {})[sub[0]] = value
        else:
            table[key] = value
    try:
        return (balancefile.route(table, "default", discovery),)
    except ValueError as exc:
        # Each flag was checked alone; what is left is about the upstreams as a whole.
        problem = str(exc).removeprefix('route "default": ')
        if problem.startswith("tls"):
            raise ConfigError(f"upstream {problem}") from None
        raise ConfigError(f"--upstream: {problem}") from None


def _flag_value(option: Option, raw: Any, table: dict[str, Any]) -> Any:
    if option.name == "upstream":
        return [upstream_flag(text) for text in raw]
    value = convert(option, raw, text=True)
    if option.name == "strategy":
        strategy_name(value)
    elif option.name == "hash_key":
        HashKey(value)
        balancefile.check_hash_key(strategy_name(table.get("strategy", "round-robin")))
    elif option.name == "retries":
        value += 1
    elif option.name == "health_path":
        HealthCheck(path=value).check("")
    return value


def upstream_flag(text: str) -> dict[str, Any]:
    """``URL`` or ``URL,weight=N`` as an upstreams entry of a route table."""
    url, *options = (part.strip() for part in text.split(","))
    entry: dict[str, Any] = {"url": url}
    for option in options:
        name, equals, value = option.partition("=")
        if name.strip() != "weight" or not equals:
            raise ValueError(f"expected URL or URL,weight=N, not {text!r}")
        try:
            entry["weight"] = float(value)
        except ValueError:
            raise ValueError(f"{text!r}: the weight must be a number") from None
    if is_discovered(entry["url"]):
        DiscoveredUpstream(entry["url"], entry.get("weight", 1.0))
    else:
        Upstream(entry["url"], entry.get("weight", 1.0))
    return entry
