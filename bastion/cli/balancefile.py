"""The ``[[route]]`` and ``[balancer]`` tables of a ``bastion balance`` config file.

The engine settings at the top of the file are read by :mod:`bastion.cli.settings`; this module
turns the two tables it leaves aside into a :class:`~bastion.balancer.config.BalancerConfig`.
The keys are the dataclasses' field names, read from the dataclasses themselves, so a field
added there is a key here. TOML has no null: a key left out keeps its default, and an optional
table (``health``) left out stays off.

Every problem is a ``ValueError`` with one line naming the key, ``route "api": unknown key
'timeouts.conect' (did you mean 'timeouts.connect'?)``; the command adds the file's name.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any

from bastion.balancer import STRATEGIES, PoolSnapshot, build
from bastion.balancer.config import (
    HASHING,
    BalancerConfig,
    ConnectionLimits,
    HashKey,
    HealthCheck,
    OutlierDetection,
    RetryPolicy,
    Route,
    Timeouts,
    Upstream,
    UpstreamTLS,
    strategy_name,
)
from bastion.balancer.discovery import DiscoveredUpstream, Discovery, is_discovered
from bastion.balancer.tls import check_route
from bastion.cli.settings import toml_value
from bastion.engine.proxy import TrustedPeers

TABLES = frozenset({"route", "balancer", "discovery"})

# The sub-tables of a route, each one of the policy dataclasses.
SECTIONS: dict[str, type] = {
    "timeouts": Timeouts,
    "retry": RetryPolicy,
    "limits": ConnectionLimits,
    "health": HealthCheck,
    "outlier": OutlierDetection,
    "tls": UpstreamTLS,
}
# Keys of a route read by hand rather than by their field's type.
_SPECIAL = frozenset({"upstreams", "hash_key", "strategy_options", *SECTIONS})
_UPSTREAM_KEYS = ("url", "weight")


def _keys(cls: type) -> dict[str, Any]:
    """``{field name: type}`` of the fields a dataclass is built from."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _unknown(key: str, known: list[str]) -> ValueError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ValueError(f"unknown key {key!r}{hint}")


def _check_keys(table: Mapping[str, Any], known: list[str], prefix: str = "") -> None:
    for key in table:
        if key not in known:
            raise _unknown(prefix + key, [prefix + name for name in known])


def _table(key: str, raw: Any) -> Mapping[str, Any]:
    if not isinstance(raw, dict):
        raise ValueError(f"{key} must be a table, not {raw!r}")
    return raw


def _statuses(key: str, raw: Any) -> tuple[int, ...]:
    """Status codes, or classes of them written ``"2xx"``."""
    if not isinstance(raw, list):
        raise ValueError(f"{key} must be a list of status codes, not {raw!r}")
    codes: list[int] = []
    for item in raw:
        if isinstance(item, int) and not isinstance(item, bool):
            codes.append(item)
        elif isinstance(item, str) and len(item) == 3 and item[0] in "12345" and item[1:] == "xx":
            first = int(item[0]) * 100
            codes.extend(range(first, first + 100))
        else:
            raise ValueError(f"{key}: {item!r} is neither a status code nor a class like '2xx'")
    return tuple(dict.fromkeys(codes))


def _value(key: str, raw: Any, hint: Any) -> Any:
    """``raw`` as the field type ``hint`` says, or a ValueError naming ``key``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        if isinstance(raw, bool):
            return raw
        raise ValueError(f"{key} must be true or false, not {raw!r}")
    # true and false are not numbers here, whatever Python thinks.
    number = (int,) if hint is int else (int, float)
    if hint in (int, float) and isinstance(raw, number) and not isinstance(raw, bool):
        return raw
    if hint in (int, float):
        whole = "a whole number" if hint is int else "a number"
        raise ValueError(f"{key} must be {whole}, not {raw!r}")
    if origin is tuple and args == (int, ...):
        return _statuses(key, raw)
    if origin is tuple and args == (str, ...):
        if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
            return tuple(raw)
        raise ValueError(f"{key} must be a list of strings, not {raw!r}")
    if (hint is str or origin is typing.Literal) and isinstance(raw, str):
        return raw
    raise ValueError(f"{key} must be a string, not {raw!r}")


def _dataclass(cls: type, key: str, raw: Any) -> Any:
    """One of the policy dataclasses from its sub-table ``key``."""
    table = _table(key, raw)
    fields = _keys(cls)
    _check_keys(table, list(fields), f"{key}.")
    return cls(
        **{name: _value(f"{key}.{name}", item, fields[name]) for name, item in table.items()}
    )


def _upstreams(raw: Any) -> tuple[list[Upstream], list[DiscoveredUpstream]]:
    """``["http://a:8000", {url = "http://b:8000", weight = 2}]``: the servers, and the
    services to discover (``dns+http://``, ``srv+http://``)."""
    if not isinstance(raw, list):
        raise ValueError(f"upstreams must be a list of URLs, not {raw!r}")
    upstreams: list[Upstream] = []
    discovered: list[DiscoveredUpstream] = []
    for number, item in enumerate(raw, 1):
        if isinstance(item, str):
            if is_discovered(item):
                discovered.append(DiscoveredUpstream(item))
            else:
                upstreams.append(Upstream(item))
            continue
        table = _table(f"upstreams[{number}]", item)
        _check_keys(table, list(_UPSTREAM_KEYS), f"upstreams[{number}].")
        if "url" not in table:
            raise ValueError(f"upstreams[{number}]: url is required")
        url = _value(f"upstreams[{number}].url", table["url"], str)
        weight = _value(f"upstreams[{number}].weight", table.get("weight", 1.0), float)
        if is_discovered(url):
            discovered.append(DiscoveredUpstream(url, weight))
        else:
            upstreams.append(Upstream(url, weight))
    return upstreams, discovered


def strategy_options(strategy: str, raw: Any) -> tuple[tuple[str, float], ...]:
    """The tuning a strategy's constructor takes (``balance_factor``, ``decay_s``, ...),
    checked by building the strategy once over a single server."""
    table = _table("strategy_options", raw)
    tunables = STRATEGIES[strategy].tunables
    options: list[tuple[str, float]] = []
    for name, item in table.items():
        kind = tunables.get(name)
        if kind is None:
            takes = ", ".join(tunables) or "no options"
            raise ValueError(f"strategy_options: {strategy} has no option {name!r} ({takes})")
        options.append((name, _value(f"strategy_options.{name}", item, kind)))
    try:
        build(strategy, PoolSnapshot.of({"127.0.0.1:1": 1.0}), **dict(options))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"strategy_options: {exc}") from None
    return tuple(options)


def check_hash_key(strategy: str) -> None:
    """A hash key is refused with a strategy that hashes nothing, where it would do nothing."""
    if strategy not in HASHING:
        hashing = ", ".join(sorted(HASHING))
        raise ValueError(f"only a hashing strategy ({hashing}) uses a hash key, not {strategy}")


def route(table: Mapping[str, Any], default_name: str, discovery: Discovery | None = None) -> Route:
    """A :class:`Route` from one ``[[route]]`` table; ``discovery`` resolves the services
    it names and keeps what it finds (ValueError naming them when there is none)."""
    name = table.get("name", default_name)
    if not isinstance(name, str) or not name or '"' in name:
        raise ValueError(f"route name must be a non-empty string without quotes, not {name!r}")
    try:
        return _route(table, name, discovery)
    except ValueError as exc:
        message = str(exc)
        if message.startswith('route "'):
            raise
        raise ValueError(f'route "{name}": {message}') from None


def _route(table: Mapping[str, Any], name: str, discovery: Discovery | None) -> Route:
    fields = _keys(Route)
    _check_keys(table, list(fields))
    if "upstreams" not in table:
        raise ValueError("upstreams: at least one upstream is needed")
    upstreams, discovered = _upstreams(table["upstreams"])
    if discovered:
        if discovery is None:
            raise ValueError(f"upstreams: {discovered[0].url}: discovery is not available here")
        upstreams = list(discovery.expand(name, upstreams, discovered))
    values: dict[str, Any] = {"name": name, "upstreams": tuple(upstreams)}
    for key, raw in table.items():
        if key not in _SPECIAL and key != "name":
            values[key] = _value(key, raw, fields[key])
    for key, cls in SECTIONS.items():
        if key in table:
            values[key] = _dataclass(cls, key, table[key])
    try:
        strategy = strategy_name(values.get("strategy", "round-robin"))
    except ValueError as exc:
        raise ValueError(f"strategy: {exc}") from None
    if "hash_key" in table:
        try:
            check_hash_key(strategy)
        except ValueError as exc:
            raise ValueError(f"hash_key: {exc}") from None
        values["hash_key"] = HashKey(_value("hash_key", table["hash_key"], str))
    if "strategy_options" in table:
        values["strategy_options"] = strategy_options(strategy, table["strategy_options"])
    built = Route(**values)
    check_route(built)  # here, so a file that cannot be loaded refuses the configuration
    return built


def routes(raw: Any, discovery: Discovery | None = None) -> tuple[Route, ...]:
    """Every route of the ``route`` array (``[[route]]`` tables)."""
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise ValueError("route must be an array of tables: write each one as [[route]]")
    if len(raw) == 1:
        return (route(raw[0], "default", discovery),)
    return tuple(route(item, f"#{number}", discovery) for number, item in enumerate(raw, 1))


def balancer(
    found: tuple[Route, ...], raw: Any, trusted_proxies: tuple[str, ...] = ()
) -> BalancerConfig:
    """The whole configuration: ``found`` routes and the ``[balancer]`` table (``raw``, None
    when the file has none). ``trusted_proxies`` applies unless the table sets its own."""
    values: dict[str, Any] = {"trusted_proxies": trusted_proxies}
    if raw is not None:
        table = _table("balancer", raw)
        fields = _keys(BalancerConfig)
        del fields["routes"]
        try:
            _check_keys(table, list(fields))
            values.update({key: _value(key, item, fields[key]) for key, item in table.items()})
            TrustedPeers(list(values["trusted_proxies"]))
        except ValueError as exc:
            raise ValueError(f"balancer: {exc}") from None
    try:
        return BalancerConfig(routes=found, **values)
    except ValueError as exc:
        message = str(exc)
        if message.startswith(("forwarding", "request_id")):
            raise ValueError(f"balancer: {message}") from None
        raise


# --print-config ---------------------------------------------------------------------------


def _shown(name: str, value: Any) -> Any:
    """A field's value as the file writes it."""
    if name == "hash_key":
        return value.spec
    if name == "upstreams":
        return [{"url": item.url, "weight": item.weight} for item in value]
    if name == "strategy_options":
        return dict(value)
    if value and isinstance(value, tuple) and all(type(item) is int for item in value):
        return _status_classes(value)
    return value


def _status_classes(codes: tuple[int, ...]) -> list[int | str]:
    shown: list[int | str] = []
    present = set(codes)
    for code in codes:
        first = code - code % 100
        if present.issuperset(range(first, first + 100)):
            label = f"{first // 100}xx"
            if label not in shown:
                shown.append(label)
        else:
            shown.append(code)
    return shown


def _lines(instance: Any) -> list[str]:
    lines = []
    # The name first, for a reader; the rest in the dataclass's order.
    for f in sorted(dataclasses.fields(instance), key=lambda f: f.name != "name"):
        value = getattr(instance, f.name)
        if not f.init or f.name in SECTIONS or f.name == "routes":
            continue
        if f.name == "hash_key" and not instance.hashing:
            continue  # the file refuses a key that would do nothing
        if value is None:
            lines.append(f"# {f.name} is not set")
        elif value != () or f.name != "strategy_options":
            lines.append(f"{f.name} = {toml_value(_shown(f.name, value))}")
    return lines


def render(config: BalancerConfig) -> str:
    """``config`` as the ``[balancer]`` and ``[[route]]`` tables that would load it again."""
    lines = ["", "[balancer]", *_lines(config)]
    for each in config.routes:
        lines += ["", "[[route]]", *_lines(each)]
        for key in SECTIONS:
            section = getattr(each, key)
            if section is None:
                lines += ["", f"# [route.{key}] is not set"]
            else:
                lines += ["", f"[route.{key}]", *_lines(section)]
    return "\n".join(lines) + "\n"
