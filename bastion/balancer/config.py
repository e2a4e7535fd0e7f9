"""What a balancer is told: routes, each with its pool of upstreams and its policies.

Plain frozen dataclasses, checked when built, so the command line, a TOML file and Python code
all make the same objects and meet the same errors. Every ``ValueError`` raised here names the
setting it is about (``route "api": timeouts.connect must be > 0``), which is what the
``bastion balance`` command prints as its one line.

Durations are seconds; ``None`` means no limit where a limit is optional.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from bastion.balancer import STRATEGIES

ForwardingStyle = Literal["both", "x-forwarded", "forwarded", "none"]
_T = TypeVar("_T")
FORWARDING_STYLES: tuple[ForwardingStyle, ...] = ("both", "x-forwarded", "forwarded", "none")

# Names people bring from other balancers, for the strategies Bastion has.
STRATEGY_ALIASES = {
    "p2c-ewma": "peak-ewma",
    "ewma": "peak-ewma",
    "least-conn": "least-connections",
    "least_conn": "least-connections",
    "roundrobin": "round-robin",
    "rr": "round-robin",
    "ketama": "ring-hash",
    "consistent-hash": "ring-hash",
    "bounded-loads": "bounded-load",
}

HASHING = frozenset({"ring-hash", "maglev", "bounded-load"})


def strategy_name(name: str) -> str:
    """The canonical strategy name for ``name`` (an alias or a name from ``STRATEGIES``)."""
    canonical = STRATEGY_ALIASES.get(name, name)
    if canonical not in STRATEGIES:
        known = ", ".join(sorted(STRATEGIES))
        raise ValueError(f"unknown strategy {name!r} (known: {known})")
    return canonical


def _positive(where: str, name: str, value: float | None, *, optional: bool = False) -> None:
    if value is None:
        if not optional:
            raise ValueError(f"{where}{name} is required")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}{name} must be a number, not {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{where}{name} must be > 0, not {value!r}")


def _count(where: str, name: str, value: int, minimum: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{where}{name} must be a whole number >= {minimum}, not {value!r}")


def _share(where: str, name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{where}{name} must be between 0 and 1, not {value!r}")


@dataclass(frozen=True, slots=True)
class Upstream:
    """One upstream server: ``http://host:port`` (or ``https://``), with a weight.

    The key strategies hash and metrics label is ``host:port``, so the same server is the same
    key whatever its URL's spelling of a default port.
    """

    url: str
    weight: float = 1.0
    scheme: str = field(init=False)
    host: str = field(init=False)
    port: int = field(init=False)

    def __post_init__(self) -> None:
        scheme, host, port = parse_upstream_url(self.url)
        object.__setattr__(self, "scheme", scheme)
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "port", port)
        check_weight(self.url, self.weight)

    @property
    def key(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def authority(self) -> bytes:
        """What a request to this upstream names as its Host when the client's is not kept."""
        default = 443 if self.scheme == "https" else 80
        return (self.key if self.port != default else self.key.rsplit(":", 1)[0]).encode()


def check_weight(url: str, weight: object) -> None:
    """ValueError unless ``weight`` is a finite number >= 0 (a bool is not a number here)."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise ValueError(f"upstream {url}: weight must be a number, not {weight!r}")
    if not (math.isfinite(weight) and weight >= 0):
        raise ValueError(f"upstream {url}: weight must be >= 0, not {weight!r}")


def parse_upstream_url(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of an upstream URL; ValueError naming what is wrong."""
    if not isinstance(url, str) or not url:
        raise ValueError(f"upstream {url!r}: expected a URL such as http://10.0.0.2:8000")
    if "://" not in url:
        url = "http://" + url
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"upstream {url}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"upstream {url}: the scheme must be http or https")
    if not parts.hostname:
        raise ValueError(f"upstream {url}: no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"upstream {url}: give only scheme, host and port (no path or user)")
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    if port == 0:
        raise ValueError(f"upstream {url}: port 0 is not a server's port")
    host = parts.hostname
    with contextlib.suppress(ValueError):  # a name stays as it is; an IP is normalised
        host = ipaddress.ip_address(host).compressed
    return parts.scheme, host, port


@dataclass(frozen=True, slots=True)
class Timeouts:
    """``connect``: opening an upstream connection. ``response``: from the request's end
    being sent (its head, for a streamed body) to the response head. ``idle``: silence from
    the upstream while a response is being read. ``total``: the whole attempt, retries
    included (None: no limit). A timeout is a 504 when no response has started."""

    connect: float = 5.0
    response: float = 60.0
    idle: float = 60.0
    total: float | None = None

    def check(self, where: str) -> None:
        _positive(where, "timeouts.connect", self.connect)
        _positive(where, "timeouts.response", self.response)
        _positive(where, "timeouts.idle", self.idle)
        _positive(where, "timeouts.total", self.total, optional=True)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries happen only when safe: the request never reached the upstream (it could not
    connect, or a reused connection closed before taking it), or the method is idempotent and
    the request had no body. Each retry goes to a server not tried yet, and only within the
    budget: retries may be at most ``budget_ratio`` of the requests of the last ten seconds
    plus ``budget_min_per_s`` per second, so a failing pool cannot turn retries into a storm.
    ``per_try_timeout`` bounds each attempt's wait for a response head (None: ``response``).
    ``on_status`` lists upstream statuses that count as a failed attempt worth retrying."""

    attempts: int = 2
    budget_ratio: float = 0.2
    budget_min_per_s: float = 3.0
    per_try_timeout: float | None = None
    on_status: tuple[int, ...] = (502, 503, 504)

    def check(self, where: str) -> None:
        _count(where, "retry.attempts", self.attempts, minimum=1)
        _share(where, "retry.budget_ratio", self.budget_ratio)
        if not (isinstance(self.budget_min_per_s, (int, float)) and self.budget_min_per_s >= 0):
            raise ValueError(f"{where}retry.budget_min_per_s must be >= 0")
        _positive(where, "retry.per_try_timeout", self.per_try_timeout, optional=True)
        for status in self.on_status:
            if isinstance(status, bool) or not isinstance(status, int) or not 500 <= status <= 599:
                raise ValueError(f"{where}retry.on_status: {status!r} is not a 5xx status")


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Per upstream, per worker. ``max_connections``: open connections (0: no limit);
    ``max_pending``: requests waiting for a connection when that limit is reached;
    ``max_requests``: requests in flight (0: no limit). Past a limit the request gets a fast
    503 (circuit breaking) instead of a queue that grows. ``max_idle`` keep-alive connections
    are kept, each for at most ``idle_timeout``."""

    max_connections: int = 0
    max_pending: int = 1024
    max_requests: int = 0
    max_idle: int = 64
    # Below the 5 s keep-alive timeout common among servers (Bastion's, uvicorn's), so it is
    # the balancer that closes an idle connection, not the upstream under a request.
    idle_timeout: float = 4.0

    def check(self, where: str) -> None:
        _count(where, "limits.max_connections", self.max_connections)
        _count(where, "limits.max_pending", self.max_pending)
        _count(where, "limits.max_requests", self.max_requests)
        _count(where, "limits.max_idle", self.max_idle)
        _positive(where, "limits.idle_timeout", self.idle_timeout)


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """Active checks: ``GET path`` every ``interval`` (± ``jitter`` of it), each within
    ``timeout``; a server turns unhealthy after ``fall`` failures in a row and healthy again
    after ``rise`` successes. A success is a status in ``statuses``."""

    path: str = "/"
    interval: float = 5.0
    jitter: float = 0.1
    timeout: float = 2.0
    rise: int = 2
    fall: int = 3
    statuses: tuple[int, ...] = tuple(range(200, 400))
    host: str | None = None

    def check(self, where: str) -> None:
        if not isinstance(self.path, str) or not self.path.startswith("/"):
            raise ValueError(f"{where}health.path must start with '/', not {self.path!r}")
        if any(c in self.path for c in " \r\n\t\x00"):
            raise ValueError(f"{where}health.path must not contain spaces or controls")
        _positive(where, "health.interval", self.interval)
        _share(where, "health.jitter", self.jitter)
        _positive(where, "health.timeout", self.timeout)
        _count(where, "health.rise", self.rise, minimum=1)
        _count(where, "health.fall", self.fall, minimum=1)
        if not self.statuses:
            raise ValueError(f"{where}health.statuses must not be empty")
        for status in self.statuses:
            if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
                raise ValueError(f"{where}health.statuses: {status!r} is not a status code")


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    """Passive checks from real traffic: ``consecutive_failures`` in a row (a 5xx, a failed
    connection, a timeout) eject a server for ``base_ejection`` times the times it was ejected
    (at most ``max_ejection``), with never more than ``max_ejected_share`` of the pool out
    at once. 0 failures turns it off."""

    consecutive_failures: int = 5
    base_ejection: float = 30.0
    max_ejection: float = 300.0
    max_ejected_share: float = 0.5

    def check(self, where: str) -> None:
        _count(where, "outlier.consecutive_failures", self.consecutive_failures)
        _positive(where, "outlier.base_ejection", self.base_ejection)
        _positive(where, "outlier.max_ejection", self.max_ejection)
        if self.max_ejection < self.base_ejection:
            raise ValueError(f"{where}outlier.max_ejection must be >= outlier.base_ejection")
        _share(where, "outlier.max_ejected_share", self.max_ejected_share)


@dataclass(frozen=True, slots=True)
class HashKey:
    """What the hashing strategies hash: ``client`` (address), ``path``, ``header:NAME`` or
    ``cookie:NAME``. A request without the header or cookie falls back to its client address."""

    spec: str = "client"
    kind: str = field(init=False)
    name: str = field(init=False)

    def __post_init__(self) -> None:
        kind, _, name = self.spec.partition(":")
        kind = kind.strip().lower()
        name = name.strip()
        if kind in ("client", "path") and not name:
            pass
        elif kind in ("header", "cookie") and name:
            if not all(33 <= ord(c) < 127 and c not in '()<>@,;:\\"/[]?={}' for c in name):
                raise ValueError(f"hash_key {self.spec!r}: {name!r} is not a valid name")
            if kind == "header":
                name = name.lower()
        else:
            raise ValueError(
                f"hash_key {self.spec!r}: expected client, path, header:NAME or cookie:NAME"
            )
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "name", name)


@dataclass(frozen=True, slots=True)
class UpstreamTLS:
    """How a route's ``https`` upstreams are verified, and what the balancer shows them.

    ``ca``: a PEM file (or a directory of hashed certificates) trusted instead of the
    system's store, for upstreams with certificates from a private CA. ``cert`` and ``key``:
    a client certificate and its key (``key`` empty when the certificate's file holds it),
    for upstreams that require one (mutual TLS). ``server_name``: the name sent (SNI) and
    checked against the upstream's certificate instead of its host, for upstreams addressed
    by IP address. ``verify = false`` accepts any certificate: for testing only.
    """

    ca: str = ""
    cert: str = ""
    key: str = ""
    server_name: str = ""
    verify: bool = True

    def check(self, where: str) -> None:
        if self.key and not self.cert:
            raise ValueError(f"{where}tls.key needs tls.cert, the certificate it belongs to")
        if not self.verify and (self.ca or self.server_name):
            raise ValueError(f"{where}tls.ca and tls.server_name mean nothing with verify = false")
        if self.server_name and not _HOST_NAME.fullmatch(self.server_name):
            raise ValueError(f"{where}tls.server_name {self.server_name!r} is not a host name")


_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


@dataclass(frozen=True, slots=True)
class Route:
    """Requests whose Host matches ``host`` (None: any; ``*.example.com`` matches subdomains)
    and whose path starts with ``path_prefix`` (on a segment boundary) go to ``upstreams``.

    ``strip_prefix`` removes the prefix from the path sent upstream. ``preserve_host`` sends
    the client's Host upstream (the default, as most applications build links from it);
    otherwise the upstream's own address. ``panic_threshold`` and ``slow_start`` are the
    pool's (see docs/balancing.md); ``strategy_options`` go to the strategy's constructor
    (``balance_factor`` for bounded-load, ``decay_s`` for peak-ewma, ...).
    """

    upstreams: tuple[Upstream, ...]
    name: str = "default"
    host: str | None = None
    path_prefix: str = "/"
    strategy: str = "round-robin"
    strategy_options: tuple[tuple[str, float], ...] = ()
    hash_key: HashKey = field(default_factory=HashKey)
    strip_prefix: bool = False
    preserve_host: bool = True
    timeouts: Timeouts = field(default_factory=Timeouts)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    health: HealthCheck | None = None
    outlier: OutlierDetection = field(default_factory=OutlierDetection)
    tls: UpstreamTLS = field(default_factory=UpstreamTLS)
    panic_threshold: float = 0.5
    slow_start: float = 0.0
    request_buffer: int = 65536

    def __post_init__(self) -> None:
        where = f'route "{self.name}": '
        if not self.upstreams:
            raise ValueError(f"{where}upstreams: at least one upstream is needed")
        keys = [upstream.key for upstream in self.upstreams]
        duplicate = next((key for key in keys if keys.count(key) > 1), None)
        if duplicate is not None:
            raise ValueError(f"{where}upstreams: {duplicate} is listed twice")
        if not any(upstream.weight > 0 for upstream in self.upstreams):
            raise ValueError(f"{where}upstreams: every weight is 0, nothing can be sent")
        try:
            object.__setattr__(self, "strategy", strategy_name(self.strategy))
        except ValueError as exc:
            raise ValueError(f"{where}strategy: {exc}") from None
        if not self.path_prefix.startswith("/"):
            raise ValueError(f"{where}path_prefix must start with '/', not {self.path_prefix!r}")
        if self.host is not None and (not self.host or any(c in self.host for c in " /\r\n")):
            raise ValueError(f"{where}host {self.host!r} is not a host name")
        _share(where, "panic_threshold", self.panic_threshold)
        _count(where, "request_buffer", self.request_buffer)
        if not (isinstance(self.slow_start, (int, float)) and self.slow_start >= 0):
            raise ValueError(f"{where}slow_start must be >= 0")
        self.timeouts.check(where)
        self.retry.check(where)
        self.limits.check(where)
        if self.health is not None:
            self.health.check(where)
        self.outlier.check(where)
        self.tls.check(where)

    @property
    def hashing(self) -> bool:
        return self.strategy in HASHING

    def matches_path(self, path: bytes) -> bool:
        prefix = self.path_prefix.encode("latin-1")
        if prefix == b"/" or path == prefix.rstrip(b"/"):
            return True
        if not prefix.endswith(b"/"):
            prefix += b"/"
        return path.startswith(prefix)


@dataclass(frozen=True, slots=True)
class BalancerConfig:
    """Every route, tried in order of specificity (a host before any host, a longer prefix
    before a shorter); ``trusted_proxies`` may set forwarding fields the upstream believes
    (addresses or CIDR networks, ``unix``, ``*``); ``forwarding`` chooses which fields the
    balancer sets; ``request_id`` names the field generated when a request has none (empty:
    none generated)."""

    routes: tuple[Route, ...]
    trusted_proxies: tuple[str, ...] = ()
    forwarding: ForwardingStyle = "both"
    request_id: str = "X-Request-ID"

    def __post_init__(self) -> None:
        if not self.routes:
            raise ValueError("no route and no upstream: give --upstream or a [[route]] table")
        names = [route.name for route in self.routes]
        duplicate = next((name for name in names if names.count(name) > 1), None)
        if duplicate is not None:
            raise ValueError(f'route "{duplicate}": two routes have this name')
        seen: set[tuple[str | None, str]] = set()
        for route in self.routes:
            where = (route.host.lower() if route.host else None, route.path_prefix.rstrip("/"))
            if where in seen:
                raise ValueError(
                    f'route "{route.name}": another route has the same host and path_prefix'
                )
            seen.add(where)
        if self.forwarding not in FORWARDING_STYLES:
            raise ValueError(
                f"forwarding must be one of {', '.join(FORWARDING_STYLES)}, not {self.forwarding!r}"
            )
        if self.request_id and not all(
            33 <= ord(c) < 127 and c not in '()<>@,;:\\"/[]?={}' for c in self.request_id
        ):
            raise ValueError(f"request_id {self.request_id!r} is not a header name")


def single_route(
    urls: Iterable[str], strategy: str = "round-robin", **options: object
) -> BalancerConfig:
    """The configuration ``bastion balance --upstream URL ... --strategy NAME`` describes."""
    upstreams = tuple(Upstream(url) for url in urls)
    return BalancerConfig(routes=(Route(upstreams=upstreams, strategy=strategy, **options),))  # type: ignore[arg-type]


CONFIG_MESSAGE = "balancer-config"


def config_to_data(config: BalancerConfig) -> dict[str, Any]:
    """``config`` as plain JSON values, for the supervisor to send its workers."""
    return _data(config)  # type: ignore[no-any-return]


def config_from_data(data: Mapping[str, Any]) -> BalancerConfig:
    """The configuration :func:`config_to_data` wrote; checked like any other
    (``ValueError`` naming the key), ``TypeError`` for data of the wrong shape."""
    return _build(BalancerConfig, data)


def _data(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            item.name: _data(getattr(value, item.name))
            for item in dataclasses.fields(value)
            if item.init
        }
    if isinstance(value, (tuple, list)):
        return [_data(item) for item in value]
    return value


def _build(cls: type[_T], data: Mapping[str, Any]) -> _T:
    if not isinstance(data, Mapping):
        raise TypeError(f"{cls.__name__}: expected a table, not {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {item.name for item in dataclasses.fields(cls) if item.init}  # type: ignore[arg-type]
    unknown = set(data) - known
    if unknown:
        raise TypeError(f"{cls.__name__}: unknown field {sorted(unknown)[0]!r}")
    return cls(**{name: _typed(hints[name], value) for name, value in data.items()})


def _typed(hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _typed(options[0], value)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected a list, not {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_typed(args[0], item) for item in value)
        return tuple(_typed(arg, item) for arg, item in zip(args, value, strict=True))
    if dataclasses.is_dataclass(hint):
        return _build(hint, value)  # type: ignore[arg-type]
    return value
