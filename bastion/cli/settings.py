"""Settings for ``bastion run`` and ``bastion balance``: one table of options, four sources,
one precedence.

Every option is a command-line flag (``--max-body-size``), an environment variable
(``BASTION_MAX_BODY_SIZE``) and a key in a TOML file (``max-body-size`` or ``max_body_size``,
the file named by ``--config`` or ``BASTION_CONFIG``; in a ``pyproject.toml`` under
``[tool.bastion]``). The command line wins over the environment, which wins over the file,
which wins over the defaults. A value that cannot be used stops start-up with a message that
names where it came from and what is wrong with it.
"""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import json
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bastion.cli.envfile import EnvFileError, read_env_file
from bastion.cli.loader import INTERFACES
from bastion.engine.config import ServerConfig, cpu_count, default_threads
from bastion.engine.listeners import parse_bind
from bastion.engine.proxy import TrustedPeers
from bastion.engine.tls import VERIFY_MODES
from bastion.http import Limits
from bastion.observe.accesslog import compile_format
from bastion.websocket.config import WebSocketConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

# "trace" is uvicorn's name for its most verbose level; people bring the habit.
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
ENV_PREFIX = "BASTION_"
# Variables of Bastion's that are not settings, so no typo to warn about: the configuration
# file, and what the build (setup.py) and its CI read.
OTHER_ENV = frozenset(
    ENV_PREFIX + name
    for name in ("CONFIG", "COMPILE", "EXPECT_COMPILED", "DOCS_REQUIRED", "SKIP_MISSING_PYTHON")
)
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_INTEGER = re.compile(r"[+-]?[0-9]+")


class ConfigError(ValueError):
    """A setting cannot be used; the message names it and its source."""


def _check_binds(values: list[str]) -> None:
    if not values:
        raise ValueError("needs at least one address")
    for value in values:
        parse_bind(with_port(value, 0))


def _check_folder(value: str) -> None:
    if value and not os.path.isdir(value):
        raise ValueError(f"{value} is not a folder")


def _check_port(value: int) -> None:
    if value > 65535:
        raise ValueError(f"must be at most 65535, got {value}")


def with_port(address: str, port: int) -> str:
    """``address`` with ``port`` added when it names only a host: ``0.0.0.0``, ``localhost``,
    ``::1`` or ``[::1]`` (gunicorn and uvicorn users write these and expect a port)."""
    if address.startswith(("unix:", "fd://")) or address.strip().isdigit():
        return address
    if address.startswith("["):
        return address if "]:" in address else f"{address}:{port}"
    if address.count(":") > 1:
        return f"[{address}]:{port}"
    return address if ":" in address else f"{address}:{port}"


def _check_format(value: str) -> None:
    compile_format(value)


def _check_networks(values: list[str]) -> None:
    TrustedPeers(values)


def _check_admin_bind(value: str) -> None:
    spec = parse_bind(value)
    if spec.kind not in ("tcp", "unix"):
        raise ValueError("must be host:port or unix:/path")


def _check_checks(values: list[str]) -> None:
    for value in values:
        module, _, name = value.partition(":")
        if not module or not name:
            raise ValueError(f"expected module:function, got {value!r}")


def _check_prefix(value: str) -> None:
    if value and (not value.startswith("/") or value.strip("/") == "" or " " in value):
        raise ValueError(f"expected a path such as /_bastion, got {value!r}")


def admin_is_private(value: str) -> bool:
    """True when an admin address is reachable from this machine only."""
    spec = parse_bind(value)
    if spec.kind == "unix":
        return True
    host = (spec.host or "").strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Option:
    """One setting. ``kind`` is str, path, int, float, bool, list, choice or workers."""

    name: str
    kind: str
    default: Any
    help: str
    group: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    positive: bool = False
    check: Callable[[Any], None] | None = None
    short: str = ""
    aliases: tuple[str, ...] = ()
    metavar: str | None = None
    shown_default: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


def _options() -> tuple[Option, ...]:
    server = ServerConfig()
    limits = Limits()
    websocket = WebSocketConfig()
    return (
        Option("app", "str", None, "the application: module:attribute or module:factory()",
               "application"),
        Option("interface", "choice", "auto", "what the application is; worked out by default",
               "application", choices=INTERFACES),
        Option("root_path", "str", "", "the URL prefix the application is mounted under "
               "(WSGI SCRIPT_NAME, ASGI root_path)", "application"),
        Option("app_dir", "path", "", "import the application from this folder",
               "application", metavar="DIR", check=_check_folder,
               shown_default="the current folder"),
        Option("factory", "bool", False, "APP names a function that makes the application: "
               "call it (the same as writing APP as module:function())", "application"),
        Option("env_file", "path", None, "set the environment variables of this .env file "
               "(NAME=value lines) for the application and for these settings; the "
               "environment wins", "application", metavar="FILE"),
        Option("bind", "list", ["127.0.0.1"], "host:port, [ipv6]:port, unix:/path or fd://N; "
               "a host alone takes --port; repeatable", "listening", short="-b",
               aliases=("--host",), metavar="ADDRESS", check=_check_binds),
        Option("port", "int", 8000, "the port of --bind addresses given without one (0: any "
               "free port)", "listening", minimum=0, check=_check_port),
        Option("backlog", "int", server.backlog, "pending connections the kernel may queue",
               "listening", minimum=1),
        Option("reuse_port", "bool", True, "one SO_REUSEPORT socket per worker on Linux, so "
               "the kernel balances connections", "listening"),
        Option("tls_cert", "path", None, "PEM certificate chain: serve HTTPS", "tls",
               metavar="FILE"),
        Option("tls_key", "path", None, "PEM private key (if not in --tls-cert)", "tls",
               metavar="FILE"),
        Option("tls_key_password", "str", None, "password of an encrypted key (prefer the "
               "environment variable)", "tls", metavar="PASSWORD"),
        Option("tls_ca", "path", None, "CA bundle that client certificates must chain to",
               "tls", metavar="FILE"),
        Option("tls_verify_client", "choice", "none", "ask clients for a certificate", "tls",
               choices=tuple(VERIFY_MODES)),
        Option("tls_ciphers", "str", None, "OpenSSL cipher list for TLS 1.2 (default: "
               "OpenSSL's secure default)", "tls", metavar="CIPHERS"),
        Option("workers", "workers", 1, "worker processes; 0 or auto: one per core",
               "processes", short="-w", metavar="N"),
        Option("max_requests", "int", 0, "replace a worker after this many requests (0: never)",
               "processes", minimum=0),
        Option("max_requests_jitter", "int", 0, "up to this many more, at random per worker",
               "processes", minimum=0),
        Option("worker_timeout", "float", 30.0, "kill a worker whose event loop is blocked "
               "(or that hangs starting) this long", "processes", positive=True),
        Option("graceful_timeout", "float", server.graceful_timeout, "in-flight requests "
               "after SIGTERM/SIGINT/SIGHUP", "processes", minimum=0),
        Option("reload", "bool", False, "restart when the application's source changes "
               "(development; one worker)", "processes"),
        Option("reload_dir", "list", [], "also watch this directory for --reload; repeatable",
               "processes", metavar="DIR"),
        Option("threads", "int", default_threads(), "threads for blocking handlers, per "
               "worker", "concurrency", minimum=1, shown_default="4 per core, at most 32"),
        Option("queue_size", "int", server.queue_size, "blocking requests that may wait for "
               "a thread before 503", "concurrency", minimum=0),
        Option("max_connections", "int", server.max_connections, "connections per worker "
               "before 503", "concurrency", minimum=1),
        Option("max_pipelined", "int", server.max_pipelined, "queued requests per connection "
               "before reading pauses", "concurrency", minimum=1),
        Option("header_timeout", "float", server.header_timeout, "the whole request head "
               "(and a TLS handshake)", "deadlines", positive=True),
        Option("body_timeout", "float", server.body_timeout, "silence while a body arrives",
               "deadlines", positive=True),
        Option("keepalive_timeout", "float", server.keepalive_timeout, "an idle connection "
               "between requests", "deadlines", positive=True),
        Option("write_timeout", "float", server.write_timeout, "a client that stops reading",
               "deadlines", positive=True),
        Option("max_request_line", "int", limits.max_request_line, "bytes (414 beyond)",
               "request limits", minimum=1),
        Option("max_header_count", "int", limits.max_header_count, "header fields (431 "
               "beyond)", "request limits", minimum=1),
        Option("max_header_bytes", "int", limits.max_header_bytes, "bytes of headers (431 "
               "beyond)", "request limits", minimum=1),
        Option("max_body_size", "int", limits.max_body_bytes, "bytes (413 beyond)",
               "request limits", minimum=0),
        Option("proxy_headers", "bool", False, "trust Forwarded / X-Forwarded-For, -Proto, "
               "-Host from --forwarded-allow-ips", "proxy"),
        Option("forwarded_allow_ips", "list", ["127.0.0.1"], "proxies to trust: addresses, "
               "CIDR networks, 'unix', or '*'; comma-separated", "proxy", metavar="IPS",
               check=_check_networks),
        Option("server_header", "bool", True, "send a Server header", "responses"),
        Option("ws_max_size", "int", websocket.max_message_size, "bytes of one WebSocket "
               "message, after decompression (closed with 1009 beyond)", "websocket",
               minimum=1, metavar="BYTES"),
        Option("ws_max_queue", "int", websocket.receive_queue, "WebSocket messages waiting for "
               "the application before reading from the client pauses", "websocket",
               minimum=1, metavar="N"),
        Option("ws_ping_interval", "float", websocket.ping_interval, "seconds between "
               "WebSocket pings (0: none)", "websocket", minimum=0, metavar="S"),
        Option("ws_ping_timeout", "float", websocket.ping_timeout, "seconds a pong may take "
               "before the connection is closed with 1011 (0: no limit)", "websocket",
               minimum=0, metavar="S"),
        Option("ws_per_message_deflate", "bool", websocket.compression, "accept "
               "permessage-deflate compression when a client offers it", "websocket"),
        Option("log_level", "choice", "info", "level of the error log", "logging",
               choices=LOG_LEVELS),
        Option("error_log_file", "path", "-", "where the error log goes ('-': stderr)",
               "logging", metavar="FILE"),
        Option("access_log", "bool", False, "log a line per request", "logging",
               shown_default="on when stdout is a terminal or --access-log-file is set"),
        Option("access_log_format", "str", "common", "common, combined, json, http.server, "
               "or an Apache-style format string", "logging", metavar="FORMAT",
               check=_check_format),
        Option("access_log_file", "path", "-", "where the access log goes ('-': stdout; with "
               "--log-config, the bastion.access logger instead)", "logging", metavar="FILE"),
        Option("log_config", "path", None, "a logging configuration (dictConfig as .json or "
               ".toml, else fileConfig .ini) instead of the above", "logging",
               metavar="FILE"),
        Option("admin_bind", "str", None, "serve /healthz, /readyz, /metrics and the dashboard "
               "here (host:port or unix:/path), from the supervisor", "monitoring",
               metavar="ADDRESS", check=_check_admin_bind),
        Option("admin_token", "str", None, "bearer token the admin listener asks for (required "
               "unless it is on loopback or a unix socket)", "monitoring", metavar="TOKEN"),
        Option("shutdown_delay", "float", 0.0, "seconds to keep serving after readiness fails "
               "on SIGTERM, before draining (for load balancers to notice)", "monitoring",
               minimum=0),
        Option("health_check", "list", [], "a readiness check, module:function (plain or "
               "async); repeatable", "monitoring", metavar="CHECK", check=_check_checks),
        Option("health_check_timeout", "float", 5.0, "seconds each --health-check may take",
               "monitoring", positive=True),
        Option("health_path_prefix", "str", "", "also answer PREFIX/healthz and PREFIX/readyz "
               "on the main listener, before the application", "monitoring", metavar="PREFIX",
               check=_check_prefix),
        Option("metrics_max_series", "int", 2000, "label sets per metric before the rest are "
               "counted under route='__overflow__'", "monitoring", minimum=10),
    )  # fmt: skip


OPTIONS: tuple[Option, ...] = _options()
BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}
# A flag's other names are its names as a variable and a file key too: BASTION_HOST, host.
ALIASES = {
    alias.removeprefix("--").replace("-", "_"): option.name
    for option in OPTIONS
    for alias in option.aliases
}
# What bastion run serves; a command that serves something else has no use for them.
APPLICATION = frozenset(
    {
        "app",
        "interface",
        "root_path",
        "app_dir",
        "factory",
        "ws_max_size",
        "ws_max_queue",
        "ws_ping_interval",
        "ws_ping_timeout",
        "ws_per_message_deflate",
    }
)


@dataclass(frozen=True)
class Command:
    """The options a command takes, and the top-level tables of its config file that are not
    settings but the command's own (left in :attr:`Settings.tables`, unread)."""

    name: str
    options: tuple[Option, ...] = OPTIONS
    tables: frozenset[str] = frozenset()

    def takes(self, name: str) -> bool:
        return any(option.name == name for option in self.options)


RUN = Command("run")


@dataclass
class Settings:
    """The resolved values, and where each came from (for messages and --print-config)."""

    values: dict[str, Any]
    sources: dict[str, str]
    config_file: str | None = None
    warnings: list[str] = field(default_factory=list)
    command: Command = RUN
    tables: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)  # what --env-file sets

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def origin(self, name: str) -> str:
        """How the user wrote the setting, for an error message."""
        source = self.sources.get(name, "default")
        option = BY_NAME.get(name)
        if option is None:
            return name
        if source == "cli":
            return option.flag
        if source == "env":
            return option.env
        if source == "file":
            return f"{self.config_file}: {name}"
        return f"{name} (default)"

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.origin(name)}: {problem}")


# reading values ---------------------------------------------------------------------------


def convert(option: Option, raw: Any, *, text: bool) -> Any:
    """``raw`` as the option's type; ``text`` when it came as a string (flag or variable).

    Raises ``ValueError`` with what is wrong (the caller adds where it came from).
    """
    kind = option.kind
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        if text and isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            return raw.strip().lower() in _TRUE
        raise ValueError(f"expected true or false, got {raw!r}")
    if kind in ("int", "workers"):
        value = _to_int(option, raw, text)
        if kind == "workers":
            if value < 0:
                raise ValueError(f"must be a positive number, 0 or auto, got {raw!r}")
            return value or cpu_count()
        value = _in_range(option, value, raw)
        if option.check is not None:
            option.check(value)
        return value
    if kind == "float":
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            number = float(raw)
        elif text and isinstance(raw, str):
            try:
                number = float(raw.strip())
            except ValueError:
                raise ValueError(f"expected a number of seconds, got {raw!r}") from None
        else:
            raise ValueError(f"expected a number, got {raw!r}")
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {raw!r}")
        return _in_range(option, number, raw)
    if kind == "list":
        if isinstance(raw, str):
            items = [raw]
        elif isinstance(raw, list) and all(isinstance(item, str) for item in raw):
            items = raw
        else:
            raise ValueError(f"expected a list of strings, got {raw!r}")
        values = [part.strip() for item in items for part in item.split(",") if part.strip()]
        if option.check is not None:
            option.check(values)
        return values
    if not isinstance(raw, str):
        raise ValueError(f"expected a string, got {raw!r}")
    if kind == "choice":
        if raw.lower() not in option.choices:
            raise ValueError(f"expected one of {', '.join(option.choices)}, got {raw!r}")
        raw = raw.lower()
    if option.check is not None:
        option.check(raw)
    return raw


def _to_int(option: Option, raw: Any, text: bool) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if text and isinstance(raw, str):
        stripped = raw.strip()
        if option.kind == "workers" and stripped.lower() == "auto":
            return 0
        if _INTEGER.fullmatch(stripped):
            return int(stripped)
    if option.kind == "workers" and raw == "auto":
        return 0
    raise ValueError(f"expected a whole number, got {raw!r}")


def _in_range(option: Option, value: Any, raw: Any) -> Any:
    if option.positive and value <= 0:
        raise ValueError(f"must be positive, got {raw!r}")
    if option.minimum is not None and value < option.minimum:
        if option.minimum == 1:
            raise ValueError(f"must be a positive integer, got {raw!r}")
        raise ValueError(f"must not be below {option.minimum:g}, got {raw!r}")
    return value


def _lookup(key: str) -> Option | None:
    name = key.replace("-", "_").lower()
    return BY_NAME.get(ALIASES.get(name, name))


def _suggest(key: str, names: list[str]) -> str:
    """A near miss among ``names`` (underscored), spelled the way the user spelled ``key``."""
    close = difflib.get_close_matches(key.replace("-", "_"), names, n=1)
    if not close:
        return ""
    return f" (did you mean {close[0].replace('_', '-') if '-' in key else close[0]!r}?)"


def read_config_file(path: str) -> dict[str, Any]:
    """The settings table of a TOML file (``[tool.bastion]`` in a ``pyproject.toml``)."""
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    if os.path.basename(path) == "pyproject.toml":
        table = document.get("tool", {}).get("bastion", {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [tool.bastion] must be a table")
        return table
    return document


def resolve(cli: Mapping[str, Any], environ: Mapping[str, str], command: Command = RUN) -> Settings:
    """Merge command line > environment > config file > defaults, converting and checking."""
    settings = Settings(
        values={option.name: option.default for option in OPTIONS},
        sources=dict.fromkeys(BY_NAME, "default"),
        command=command,
    )
    path = cli.get("config") or environ.get(ENV_PREFIX + "CONFIG") or None
    if path:
        settings.config_file = path
        names = sorted([option.name for option in command.options] + list(command.tables))
        for key, raw in read_config_file(path).items():
            if key in command.tables:
                settings.tables[key] = raw
                continue
            option = _lookup(key)
            if option is not None and not command.takes(option.name):
                raise ConfigError(f"{path}: {key!r} is not a setting of bastion {command.name}")
            if option is None:
                raise ConfigError(f"{path}: unknown setting {key!r}{_suggest(key, names)}")
            settings.sources[option.name] = "file"
            try:
                settings.values[option.name] = convert(option, raw, text=False)
            except ValueError as exc:
                raise ConfigError(f"{path}: {key}: {exc}") from None
    environ = _with_env_file(settings, cli, environ)
    env_names = sorted(option.env for option in command.options)
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key in OTHER_ENV:
            continue
        option = _lookup(key[len(ENV_PREFIX) :])
        if option is None:
            settings.warnings.append(
                f"ignoring unknown environment variable {key}{_suggest(key, env_names)}"
            )
            continue
        if not command.takes(option.name):
            continue  # the environment may be shared with another command
        try:
            settings.values[option.name] = convert(option, raw, text=True)
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}") from None
        settings.sources[option.name] = "env"
    for name, raw in cli.items():
        option = BY_NAME.get(name)
        if option is None:
            continue
        try:
            settings.values[name] = convert(option, raw, text=True)
        except ValueError as exc:
            raise ConfigError(f"{option.flag}: {exc}") from None
        settings.sources[name] = "cli"
    _cross_check(settings)
    return settings


def _stdout_is_a_terminal() -> bool:
    try:
        return os.isatty(sys.stdout.fileno())
    except (AttributeError, ValueError, OSError):
        return False


def _with_env_file(
    settings: Settings, cli: Mapping[str, Any], environ: Mapping[str, str]
) -> Mapping[str, str]:
    """``environ`` with what --env-file sets added (the environment wins), kept in
    ``settings.environment`` for the application's processes too."""
    option = BY_NAME["env_file"]
    if not settings.command.takes(option.name):
        return environ
    for source, value in (("env", environ.get(option.env)), ("cli", cli.get(option.name))):
        if value:
            settings.values[option.name], settings.sources[option.name] = value, source
    path = settings[option.name]
    if not path:
        return environ
    try:
        settings.environment = read_env_file(path, environ)
    except EnvFileError as exc:
        raise settings.error(option.name, str(exc)) from None
    return {**settings.environment, **environ}


def _cross_check(settings: Settings) -> None:
    if settings.sources["access_log"] == "default":
        # Someone watching a terminal wants to see each request, as http.server and uvicorn
        # show them; a service under a process manager pays nothing for lines it did not ask
        # for; a file named for them is asking.
        settings.values["access_log"] = (
            settings["access_log_file"] != "-" or _stdout_is_a_terminal()
        )
    port = settings["port"]
    binds = settings["bind"]
    settings.values["bind"] = [with_port(address, port) for address in binds]
    # Silently ignoring a --port that every address overrides would serve somewhere else
    # than asked; a port that one of them names anyway (as --print-config writes) is no news.
    if settings.sources["port"] != "default" and settings["bind"] == binds:
        named = [parse_bind(address) for address in binds]
        if all(spec.kind != "tcp" or spec.port != port for spec in named):
            raise settings.error(
                "port", f"no address takes it: each of {', '.join(binds)} names its own port"
            )
    if settings["reload"] and settings["workers"] != 1:
        raise settings.error(
            "reload",
            f"cannot be combined with workers = {settings['workers']} (from "
            f"{settings.origin('workers')}): reload runs a single worker",
        )
    for name in ("tls_key", "tls_ca", "tls_key_password"):
        if settings[name] is not None and settings["tls_cert"] is None:
            raise settings.error(name, "is set but tls_cert is not")
    if settings["tls_verify_client"] != "none" and settings["tls_ca"] is None:
        raise settings.error("tls_verify_client", "needs tls_ca, the CA bundle to verify with")
    admin = settings["admin_bind"]
    if admin is not None and not settings["admin_token"] and not admin_is_private(admin):
        raise settings.error(
            "admin_bind",
            f"{admin} is reachable from other machines: set admin_token (--admin-token or "
            "BASTION_ADMIN_TOKEN), or bind the admin listener to 127.0.0.1 or a unix socket",
        )
    if settings["admin_token"] is not None and admin is None:
        raise settings.error("admin_token", "is set but admin_bind is not")
    if settings["health_check"] and admin is None and not settings["health_path_prefix"]:
        # Without either, nothing asks for readiness: the checks would silently never run.
        raise settings.error(
            "health_check", "is set but neither admin_bind nor health_path_prefix is"
        )


# the command line -----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser, command: Command = RUN) -> None:
    """Every option as a flag; unset flags leave no attribute, so other sources can apply."""
    groups: dict[str, Any] = {}
    for option in command.options:
        if option.name == "app":
            parser.add_argument(
                "app",
                nargs="?",
                default=argparse.SUPPRESS,
                metavar="APP",
                help="module:attribute (with --factory, a function that makes the application)",
            )
            continue
        group = groups.get(option.group)
        if group is None:
            group = groups[option.group] = parser.add_argument_group(option.group)
        default = option.shown_default or _show(option.default)
        help_text = f"{option.help} (default: {default}; env {option.env})"
        flags = [option.flag, *([option.short] if option.short else []), *option.aliases]
        if option.kind == "bool":
            group.add_argument(
                *flags,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        elif option.kind == "list":
            group.add_argument(
                *flags,
                action="append",
                default=argparse.SUPPRESS,
                metavar=option.metavar or "VALUE",
                help=help_text,
            )
        else:
            group.add_argument(
                *flags,
                default=argparse.SUPPRESS,
                metavar=None if option.choices else option.metavar or option.name.upper(),
                choices=option.choices or None,
                type=str.lower if option.choices else str,
                help=help_text,
            )
    meta = parser.add_argument_group("configuration")
    meta.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help=f"read settings from a TOML file (env {ENV_PREFIX}CONFIG); "
        "precedence: flags > environment > file > defaults",
    )
    meta.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved settings and where each came from, then exit",
    )


def cli_values(args: argparse.Namespace) -> dict[str, Any]:
    return {key: value for key, value in vars(args).items() if key in BY_NAME or key == "config"}


def _show(value: Any) -> str:
    if value == "":
        return "none"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(value) or "none"
    return str(value)


# --print-config ---------------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    """``value`` written as TOML: booleans, numbers, strings, lists and inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        items = (f"{key} = {toml_value(item)}" for key, item in value.items())
        return "{" + ", ".join(items) + "}"
    return json.dumps(str(value))


def render(settings: Settings) -> str:
    """The resolved settings as a TOML file, each line saying where its value came from."""
    where = {
        "default": "default",
        "cli": "command line",
        "env": "environment",
        "file": settings.config_file or "file",
    }
    lines = [
        f"# bastion {settings.command.name}: resolved settings",
        "# precedence: command line > BASTION_* environment > config file > defaults",
    ]
    for option in settings.command.options:
        value = settings[option.name]
        source = where[settings.sources.get(option.name, "default")]
        if option.name in ("tls_key_password", "admin_token") and value is not None:
            value = "********"
        if value is None:
            lines.append(f"# {option.name.replace('_', '-')} is not set")
        else:
            lines.append(f"{option.name.replace('_', '-')} = {toml_value(value)}  # {source}")
    return "\n".join(lines) + "\n"
