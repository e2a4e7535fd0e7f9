"""``bastion up [stack.toml]``: several services and the balancer in front, one supervisor.

The file has three kinds of table. At the top level, engine settings exactly as
``bastion run --config`` reads them: the admin listener and logging, which belong to the
whole stack, and defaults for every group (``workers``, ``access-log``, ...). One
``[[service]]`` table per application: ``name``, ``app``, ``bind``, an optional ``env`` table,
and any engine setting for that service alone. ``[balancer]`` and ``[[route]]`` tables as in
``bastion balance``'s file, where the balancer's ``bind`` (and any engine setting for it) sits
in ``[balancer]``, and an upstream written ``service:NAME`` is that service's first address.

Each service, and the balancer, is a worker group of :class:`bastion.process.stack.Stack`.
The balancer starts only once every service it routes to is serving. The file is read
only: ``BASTION_*`` variables are for ``bastion run`` and ``bastion balance``, and a service's
``env`` table is what its workers see besides the environment ``bastion up`` was started in.
See docs/deploy.md and examples/microservices/.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bastion.balancer.config import BalancerConfig
from bastion.cli.logs import announce, where
from bastion.cli.parser import command_parser
from bastion.cli.settings import (
    APPLICATION,
    BY_NAME,
    OPTIONS,
    Command,
    ConfigError,
    Settings,
    _cross_check,
    convert,
    resolve,
)
from bastion.engine.handler import Handler
from bastion.engine.listeners import BindSpec, parse_bind
from bastion.process.workers import ServePlan

logger = logging.getLogger("bastion.server")

DEFAULT_FILE = "stack.toml"
BALANCER = "balancer"
SERVICE_PREFIX = "service:"
# Settings of the supervisor process itself, so of the whole stack, never of one group.
STACK_WIDE = frozenset(
    {
        "admin_bind",
        "admin_token",
        "shutdown_delay",
        "metrics_max_series",
        "log_level",
        "error_log_file",
        "log_config",
    }
)
UP = Command(
    "up",
    # A service's environment is its env table: an --env-file has no part to play.
    options=tuple(option for option in OPTIONS if option.name not in APPLICATION | {"env_file"}),
    tables=frozenset({"service", "route", BALANCER}),
)
_SERVICE_KEYS = ("name", "env", *sorted(APPLICATION))
_BALANCER_KEYS = tuple(
    f.name for f in dataclasses.fields(BalancerConfig) if f.init and f.name != "routes"
)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_WILDCARDS = frozenset({"", "0.0.0.0", "::", "*"})


@dataclass
class Service:
    name: str
    settings: Settings
    env: dict[str, str]


@dataclass
class StackFile:
    """A checked stack file: everything needed to build each group's plan."""

    path: str
    settings: Settings  # the top level: the stack's own settings, every group's defaults
    services: list[Service]
    balancer: Settings | None  # its tables hold the routes, service names resolved
    routed: tuple[str, ...]  # the services the balancer sends to, so starts after


def add_up_command(subparsers: Any) -> argparse.ArgumentParser:
    parser = command_parser(
        subparsers,
        "up",
        "%(prog)s [--check] [FILE]",
        help="run several services and the balancer in front: bastion up [stack.toml]",
        description="Run every [[service]] of a stack file and the balancer of its [balancer] "
        "and [[route]] tables under one supervisor, with one admin listener. Routes may name "
        "a service as an upstream: service:NAME. SIGHUP re-reads the file.",
    )
    parser.add_argument(
        "stack",
        nargs="?",
        default=DEFAULT_FILE,
        metavar="FILE",
        help=f"the stack file (default: {DEFAULT_FILE} in the current directory)",
    )
    parser.add_argument(
        "--check", action="store_true", help="check the file, print what would run, and exit"
    )
    return parser


# reading the file ---------------------------------------------------------------------------


def load_stack(path: str) -> StackFile:
    """The stack file at ``path``, checked; raises :class:`ConfigError` with one line."""
    if not os.path.exists(path):
        raise ConfigError(f"stack file {path} does not exist")
    base = resolve({"config": path}, {}, UP)
    for name in ("bind",):
        if base.sources[name] == "file":
            raise ConfigError(
                f"{path}: {name}: set it in each [[service]] and in [balancer], not at the top"
            )
    raw = base.tables.get("service")
    if raw is None:
        raise ConfigError(f"{path}: no [[service]] tables: nothing to run")
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise ConfigError(f"{path}: service must be an array of tables: write [[service]]")
    services: list[Service] = []
    for number, table in enumerate(raw, 1):
        service = _service(path, base, table, number)
        if any(s.name == service.name for s in services):
            raise ConfigError(f'{path}: service "{service.name}" is defined twice')
        if service.name == BALANCER:
            raise ConfigError(f'{path}: service "{BALANCER}": the name is the balancer\'s')
        services.append(service)
    balancer: Settings | None = None
    routed: tuple[str, ...] = ()
    if "route" in base.tables:
        balancer, routed = _balancer(path, base, services)
    elif BALANCER in base.tables:
        raise ConfigError(f"{path}: [balancer] without [[route]] tables: nothing to balance")
    _check_ports(path, base, services, balancer)
    return StackFile(path, base, services, balancer, routed)


def _unknown(path: str, where: str, key: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key.replace("-", "_"), known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{path}: {where}: unknown key {key!r}{hint}")


def _group_settings(
    path: str, base: Settings, where: str, table: Mapping[str, Any], extra: tuple[str, ...]
) -> tuple[Settings, dict[str, Any]]:
    """The top-level settings overridden by the engine settings of ``table``, and what else
    ``table`` holds among the ``extra`` keys."""
    values, sources = dict(base.values), dict(base.sources)
    rest: dict[str, Any] = {}
    engine = [option.name for option in UP.options if option.name not in STACK_WIDE]
    for key, raw in table.items():
        if key.replace("-", "_") in extra:  # root-path or root_path, as engine settings
            rest[key.replace("-", "_")] = raw
            continue
        option = BY_NAME.get(key.replace("-", "_"))
        if option is None or option.name not in engine:
            if option is not None and option.name in STACK_WIDE:
                raise ConfigError(
                    f"{path}: {where}: {key} belongs to the whole stack: set it at the top"
                )
            raise _unknown(path, where, key, sorted([*engine, *extra]))
        try:
            values[option.name] = convert(option, raw, text=False)
        except ValueError as exc:
            raise ConfigError(f"{path}: {where}: {key}: {exc}") from None
        sources[option.name] = "file"
    settings = Settings(values, sources, config_file=f"{path}: {where}", command=UP)
    _cross_check(settings)
    return settings, rest


def _service(path: str, base: Settings, table: dict[str, Any], number: int) -> Service:
    name = table.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"{path}: service #{number}: name must be letters, digits, '.', '_' or '-', "
            f"not {name!r}"
        )
    where = f'service "{name}"'
    settings, rest = _group_settings(path, base, where, table, _SERVICE_KEYS)
    directory = os.path.dirname(os.path.abspath(path))
    for key in sorted(APPLICATION):
        if key in rest:
            option = BY_NAME[key]
            raw = rest[key]
            if key == "app_dir" and isinstance(raw, str):
                # Relative to the file, as the application's module is found beside it.
                raw = os.path.join(directory, raw)
            try:
                settings.values[key] = convert(option, raw, text=False)
            except ValueError as exc:
                raise ConfigError(f"{path}: {where}: {key}: {exc}") from None
            settings.sources[key] = "file"
    if not settings["app"]:
        raise ConfigError(f'{path}: {where}: app is required (app = "module:app")')
    if settings.sources["bind"] != "file":
        raise ConfigError(f'{path}: {where}: bind is required (bind = "127.0.0.1:8001")')
    env = rest.get("env", {})
    if not isinstance(env, dict):
        raise ConfigError(f"{path}: {where}: env must be a table of strings, not {env!r}")
    for key, value in env.items():
        if not isinstance(value, str):
            raise ConfigError(f"{path}: {where}: env.{key} must be a string, not {value!r}")
    return Service(name, settings, dict(env))


def _balancer(
    path: str, base: Settings, services: list[Service]
) -> tuple[Settings, tuple[str, ...]]:
    table = base.tables.get(BALANCER, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: balancer must be a table, not {table!r}")
    settings, own = _group_settings(path, base, "[balancer]", table, _BALANCER_KEYS)
    if settings.sources["bind"] != "file":
        raise ConfigError(f'{path}: [balancer]: bind is required (bind = "127.0.0.1:8000")')
    # Errors from the route and balancer tables read "stack.toml: route ...".
    settings.config_file = path
    by_name = {service.name: service for service in services}
    routes = base.tables["route"]
    routed: list[str] = []
    if isinstance(routes, list) and all(isinstance(item, dict) for item in routes):
        routes = [
            _resolved_route(path, route, number, len(routes), by_name, routed)
            for number, route in enumerate(routes, 1)
        ]
    settings.tables = {"route": routes, BALANCER: own}
    return settings, tuple(routed)


def _resolved_route(
    path: str,
    route: dict[str, Any],
    number: int,
    count: int,
    services: dict[str, Service],
    routed: list[str],
) -> dict[str, Any]:
    """``route`` with each ``service:NAME`` upstream replaced by the service's URL."""
    upstreams = route.get("upstreams")
    if not isinstance(upstreams, list):
        return route  # the balancer's own checks say what is wrong
    name = route.get("name", "default" if count == 1 else f"#{number}")
    resolved: list[Any] = []
    for item in upstreams:
        url = item.get("url") if isinstance(item, dict) else item
        if isinstance(url, str) and url.startswith(SERVICE_PREFIX):
            target = url[len(SERVICE_PREFIX) :]
            service = services.get(target)
            if service is None:
                known = ", ".join(sorted(services))
                raise ConfigError(
                    f'{path}: route "{name}": upstreams: no service named {target!r} '
                    f"(the services are {known})"
                )
            try:
                url = service_url(service)
            except ValueError as exc:
                raise ConfigError(f'{path}: route "{name}": {url}: {exc}') from None
            if target not in routed:
                routed.append(target)
            item = {**item, "url": url} if isinstance(item, dict) else url
        resolved.append(item)
    return {**route, "upstreams": resolved}


def service_url(service: Service) -> str:
    """Where the balancer reaches ``service``: its first address, over TCP."""
    spec = parse_bind(service.settings["bind"][0])
    if spec.kind != "tcp":
        raise ValueError(f"the service listens on {spec}, and the balancer connects over TCP")
    if spec.port == 0:
        raise ValueError("the service's port is chosen at start (:0), so it cannot be routed to")
    host = spec.host
    if host in _WILDCARDS:
        host = "::1" if host == "::" else "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if service.settings["tls_cert"] else "http"
    return f"{scheme}://{shown}:{spec.port}"


def _check_ports(
    path: str, base: Settings, services: list[Service], balancer: Settings | None
) -> None:
    """No address twice: two groups on one port would share it through SO_REUSEPORT and
    split each other's connections instead of failing."""
    seen: list[tuple[str, BindSpec]] = []
    owners = [(f'service "{s.name}"', s.settings["bind"]) for s in services]
    if balancer is not None:
        owners.append(("[balancer]", balancer["bind"]))
    if base["admin_bind"] is not None:
        owners.append(("admin-bind", [base["admin_bind"]]))
    for owner, binds in owners:
        for text in binds:
            spec = parse_bind(text)
            for other, seen_spec in seen:
                if _overlap(spec, seen_spec):
                    what = f"port {spec.port}" if spec.kind == "tcp" else str(spec)
                    raise ConfigError(
                        f"{path}: {what} is used twice: {other} ({seen_spec}) and {owner} ({spec})"
                    )
            seen.append((owner, spec))


def _overlap(one: BindSpec, two: BindSpec) -> bool:
    if one.kind != two.kind:
        return False
    if one.kind == "unix":
        return one.path == two.path
    if one.kind == "fd":
        return one.fd == two.fd
    if one.port == 0 or one.port != two.port:
        return False
    return one.host == two.host or one.host in _WILDCARDS or two.host in _WILDCARDS


# building the plans ---------------------------------------------------------------------------


def service_plan(stack: StackFile, service: Service) -> ServePlan:
    from bastion.cli.main import build_plan  # that module registers this command

    plan = build_plan(service.settings)
    return dataclasses.replace(
        plan, load_handler=_in_service(plan.load_handler, service.env, stack.path)
    )


def _in_service(
    load: Callable[[], Handler], env: dict[str, str], path: str
) -> Callable[[], Handler]:
    """In the worker, before the application is imported: its environment, and the stack
    file's directory first on the import path (``app = "users:app"`` beside the file)."""
    directory = os.path.dirname(os.path.abspath(path))

    def load_in_service() -> Handler:
        os.environ.update(env)
        if directory not in sys.path:
            sys.path.insert(0, directory)
        return load()

    return load_in_service


def plans(stack: StackFile, running: list[Any] | None = None) -> dict[str, ServePlan]:
    """Every group's plan, by name: the services in file order, then the balancer.

    ``running`` is kept from one call to the next: through it the balancer's next plan
    finds the running one, so a reload carries its health verdicts over and one that only
    changes routes is applied to the running workers.
    """
    from bastion.cli.balance import balance_plan

    built = {service.name: service_plan(stack, service) for service in stack.services}
    if stack.balancer is not None:
        built[BALANCER] = balance_plan(stack.balancer, {}, running=running)
    return built


# the command ----------------------------------------------------------------------------------


def up_command(args: argparse.Namespace) -> int:
    from bastion.cli.logs import configure_logging
    from bastion.cli.main import bind_and_run, monitor_config

    path = args.stack
    running: list[Any] = []
    try:
        stack = load_stack(path)
        # The supervisor never imports an application, but --reload looks its sources up.
        directory = os.path.dirname(os.path.abspath(path))
        if directory not in sys.path:
            sys.path.insert(0, directory)
        built = plans(stack, running)
        if args.check:
            sys.stdout.write(describe(stack, built))
            return 0
        configure_logging(stack.settings)
    except ConfigError as exc:
        return _fail(str(exc))
    if not hasattr(os, "fork"):
        return _fail("bastion up needs fork(): run each service with bastion run instead")
    from bastion.process.stack import Group, Stack

    def reload() -> dict[str, ServePlan]:
        fresh = load_stack(path)
        configure_logging(fresh.settings)
        return plans(fresh, running)

    groups = [Group(name, plan) for name, plan in built.items() if name != BALANCER]
    if BALANCER in built:
        groups.append(Group(BALANCER, built[BALANCER], needs=stack.routed))
    runner = Stack(groups, monitor_config(stack.settings), reload=reload, on_ready=_announce)
    return bind_and_run(runner)


def describe(stack: StackFile, built: dict[str, ServePlan]) -> str:
    """What ``--check`` prints: each group, where it listens, and what it waits for."""
    lines = [f"# {stack.path}: {len(stack.services)} services"]
    for service in stack.services:
        plan = built[service.name]
        binds = ", ".join(str(spec) for spec in plan.binds)
        lines.append(
            f"service {service.name}: {service.settings['app']} on {binds}, "
            f"{plan.workers.workers} worker(s)"
        )
    balancer = built.get(BALANCER)
    if balancer is not None:
        binds = ", ".join(str(spec) for spec in balancer.binds)
        after = ", ".join(stack.routed) or "nothing"
        lines.append(
            f"balancer: on {binds}, {balancer.workers.workers} worker(s), starts after {after}"
        )
    if stack.settings["admin_bind"] is not None:
        lines.append(f"admin: {stack.settings['admin_bind']}")
    return "\n".join(lines) + "\n"


def _fail(message: str) -> int:
    print(f"bastion: error: {message}", file=sys.stderr)
    return 2


def _announce(urls: dict[str, list[str]]) -> None:
    for name, found in urls.items():
        announce(logger, f"{name} serving on {where(found)}", "Bastion up: ")
    announce(logger, "every service is ready (press Ctrl-C to stop)", "Bastion up: ")
