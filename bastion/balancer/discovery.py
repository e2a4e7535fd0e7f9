"""Service discovery: upstreams that are DNS names, resolved again as their records expire.

A route's upstream may name a service instead of a server:

- ``dns+http://api.internal:8000``: every A and AAAA address of ``api.internal``, each on
  port 8000;
- ``srv+http://_http._tcp.api.service.consul``: the targets and ports of the SRV records
  (only the lowest priority class; weights from the records), which is how Consul and
  Kubernetes headless Services publish their instances.

Each name becomes a set of concrete :class:`~bastion.balancer.config.Upstream` (``address:port``
keys), merged with the route's other upstreams. :class:`DiscoveryJob` runs in the supervisor
(``ServePlan.jobs``): it resolves with ``dns.asyncresolver`` on the supervisor's loop, so
neither that loop nor any worker ever waits for DNS, and pushes a changed set with
:meth:`BalancerControl.set_upstreams`; workers add new addresses with slow start and drain
the ones that are gone. A name is resolved again when its TTL runs out (clamped to
``min_ttl``..``max_ttl``, a little early at random so many names do not expire together).

A failed resolution (a timeout, SERVFAIL, NXDOMAIN, no records, more than ``max_records``)
changes nothing: the last good set stays until the name resolves again, with one log line
when a name starts failing (or fails differently) and one when it recovers, and a counter by
result in ``/metrics`` (``bastion_discovery_resolutions``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import ipaddress
import logging
import math
import random
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from bastion.balancer.config import Upstream, check_weight
from bastion.observe.aggregate import add_supervisor_metrics

if TYPE_CHECKING:
    from bastion.balancer.control import BalancerControl

logger = logging.getLogger("bastion.error")

Kind = Literal["dns", "srv"]
SCHEMES: dict[str, tuple[Kind, str]] = {
    "dns+http": ("dns", "http"),
    "srv+http": ("srv", "http"),
}
Message = dict[str, Any]


def is_discovered(url: object) -> bool:
    """Does ``url`` name a service to discover (``dns+http://``, ``srv+http://``)?"""
    return isinstance(url, str) and url.split("://", 1)[0].lower() in (*SCHEMES, *_REFUSED)


# TLS to an address found by discovery would be checked against the address, not the name
# the certificate carries; refused until the upstream can carry a server name of its own.
_REFUSED = ("dns+https", "srv+https")


@dataclass(frozen=True, slots=True)
class DiscoveredUpstream:
    """One upstream entry that names a service: ``dns+http://NAME:PORT`` or
    ``srv+http://NAME``, with the ``weight`` each address found gets (for SRV, multiplied
    by the record's weight)."""

    url: str
    weight: float = 1.0
    kind: Kind = field(init=False)
    scheme: str = field(init=False)
    name: str = field(init=False)
    port: int = field(init=False)

    def __post_init__(self) -> None:
        kind, scheme, name, port = parse_discovery_url(self.url)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "scheme", scheme)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "port", port)
        check_weight(self.url, self.weight)


def parse_discovery_url(url: str) -> tuple[Kind, str, str, int]:
    """``(kind, scheme, name, port)``; the port is 0 for SRV (the records give it)."""
    prefix, _, rest = url.partition("://")
    prefix = prefix.lower()
    if prefix in _REFUSED:
        raise ValueError(f"upstream {url}: discovery serves plain http upstreams only")
    if prefix not in SCHEMES:
        raise ValueError(f"upstream {url}: expected dns+http://NAME:PORT or srv+http://NAME")
    kind, scheme = SCHEMES[prefix]
    try:
        parts = urlsplit(f"{scheme}://{rest}")
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"upstream {url}: {exc}") from None
    host = parts.hostname
    if not host:
        raise ValueError(f"upstream {url}: no name to resolve")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"upstream {url}: give only scheme, name and port (no path or user)")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        raise ValueError(f"upstream {url}: {host} is an address, not a name: write http://")
    try:
        dns.name.from_text(host)
    except dns.exception.DNSException as exc:
        raise ValueError(f"upstream {url}: {host!r} is not a DNS name ({exc})") from None
    if kind == "srv":
        if port is not None:
            raise ValueError(f"upstream {url}: the SRV records give the ports; write no port")
        return kind, scheme, host, 0
    if port == 0:
        raise ValueError(f"upstream {url}: port 0 is not a server's port")
    return kind, scheme, host, port if port is not None else 80


def _positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"discovery.{name} must be a number, not {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"discovery.{name} must be > 0, not {value!r}")


@dataclass(frozen=True, slots=True)
class DiscoverySettings:
    """The ``[discovery]`` table. ``nameserver``: ``"ADDRESS"`` or ``"ADDRESS:PORT"``
    (``"[::1]:53"``) to ask instead of the system's resolvers (``/etc/resolv.conf``).
    A name is resolved again after its TTL, but never sooner than ``min_ttl`` nor later than
    ``max_ttl``, up to ``jitter`` of it early; after a failure, again after ``retry``.
    Each query has ``timeout``; more than ``max_records`` addresses for one name is a
    failure (the set is kept as it was)."""

    nameserver: str | None = None
    timeout: float = 2.0
    min_ttl: float = 1.0
    max_ttl: float = 300.0
    jitter: float = 0.1
    retry: float = 5.0
    max_records: int = 256

    def __post_init__(self) -> None:
        for name in ("timeout", "min_ttl", "max_ttl", "retry"):
            _positive(name, getattr(self, name))
        if self.max_ttl < self.min_ttl:
            raise ValueError("discovery.max_ttl must be >= discovery.min_ttl")
        jitter = self.jitter
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0 <= jitter < 1:
            raise ValueError(f"discovery.jitter must be >= 0 and < 1, not {jitter!r}")
        count = self.max_records
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"discovery.max_records must be a whole number >= 1, not {count!r}")
        if self.nameserver is not None:
            self.address()

    def address(self) -> tuple[str, int] | None:
        """``(address, port)`` of ``nameserver``, or None for the system's resolvers."""
        text = self.nameserver
        if text is None:
            return None
        host, port = text, 53
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            if rest:
                port = _port(text, rest)
        elif text.count(":") == 1:
            host, _, rest = text.partition(":")
            port = _port(text, ":" + rest)
        try:
            return ipaddress.ip_address(host).compressed, port
        except ValueError:
            raise ValueError(
                f"discovery.nameserver {text!r}: expected an address, ADDRESS:PORT or [V6]:PORT"
            ) from None


def _port(text: str, rest: str) -> int:
    digits = rest[1:]
    if not rest.startswith(":") or not digits.isascii() or not digits.isdigit() or len(digits) > 5:
        raise ValueError(f"discovery.nameserver {text!r}: bad port")
    port = int(digits)
    if not 0 < port < 65536:
        raise ValueError(f"discovery.nameserver {text!r}: bad port")
    return port


# resolving ----------------------------------------------------------------------------------


class LookupFailed(Exception):
    """A resolution that gave no usable set; ``reason`` is the metric's ``result`` label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Found:
    """What one name resolved to: upstreams by key, and how long the answer may be kept."""

    upstreams: dict[str, Upstream]
    ttl: float


class Lookup:
    """Resolves discovered upstreams with ``dns.asyncresolver`` (no cache of its own: each
    lookup asks, so a TTL that ran out is a fresh answer)."""

    def __init__(self, settings: DiscoverySettings) -> None:
        self.settings = settings
        address = settings.address()
        resolver = dns.asyncresolver.Resolver(configure=address is None)
        if address is not None:
            resolver.nameservers = [address[0]]
            resolver.port = address[1]
        # EDNS lets a set of a few dozen addresses come back over UDP; bigger ones are
        # truncated there and fetched again over TCP by the resolver.
        resolver.use_edns(0, 0, 1232)
        self.resolver = resolver

    async def find(self, target: DiscoveredUpstream) -> Found:
        if target.kind == "srv":
            return await self._srv(target)
        addresses, ttl = await self._addresses(target.name)
        upstreams: dict[str, Upstream] = {}
        for address in addresses:
            upstream = _upstream(target.scheme, address, target.port, target.weight)
            upstreams[upstream.key] = upstream
        return Found(_sorted(upstreams), ttl)

    async def _query(self, name: str, rdtype: str) -> dns.resolver.Answer | None:
        """The answer, None when the name exists without records of this type."""
        try:
            return await self.resolver.resolve(
                dns.name.from_text(name), rdtype, lifetime=self.settings.timeout, search=False
            )
        except dns.resolver.NoAnswer:
            return None
        except dns.resolver.NXDOMAIN:
            raise LookupFailed("nxdomain", f"{name} does not exist (NXDOMAIN)") from None
        except dns.exception.Timeout:
            raise LookupFailed(
                "timeout", f"no answer for {name} {rdtype} within {self.settings.timeout:g} s"
            ) from None
        except dns.resolver.NoNameservers as exc:
            raise LookupFailed("servfail", f"{name} {rdtype}: {_short(exc)}") from None
        except dns.exception.DNSException as exc:
            raise LookupFailed("error", f"{name} {rdtype}: {_short(exc)}") from None

    async def _addresses(self, name: str) -> tuple[list[str], float]:
        """Every A and AAAA address of ``name`` and their TTL; LookupFailed when either query
        fails (half an answer would drop the other family's servers) or finds nothing."""
        answers = await asyncio.gather(
            self._query(name, "A"), self._query(name, "AAAA"), return_exceptions=True
        )
        addresses: list[str] = []
        ttl = math.inf
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
            if answer is None or answer.rrset is None:
                continue
            ttl = min(ttl, _ttl(answer))
            addresses.extend(ipaddress.ip_address(r.address).compressed for r in answer.rrset)
        if not addresses:
            raise LookupFailed("empty", f"{name} has no A or AAAA records")
        if len(addresses) > self.settings.max_records:
            raise LookupFailed(
                "too-many",
                f"{name} has {len(addresses)} addresses, over max_records "
                f"({self.settings.max_records})",
            )
        return addresses, ttl

    async def _srv(self, target: DiscoveredUpstream) -> Found:
        name = target.name
        answer = await self._query(name, "SRV")
        if answer is None or answer.rrset is None:
            raise LookupFailed("empty", f"{name} has no SRV records")
        limit = self.settings.max_records
        if len(answer.rrset) > limit:
            raise LookupFailed(
                "too-many",
                f"{name} has {len(answer.rrset)} SRV records, over max_records ({limit})",
            )
        ttl = _ttl(answer)
        # RFC 2782: a lone record with target "." says there is no such service here.
        records = [r for r in answer.rrset if r.target != dns.name.root and r.port != 0]
        if not records:
            raise LookupFailed("empty", f"{name}: no service (SRV target '.')")
        lowest = min(r.priority for r in records)
        records = [r for r in records if r.priority == lowest]
        weights = _srv_weights([r.weight for r in records])
        glue = _glue(answer.response)
        targets = {r.target for r in records}
        missing = [t for t in targets if t not in glue]
        looked_up = await asyncio.gather(
            *(self._addresses(t.to_text()) for t in missing), return_exceptions=True
        )
        for t, result in zip(missing, looked_up, strict=True):
            if isinstance(result, LookupFailed) and result.reason in ("nxdomain", "empty"):
                continue  # a stale record for a target that is gone: the others still serve
            if isinstance(result, BaseException):
                raise result
            glue[t] = result
        upstreams: dict[str, Upstream] = {}
        for record, weight in zip(records, weights, strict=True):
            addresses, target_ttl = glue.get(record.target, ([], math.inf))
            ttl = min(ttl, target_ttl)
            for address in addresses:
                upstream = _upstream(target.scheme, address, record.port, weight * target.weight)
                known = upstreams.get(upstream.key)
                if known is not None:  # two records for one server: their shares add up
                    upstream = _upstream(
                        target.scheme, address, record.port, known.weight + upstream.weight
                    )
                upstreams[upstream.key] = upstream
        if not upstreams:
            raise LookupFailed("empty", f"{name}: no SRV target has an address")
        if len(upstreams) > limit:
            raise LookupFailed(
                "too-many", f"{name} has {len(upstreams)} servers, over max_records ({limit})"
            )
        return Found(_sorted(upstreams), ttl)


def _sorted(upstreams: dict[str, Upstream]) -> dict[str, Upstream]:
    # Answers come in any order; a stable one keeps the route's list (and a hash ring
    # built from it) the same while the set is.
    return dict(sorted(upstreams.items()))


def _ttl(answer: dns.resolver.Answer) -> float:
    # ``expiration`` is the smallest TTL along the CNAME chain, not only the last record's.
    return max(0.0, answer.expiration - time.time())


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def _srv_weights(weights: list[int]) -> list[float]:
    """A record's share of its priority class. All 0: equal shares. RFC 2782 gives a
    weight-0 record among others "a very small chance", not none: a hundredth of the
    smallest other weight."""
    positive = [w for w in weights if w > 0]
    if not positive:
        return [1.0] * len(weights)
    small = min(positive) / 100
    return [float(w) if w > 0 else small for w in weights]


def _glue(response: dns.message.Message) -> dict[dns.name.Name, tuple[list[str], float]]:
    """Addresses the server sent along with the SRV answer (its additional section)."""
    found: dict[dns.name.Name, tuple[list[str], float]] = {}
    for rrset in response.additional:
        if rrset.rdtype not in (dns.rdatatype.A, dns.rdatatype.AAAA):
            continue
        addresses, ttl = found.get(rrset.name, ([], math.inf))
        addresses = addresses + [ipaddress.ip_address(r.address).compressed for r in rrset]
        found[rrset.name] = (addresses, min(ttl, float(rrset.ttl)))
    return found


def _upstream(scheme: str, address: str, port: int, weight: float) -> Upstream:
    host = f"[{address}]" if ":" in address else address
    return Upstream(f"{scheme}://{host}:{port}", weight)


# what a plan declares -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DiscoveredRoute:
    """A route with discovered upstreams: its ``static`` ones and the names it resolves."""

    name: str
    static: tuple[Upstream, ...]
    targets: tuple[DiscoveredUpstream, ...]


LastGood = dict[tuple[str, str], dict[str, Upstream]]


class Discovery:
    """What the routes of a configuration declare, and their first sets of servers.

    ``bastion balance`` hands :meth:`expand` to the file reader: each route's discovered
    entries are resolved there, once, so the workers start with real servers (names a
    previous plan knew start from its last good set instead, and are not waited for).
    Then :meth:`job` runs them for as long as the plan does.
    """

    def __init__(
        self, settings: DiscoverySettings | None = None, previous: LastGood | None = None
    ) -> None:
        self.settings = settings or DiscoverySettings()
        self.routes: list[DiscoveredRoute] = []
        self.found: LastGood = {}
        self._previous = previous or {}

    def expand(
        self,
        route: str,
        static: Sequence[Upstream],
        targets: Sequence[DiscoveredUpstream],
    ) -> tuple[Upstream, ...]:
        """The route's servers: ``static`` and what ``targets`` resolve to now. ValueError
        naming the entry when one resolves to nothing it could start with."""
        if not targets:
            return tuple(static)
        self.routes.append(DiscoveredRoute(route, tuple(static), tuple(targets)))
        wanted = [t for t in targets if (route, t.url) not in self._previous]
        results = _resolve_now(self.settings, wanted) if wanted else []
        for target, result in zip(wanted, results, strict=True):
            if isinstance(result, LookupFailed):
                if static:
                    logger.warning(
                        'discovery: route "%s": %s: %s; starting without it',
                        route,
                        target.url,
                        result.detail,
                    )
                    self.found[(route, target.url)] = {}
                    continue
                raise ValueError(f"upstream {target.url}: {result.detail}")
            self.found[(route, target.url)] = result.upstreams
        for target in targets:
            if (route, target.url) in self._previous:
                self.found[(route, target.url)] = dict(self._previous[(route, target.url)])
        return merge(static, (self.found[(route, t.url)] for t in targets))

    def job(self, control: BalancerControl) -> DiscoveryJob | None:
        """The supervisor job that keeps the sets current (None: nothing is discovered)."""
        if not self.routes:
            return None
        return DiscoveryJob(control, self.routes, self.settings, initial=self.found)


def _resolve_now(
    settings: DiscoverySettings, targets: Sequence[DiscoveredUpstream]
) -> list[Found | LookupFailed]:
    """Resolve ``targets`` all at once, from code that is not on an event loop (loading a
    configuration); on a thread of its own, so a loop of the caller's is never touched."""

    async def resolve() -> list[Found | LookupFailed]:
        lookup = Lookup(settings)
        results = await asyncio.gather(*(lookup.find(t) for t in targets), return_exceptions=True)
        out: list[Found | LookupFailed] = []
        for result in results:
            if isinstance(result, Found | LookupFailed):
                out.append(result)
            elif isinstance(result, Exception):
                out.append(LookupFailed("error", _short(result)))
            else:
                raise result
        return out

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bastion-dns") as pool:
        return pool.submit(asyncio.run, resolve()).result()


def merge(
    static: Iterable[Upstream], sets: Iterable[Mapping[str, Upstream]]
) -> tuple[Upstream, ...]:
    """The route's servers: ``static`` ones first, then each discovered set in order; an
    address listed twice keeps its first entry (a static weight wins)."""
    merged: dict[str, Upstream] = {}
    for upstream in static:
        merged.setdefault(upstream.key, upstream)
    for found in sets:
        for key, upstream in found.items():
            merged.setdefault(key, upstream)
    return tuple(merged.values())


# the supervisor job -------------------------------------------------------------------------


@dataclass(eq=False)
class _Watch:
    """One discovered name of one route, and what is known of it."""

    route: DiscoveredRoute
    target: DiscoveredUpstream
    found: dict[str, Upstream] | None
    failing: str | None = None  # the reason of the failure in progress, None when resolving


def latest_sets() -> LastGood:
    """The last good sets of the job made last in this process: where a reloaded
    configuration starts from, so it waits for no name the running one knows."""
    job = _latest() if _latest is not None else None
    return job.last_good() if job is not None else {}


_latest: weakref.ref[DiscoveryJob] | None = None
# Counts survive reloads (a new job per plan), so the counter never goes backwards.
_RESULTS: dict[tuple[str, str, str], int] = {}
_running: weakref.WeakSet[DiscoveryJob] = weakref.WeakSet()


class DiscoveryJob:
    """Keeps each discovered name's servers current; a supervisor job (``ServePlan.jobs``).

    ``initial`` is the last good set of each ``(route name, upstream url)`` (what
    :class:`Discovery` resolved when the configuration loaded). ``lookup`` is replaceable
    for tests.
    """

    def __init__(
        self,
        control: BalancerControl,
        routes: Sequence[DiscoveredRoute],
        settings: DiscoverySettings | None = None,
        *,
        initial: LastGood | None = None,
        lookup: Lookup | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.control = control
        self.settings = settings or DiscoverySettings()
        self.lookup = lookup or Lookup(self.settings)
        self._rng = rng or random.Random()
        self._clock = clock
        initial = initial or {}
        self.routes = list(routes)
        self.watches = [
            _Watch(route, target, initial.get((route.name, target.url)))
            for route in self.routes
            for target in route.targets
        ]
        self._tasks: dict[_Watch, asyncio.Future[None]] = {}
        self._owner: object | None = None
        global _latest
        _latest = weakref.ref(self)

    def state(self) -> list[Message]:
        # The servers found reach a worker inside the configuration BalancerControl sends.
        return []

    def last_good(self) -> LastGood:
        """Each name's last good set, for the next plan to start from (a reload)."""
        return {
            (w.route.name, w.target.url): dict(w.found) for w in self.watches if w.found is not None
        }

    def status(self) -> list[dict[str, Any]]:
        """For an operator: each name, whether it is failing, and its servers."""
        return [
            {
                "route": w.route.name,
                "upstream": w.target.url,
                "failing": w.failing,
                "servers": sorted(w.found or ()),
            }
            for w in self.watches
        ]

    async def run(self, broadcast: Callable[[Message], None]) -> None:
        """Resolve until cancelled. A run started while another is still going takes over
        from it (a supervisor that rolls back runs the same jobs again)."""
        del broadcast  # every change goes through BalancerControl, which broadcasts it
        previous = list(self._tasks.values())
        for task in previous:
            task.cancel()
        if previous:
            await asyncio.gather(*previous, return_exceptions=True)
        token = self._owner = object()
        self._tasks = {w: asyncio.ensure_future(self._watch(w)) for w in self.watches}
        _running.add(self)
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            if self._owner is token:
                tasks = list(self._tasks.values())
                for task in tasks:
                    task.cancel()
                self._tasks = {}
                self._owner = None
                _running.discard(self)
                await asyncio.gather(*tasks, return_exceptions=True)

    def adopt(self, new: DiscoveryJob) -> None:
        """Follow ``new``'s routes from now on, in place (a reload that keeps the workers):
        names both know keep their sets and schedules, new ones start, dropped ones stop.
        Call it on the loop this job runs on."""
        known = {(w.route.name, w.target.url): w for w in self.watches}
        watches: list[_Watch] = []
        for watch in new.watches:
            kept = known.pop((watch.route.name, watch.target.url), None)
            if kept is not None:
                kept.route = watch.route  # its static upstreams may have changed
                watches.append(kept)
                continue
            watches.append(watch)
            if self._owner is not None:
                self._tasks[watch] = asyncio.ensure_future(self._watch(watch))
        for gone in known.values():
            task = self._tasks.pop(gone, None)
            if task is not None:
                task.cancel()
        self.routes = new.routes
        self.watches = watches
        self.settings = new.settings
        self.lookup = new.lookup

    async def _watch(self, watch: _Watch) -> None:
        settings = self.settings
        while True:
            try:
                found = await self.lookup.find(watch.target)
            except LookupFailed as exc:
                self._failed(watch, exc)
                delay = settings.retry
            except Exception as exc:  # a resolver bug must not end the job, nor blank a pool
                self._failed(watch, LookupFailed("error", f"{type(exc).__name__}: {exc}"))
                delay = settings.retry
            else:
                self._resolved(watch, found)
                delay = min(max(found.ttl, settings.min_ttl), settings.max_ttl)
            early = delay * self._rng.uniform(0.0, settings.jitter)
            await asyncio.sleep(max(settings.min_ttl, delay - early))

    def _failed(self, watch: _Watch, failure: LookupFailed) -> None:
        _count(watch, failure.reason)
        if watch.failing == failure.reason:
            return
        watch.failing = failure.reason
        kept = len(watch.found or ())
        logger.warning(
            'discovery: route "%s": %s: %s; keeping the last %d server%s',
            watch.route.name,
            watch.target.url,
            failure.detail,
            kept,
            "" if kept == 1 else "s",
        )

    def _resolved(self, watch: _Watch, found: Found) -> None:
        _count(watch, "ok")
        before = watch.found or {}
        if watch.failing is not None:
            watch.failing = None
            logger.warning(
                'discovery: route "%s": %s: resolves again (%d servers)',
                watch.route.name,
                watch.target.url,
                len(found.upstreams),
            )
        if watch.found is not None and found.upstreams == before:
            return
        watch.found = found.upstreams
        added = sorted(set(found.upstreams) - set(before))
        removed = sorted(set(before) - set(found.upstreams))
        logger.info(
            'discovery: route "%s": %s: %d servers%s%s',
            watch.route.name,
            watch.target.url,
            len(found.upstreams),
            "".join(f", +{key}" for key in added),
            "".join(f", -{key}" for key in removed),
        )
        self._push(watch.route)

    def _push(self, route: DiscoveredRoute) -> None:
        sets = [w.found or {} for w in self.watches if w.route.name == route.name]
        upstreams = merge(route.static, sets)
        try:
            current = self.control.route(route.name).upstreams
        except KeyError:
            logger.error('discovery: route "%s" is no longer configured', route.name)
            return
        if current == upstreams:
            return
        try:
            self.control.set_upstreams(route.name, upstreams)
        except (KeyError, ValueError) as exc:
            logger.error('discovery: route "%s": cannot use the servers found: %s', route.name, exc)


def _count(watch: _Watch, result: str) -> None:
    key = (watch.route.name, watch.target.url, result)
    _RESULTS[key] = _RESULTS.get(key, 0) + 1


def resolutions() -> dict[tuple[str, str, str], int]:
    """``(route, upstream url, result) → count`` of every resolution in this process."""
    return dict(_RESULTS)


def metrics(prefix: str = "bastion") -> Iterator[Metric]:
    """The discovery figures for the supervisor's ``/metrics``."""
    counts = CounterMetricFamily(
        f"{prefix}_discovery_resolutions",
        "DNS resolutions of discovered upstreams, by route, upstream and result "
        "(ok, timeout, nxdomain, servfail, empty, too-many, error).",
        labels=["route", "upstream", "result"],
    )
    for (route, url, result), count in sorted(_RESULTS.items()):
        counts.add_metric([route, url, result], count)
    yield counts
    servers = GaugeMetricFamily(
        f"{prefix}_discovery_servers",
        "Servers a discovered upstream stands for now (its last good set).",
        labels=["route", "upstream"],
    )
    failing = GaugeMetricFamily(
        f"{prefix}_discovery_failing",
        "1 while a discovered upstream's resolution fails and its last good set is kept.",
        labels=["route", "upstream"],
    )
    for job in list(_running):
        for watch in job.watches:
            labels = [watch.route.name, watch.target.url]
            servers.add_metric(labels, len(watch.found or ()))
            failing.add_metric(labels, 0.0 if watch.failing is None else 1.0)
    yield servers
    yield failing


def settings_from_table(raw: Mapping[str, Any] | None) -> DiscoverySettings:
    """The ``[discovery]`` table of a balancer file (None: the defaults)."""
    if raw is None:
        return DiscoverySettings()
    if not isinstance(raw, Mapping):
        raise ValueError(f"discovery must be a table, not {raw!r}")
    known = [f.name for f in dataclasses.fields(DiscoverySettings)]
    for key in raw:
        if key not in known:
            raise ValueError(f"discovery: unknown key {key!r} (known: {', '.join(known)})")
    nameserver = raw.get("nameserver")
    if nameserver is not None and not isinstance(nameserver, str):
        raise ValueError(f"discovery.nameserver must be a string, not {nameserver!r}")
    return DiscoverySettings(**raw)


add_supervisor_metrics(metrics)
