"""The reverse proxy: an engine handler that passes each request to an upstream server.

:class:`Balancer` matches a request to a route, and a :class:`Forward` carries it through: a
server picked by the route's strategy, a connection from that server's pool, the request
re-framed by ``bastion.http.forwarding`` (so nothing the client wrote can make the upstream
read two requests where the engine saw one), the body streamed, and the response passed back
as the upstream's parser accepted it. Everything runs on the event loop as callbacks: a task
exists only while something must be waited for (a new connection, a request body), so a
request over a kept-alive connection costs no task at all.

Failure before a response has started is answered by the balancer: 502 for an upstream that
failed or answered badly, 504 for one that timed out, 503 when no server may take the
request. After the response has started, the client connection is closed under it, since its
framing can no longer be trusted. A retry goes to another server, only when it is safe (see
:class:`~bastion.balancer.config.RetryPolicy`) and within the route's retry budget.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import ssl
from collections.abc import Callable, Collection, Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import REGISTRY

from bastion._compiled import mypyc_attr
from bastion.balancer import PoolSnapshot, Server, build
from bastion.balancer.config import (
    CONFIG_MESSAGE,
    BalancerConfig,
    Route,
    Upstream,
    config_from_data,
)
from bastion.balancer.connections import ConnectionPool, UpstreamConnection
from bastion.balancer.errors import Overloaded
from bastion.balancer.health import HealthChecker, health_verdicts
from bastion.balancer.metrics import UpstreamCollector
from bastion.balancer.outlier import OutlierDetector
from bastion.balancer.retry import RetryBudget
from bastion.balancer.stats import UpstreamStats
from bastion.balancer.tls import route_context, server_name
from bastion.balancer.tunnel import Tunnel
from bastion.engine.errors import ClientDisconnected
from bastion.engine.proxy import TrustedPeers
from bastion.http import (
    LAST_CHUNK,
    ResponseHead,
    encode_chunk,
    encode_response_head,
    forward_request_head,
    forward_response_headers,
)
from bastion.http.errors import BadGateway, NoResponse, ProtocolError
from bastion.http.forwarding import connection_options
from bastion.http.response import STATUS_LINES

if TYPE_CHECKING:
    from bastion.engine.exchange import Exchange
    from bastion.engine.state import ServerState

logger = logging.getLogger("bastion.error")

IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# Response fields that are the connection's, not the message's (RFC 9110 §7.6.1), and the
# framing fields the engine writes itself.
_NOT_FORWARDED: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"proxy-connection",
        b"proxy-authenticate",
    }
)
# The usual reason phrase of each status, as the engine writes it in its own status lines.
_PHRASES: Final = {status: line[13:-2] for status, line in STATUS_LINES.items()}
_POOL_SWEEP_INTERVAL: Final = 1.0
_MIN_TICK: Final = 0.01
_MAX_TICK: Final = 0.25


class RouteRuntime:
    """One route in one worker: its pool snapshot and strategy, connection pools, budget."""

    def __init__(
        self,
        route: Route,
        ssl_context: ssl.SSLContext | None,
        previous: RouteRuntime | None = None,
    ) -> None:
        """``previous``: the same route's runtime before a reconfiguration. Servers it shares
        with this one keep their live state, counters and connections; new ones start slow
        start; the others are left to finish what they have in flight."""
        self.route = route
        self.name = route.name
        weights = {upstream.key: upstream.weight for upstream in route.upstreams}
        if previous is None:
            self.snapshot = PoolSnapshot.of(
                weights, panic_threshold=route.panic_threshold, slow_start_s=route.slow_start
            )
        else:
            self.snapshot = previous.snapshot.reconfigure(
                weights, panic_threshold=route.panic_threshold, slow_start_s=route.slow_start
            )
        self.strategy = build(route.strategy, self.snapshot, **dict(route.strategy_options))
        self.pools: dict[str, ConnectionPool] = {}
        self.stats: dict[str, UpstreamStats] = {}
        for upstream in route.upstreams:
            key = upstream.key
            server = self.snapshot.get(key)
            assert server is not None
            pool = previous.pools.get(key) if previous is not None else None
            name = server_name(route, upstream.host)
            if (
                pool is not None
                and pool.upstream.url == upstream.url
                and pool.ssl_context is (ssl_context if upstream.scheme == "https" else None)
                and pool.server_name == name
            ):
                pool.upstream = upstream
                pool.limits = route.limits
                pool.connect_timeout = route.timeouts.connect
                pool.on_open = _bind(self.strategy.on_connect, server)
                pool.on_close = _bind(self.strategy.on_disconnect, server)
            else:
                pool = ConnectionPool(
                    upstream,
                    route.limits,
                    route.timeouts.connect,
                    ssl_context=ssl_context if upstream.scheme == "https" else None,
                    server_name=name,
                    on_open=_bind(self.strategy.on_connect, server),
                    on_close=_bind(self.strategy.on_disconnect, server),
                )
            self.pools[key] = pool
            stats = previous.stats.get(key) if previous is not None else None
            self.stats[key] = stats if stats is not None else UpstreamStats()
        self.upstreams = {upstream.key: upstream for upstream in route.upstreams}
        retry = route.retry
        self.budget: RetryBudget
        if previous is not None and previous.route.retry == retry:
            self.budget = previous.budget
        else:
            self.budget = RetryBudget(retry.budget_ratio, retry.budget_min_per_s)
        self.outlier = OutlierDetector(self.snapshot, route.outlier, self.stats)
        host = route.host.lower() if route.host else None
        self.wildcard = host[1:] if host is not None and host.startswith("*.") else None
        self.host = None if self.wildcard is not None else host
        self.prefix = route.path_prefix.encode("latin-1")
        self.strip = route.strip_prefix and self.prefix != b"/"
        per_try = route.retry.per_try_timeout
        self.response_timeout = per_try if per_try is not None else route.timeouts.response
        # What every request reads of its route, copied out of the (uncompiled, frozen)
        # configuration: a field of this class is read directly, one of those by name.
        self.total_timeout = route.timeouts.total
        self.idle_timeout = route.timeouts.idle
        self.hashing = route.hashing
        self.request_buffer = route.request_buffer
        self.max_requests = route.limits.max_requests
        self.preserve_host = route.preserve_host
        self.retry_on_status = route.retry.on_status

    def retire(self, keep: Collection[str] = ()) -> None:
        """Stop using the pools whose servers left (all of them, when the route did): idle
        connections close now, busy ones when their request is done."""
        for key, pool in self.pools.items():
            if key not in keep:
                pool.retire()

    def matches(self, host: str | None, path: bytes) -> bool:
        if self.host is not None and host != self.host:
            return False
        if self.wildcard is not None and (host is None or not host.endswith(self.wildcard)):
            return False
        return self.route.matches_path(path)

    def sort_key(self) -> tuple[int, int]:
        specific = 2 if self.host is not None else 1 if self.wildcard is not None else 0
        return (-specific, -len(self.prefix.rstrip(b"/")))

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()


def _bind(method: Callable[[Server], None], server: Server) -> Callable[[], None]:
    return lambda: method(server)


@mypyc_attr(allow_interpreted_subclasses=True)
class Balancer:
    """An engine handler that load-balances requests over upstream servers.

    Build it from a :class:`~bastion.balancer.config.BalancerConfig`; serve it with
    ``bastion balance``, with ``bastion.engine.run``, or mount it in an App. Each worker
    process has its own connection pools and passive health signals.
    """

    def __init__(
        self,
        config: BalancerConfig,
        *,
        ssl_context: ssl.SSLContext | None = None,
        active_checks: bool = True,
    ) -> None:
        """``active_checks=False`` when something else probes the upstreams and passes the
        verdicts on (``bastion balance``: the supervisor, once for all workers)."""
        self.config = config
        self.active_checks_wanted = active_checks
        self.active_checks = active_checks and any(r.health is not None for r in config.routes)
        self._checker_task: asyncio.Task[None] | None = None
        self.trusted = TrustedPeers(config.trusted_proxies)
        self.trusts_someone = bool(config.trusted_proxies)
        self.request_id = config.request_id.encode("ascii") if config.request_id else b""
        self._ssl_context = ssl_context
        self.routes: list[RouteRuntime] = []
        self._by_name: dict[str, RouteRuntime] = {}
        self._single: RouteRuntime | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        # Forwards waiting on a deadline: one tick checks them all, where a timer per
        # request would cost more than the check (most requests end long before).
        self.armed: set[Forward] = set()
        self._tick = _tick_interval(config)
        self._next_pool_sweep = 0.0
        self._request_count = 0
        self._request_id_prefix = os.urandom(8).hex().encode()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._collector: UpstreamCollector | None = None
        self._build()

    def _build(self) -> None:
        previous = self._by_name
        self.routes = sorted(
            (
                RouteRuntime(
                    route, route_context(route, self._ssl_context), previous.get(route.name)
                )
                for route in self.config.routes
            ),
            key=RouteRuntime.sort_key,
        )
        self._by_name = {runtime.name: runtime for runtime in self.routes}
        self._single = self.routes[0] if len(self.routes) == 1 else None
        if self._single is not None and (
            self._single.host is not None
            or self._single.wildcard is not None
            or self._single.prefix != b"/"
        ):
            self._single = None

    def reconfigure(self, config: BalancerConfig) -> None:
        """Switch to ``config`` without dropping a request or a connection.

        Requests in flight finish on the configuration they started with (each holds its
        route's runtime). Servers kept keep their live state, counters and kept-alive
        connections; new ones start slow start; removed ones take nothing new and their
        connections close as their requests end. Raises nothing for a valid config: check
        it (build it) before calling.
        """
        before = self._by_name
        self.config = config
        self.trusted = TrustedPeers(config.trusted_proxies)
        self.trusts_someone = bool(config.trusted_proxies)
        self.request_id = config.request_id.encode("ascii") if config.request_id else b""
        self._tick = _tick_interval(config)
        self._build()
        for name, runtime in before.items():
            now = self._by_name.get(name)
            runtime.retire(set(now.pools) if now is not None else set())
        if self._collector is not None:
            self._collector.routes = list(self.routes)
        if self._checker_task is not None:
            self._checker_task.cancel()
            self._checker_task = None
        self.active_checks = self.active_checks_wanted and any(
            route.health is not None for route in config.routes
        )
        if self.active_checks and self._loop is not None:
            self._start_checker()

    def set_upstreams(self, route_name: str, upstreams: Iterable[Upstream]) -> None:
        """Replace one route's servers (discovery, or an operator through the admin API)."""
        routes = tuple(
            dataclasses.replace(route, upstreams=tuple(upstreams))
            if route.name == route_name
            else route
            for route in self.config.routes
        )
        if all(route.name != route_name for route in routes):
            raise KeyError(f"no route named {route_name!r}")
        self.reconfigure(dataclasses.replace(self.config, routes=routes))

    # engine hooks ------------------------------------------------------------------------------

    async def startup(self, state: ServerState) -> None:
        self._loop = asyncio.get_running_loop()
        self._sweeper = self._loop.call_later(self._tick, self._sweep)
        # Drawn again here, in the process that serves, so forked workers never share one.
        self._request_id_prefix = os.urandom(8).hex().encode()
        self._collector = UpstreamCollector(self.routes)
        REGISTRY.register(self._collector)  # type: ignore[arg-type]
        if self.active_checks:
            self._start_checker()

    def _start_checker(self) -> None:
        assert self._loop is not None
        known = {
            (runtime.name, server.key): server.state.healthy
            for runtime in self.routes
            for server in runtime.snapshot.servers
        }
        checker = HealthChecker(
            self.config, self.apply_health, initial=known, ssl_context=self._ssl_context
        )
        self._checker_task = self._loop.create_task(checker.run())

    async def shutdown(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._checker_task is not None:
            self._checker_task.cancel()
            self._checker_task = None
        if self._collector is not None:
            REGISTRY.unregister(self._collector)  # type: ignore[arg-type]
            self._collector = None
        for runtime in self.routes:
            runtime.close()

    def handle(self, exchange: Exchange) -> None:
        runtime = self._single or self.route_for(exchange)
        if runtime is None:
            exchange.respond(404, [("content-type", "text/plain; charset=utf-8")], b"no route\n")
            return
        forward = Forward(self, runtime, exchange)
        exchange.state = forward
        exchange.route = runtime.name
        forward.begin()

    def connection_lost(self, exchange: Exchange) -> None:
        forward = exchange.state
        if isinstance(forward, Forward) and exchange.conn.closed:
            forward.client_lost()

    # the rest of the balancer --------------------------------------------------------------

    def route_for(self, exchange: Exchange) -> RouteRuntime | None:
        head = exchange.head
        host = head.get("host")
        if host is not None:
            host = host.lower()
            if host.endswith("]") or ":" not in host:
                pass
            else:
                host = host.rsplit(":", 1)[0]
        path = head.raw_path
        for runtime in self.routes:
            if runtime.matches(host, path):
                return runtime
        return None

    def supervisor_message(self, message: dict[str, Any]) -> None:
        """What the supervisor tells every worker (bastion.process): active health verdicts,
        a new configuration (a reload, the admin API, discovery)."""
        if message.get("kind") == CONFIG_MESSAGE:
            try:
                config = config_from_data(message["config"])
            except (KeyError, TypeError, ValueError) as exc:
                logger.error("ignoring a balancer configuration that does not load: %s", exc)
                return
            self.reconfigure(config)
            return
        for route, key, healthy in health_verdicts(message):
            self.apply_health(route, key, healthy)

    def apply_health(self, route_name: str, key: str, healthy: bool) -> None:
        """An active health check's verdict for server ``key`` of route ``route_name``."""
        runtime = self._by_name.get(route_name)
        if runtime is None:
            return
        server = runtime.snapshot.get(key)
        if server is not None and server.state.healthy != healthy:
            runtime.snapshot.set_healthy(server, healthy)
            runtime.stats[key].healthy = healthy

    def _sweep(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        armed = self.armed
        if armed:
            for forward in [forward for forward in armed if forward.deadline <= now]:
                forward.on_deadline(now)
        if now >= self._next_pool_sweep:
            self._next_pool_sweep = now + _POOL_SWEEP_INTERVAL
            for runtime in self.routes:
                for pool in runtime.pools.values():
                    if pool.idle:
                        pool.sweep(now)
        self._sweeper = loop.call_later(self._tick, self._sweep)

    def new_request_id(self) -> bytes:
        """This worker's random prefix and a count: unique without a system call each."""
        count = self._request_count = self._request_count + 1
        return b"%s%016x" % (self._request_id_prefix, count)


def _tick_interval(config: BalancerConfig) -> float:
    """How often deadlines are checked: a fraction of the shortest one, within bounds."""
    shortest = min(
        value
        for route in config.routes
        for value in (
            route.timeouts.response,
            route.timeouts.idle,
            route.timeouts.total or route.timeouts.idle,
            route.retry.per_try_timeout or route.timeouts.response,
        )
    )
    return min(_MAX_TICK, max(_MIN_TICK, shortest / 10))


class Forward:
    """One client request on its way through the balancer: its attempts, and its answer."""

    # No __slots__: most fields keep their class-level default for the whole request, and
    # not assigning them per request is measurably cheaper on the hot path.
    server: Server | None = None
    conn: UpstreamConnection | None = None
    pool: ConnectionPool | None = None
    request_head = b""
    attempt_at = 0.0
    responded = False
    status = 0
    done = False
    body_started = False
    body_sent = False
    # When this attempt's current wait runs out (0: no wait); the balancer's tick checks.
    deadline = 0.0
    task: asyncio.Task[None] | None = None
    reads_seen = -1
    body_progress = 0
    key: bytes | None = None
    client_paused = False
    reused = False
    # The answer owed if no other server can be tried: (status, detail).
    failure: tuple[int, str] | None = None
    # A response head waiting for the end of the read it came in (see on_response), and the
    # body that came with it in that read.
    pending: tuple[int, bytes, int | None, str | None] | None = None
    held: list[bytes] | None = None
    holding = False
    websocket = False
    # The whole request body, when it was read before choosing a server; else None, and
    # ``prefix`` holds what was read before the body turned out too large to hold.
    buffered: bytes | None = None
    prefix: tuple[bytes, ...] | list[bytes] = ()

    def __init__(self, balancer: Balancer, runtime: RouteRuntime, exchange: Exchange) -> None:
        self.balancer = balancer
        self.runtime = runtime
        self.exchange = exchange
        self.loop = exchange.loop
        self.tried: list[Server] = []
        head = exchange.head
        if head.upgrade:
            self.websocket = _asks_websocket(head.get_all("upgrade"))

    # choosing and connecting -----------------------------------------------------------------

    def begin(self) -> None:
        runtime = self.runtime
        now = self.started_at = self.loop.time()
        total = runtime.total_timeout
        self.deadline_total = now + total if total is not None else None
        runtime.budget.record_request(now)
        if runtime.hashing:
            self.key = self._hash_key()
        head = self.exchange.head
        limit = runtime.request_buffer
        if head.has_body and limit and (head.content_length or 0) <= limit:
            self.task = self.loop.create_task(self._buffer_body(limit))
            return
        self._first_attempt()

    def _first_attempt(self) -> None:
        buffered = self.buffered
        try:
            self.request_head = self._request_head(
                None, None if buffered is None else len(buffered)
            )
        except ValueError as exc:
            self._answer(400, f"cannot forward this request: {exc}")
            return
        self._attempt()

    async def _buffer_body(self, limit: int) -> None:
        """Read a small body whole before choosing a server, as nginx does by default.

        A body that turns out malformed then never reaches an upstream, a slow client ties up
        no upstream connection while it trickles, and the request can be sent again should
        its first server fail. A chunked body that grows past ``limit`` is streamed from there.
        """
        body = self.exchange.body
        parts: list[bytes] = []
        size = 0
        try:
            while chunk := await body.read():
                parts.append(chunk)
                size += len(chunk)
                if size > limit:
                    self.prefix = parts
                    break
            else:
                self.buffered = b"".join(parts)
        except (ClientDisconnected, ProtocolError) as exc:
            self.task = None
            self._end(f"client request body failed: {exc}")
            return
        self.task = None
        self._first_attempt()

    def _attempt(self, same_server: Server | None = None) -> None:
        runtime = self.runtime
        server = same_server or runtime.strategy.pick(self.key, self.tried)
        if server is None:
            if self.failure is not None:
                status, detail = self.failure
                self._answer(status, detail)
            else:
                self._answer(503, "no upstream server is available")
            return
        self.server = server
        self.tried.append(server)
        key = server.key
        cap = runtime.max_requests
        if cap and server.state.outstanding >= cap:
            runtime.stats[key].overloaded += 1
            if self._can_retry(before_sending=True):
                self._attempt()
            else:
                self._answer(503, f"upstream {key} is at its request limit")
            return
        pool = self.pool = runtime.pools[key]
        self.attempt_at = self.loop.time()
        if same_server is not None:
            # The retry after a stale kept-alive connection needs a fresh one: the idle
            # connections left have waited at least as long (the pool reuses the newest
            # first), and after a crash every one of them is dead.
            while pool.idle:
                pool.idle.pop().close()
        conn = pool.take_idle()
        if conn is not None:
            self._send(conn, reused=True)
            return
        self.task = self.loop.create_task(self._acquire(pool))

    async def _acquire(self, pool: ConnectionPool) -> None:
        try:
            conn, reused = await pool.acquire()
        except Overloaded as exc:
            self.task = None
            self.runtime.stats[pool.upstream.key].overloaded += 1
            if self._can_retry(before_sending=True):
                self._attempt()
            else:
                self._answer(503, str(exc))
            return
        except (OSError, asyncio.TimeoutError) as exc:
            self.task = None
            if self.done:
                return
            timeout = isinstance(exc, asyncio.TimeoutError)
            why = "connect timed out" if timeout else f"cannot connect: {_describe(exc)}"
            self._failed_before_response(why, sent=False, timeout=timeout)
            return
        self.task = None
        if self.done:
            pool.release(conn)
            return
        self._send(conn, reused)

    def _send(self, conn: UpstreamConnection, reused: bool) -> None:
        server = self.server
        assert server is not None
        self.conn = conn
        self.reused = reused
        self.runtime.strategy.on_start(server)
        head = self.request_head
        buffered = self.buffered
        if not self.runtime.preserve_host:
            authority = self.runtime.upstreams[server.key].authority
            head = self._request_head(authority, None if buffered is None else len(buffered))
        if buffered is not None:
            head += buffered
        try:
            conn.send(
                self,
                self.exchange.head.method,
                head,
                upgrade=self.websocket,
                outbox=self.exchange.conn.state.outbox,
            )
        except RuntimeError:  # the connection turned unusable between the check and now
            self._failed_before_response("connection unusable", sent=False)
            return
        if self.exchange.head.has_body and buffered is None:
            self.body_started = True
            self.task = self.loop.create_task(self._send_body(conn))
        else:
            self.body_sent = True
        self._arm(self.attempt_at + self._response_timeout())

    async def _send_body(self, conn: UpstreamConnection) -> None:
        body = self.exchange.body
        chunked = self.exchange.head.content_length is None
        try:
            for chunk in self.prefix:
                conn.write(encode_chunk(chunk) if chunked else chunk)
                self.body_progress += len(chunk)
            while chunk := await body.read():
                if self.conn is not conn or conn.closed:
                    return
                conn.write(encode_chunk(chunk) if chunked else chunk)
                self.body_progress += len(chunk)
                if conn.write_paused:
                    await conn.drain()
            if self.conn is not conn:
                return
            if chunked:
                conn.write(LAST_CHUNK)
            self.body_sent = True
            if not self.responded:
                # The response timeout counts from the end of the request.
                self._arm(self.loop.time() + self._response_timeout())
        except (ClientDisconnected, ProtocolError) as exc:
            # The client's body broke (the engine answered or dropped it); the upstream has
            # a request cut short, so its connection cannot be reused.
            if self.conn is conn and not self.done:
                self._finish_attempt(ok=True)
                conn.abort()
                self._end(f"client request body failed: {exc}")
        except ConnectionError:
            pass  # the upstream closed: the connection reports it to upstream_failed
        finally:
            self.task = None

    # what the upstream connection reports ------------------------------------------------

    def on_response(self, head: ResponseHead) -> None:
        status = head.status
        runtime = self.runtime
        if head.upgrade:
            self._switch(head)
            return
        if status in runtime.retry_on_status and self._can_retry(before_sending=False):
            self._retry_after(f"upstream answered {status}", ok=False)
            return
        self.status = status
        exchange = self.exchange
        if exchange.finished:
            return
        fields, has_date = _response_fields(head)
        if not has_date:
            fields += exchange.conn.state.date_line
        length = head.content_length if (head.has_body or exchange.head.method == "HEAD") else None
        if not head.has_body and exchange.head.method != "HEAD" and status_has_body(status):
            length = 0
        # The head is passed on once this read is done, not now: a body whose framing turns
        # out broken within the same read can then still be answered with a clean 502.
        reason = head.reason
        # The usual phrase is left to the engine, which has the whole status line encoded.
        text = None if reason == _PHRASES.get(status) else reason.decode("latin-1") or None
        # The idle timeout is armed in read_done, for a body that goes on past this read.
        self.pending = (status, fields, length, text)

    def _switch(self, head: ResponseHead) -> None:
        """The upstream accepted the upgrade: pass its 101 on and join the two connections."""
        conn = self.conn
        assert conn is not None
        conn.sink = None  # the connection is the tunnel's now, never the pool's again
        self.conn = None
        self.status = 101
        self.responded = True
        self._finish_attempt(ok=True)
        self._end(None)
        exchange = self.exchange
        if exchange.finished:
            conn.abort()
            return
        tunnel = Tunnel(exchange.conn, conn, self.runtime.route.timeouts.idle, self.loop)
        conn.tunnel = tunnel
        try:
            exchange.switch_protocols(
                encode_response_head(head, forward_response_headers(head)), tunnel
            )
        except (ClientDisconnected, ValueError):
            conn.abort()

    def _start_response(self) -> bool:
        pending = self.pending
        if pending is None:
            return not self.exchange.finished
        self.pending = None
        status, fields, length, reason = pending
        exchange = self.exchange
        exchange.add_server_lines = False
        self.responded = True
        try:
            exchange.start_encoded(status, fields, length, reason=reason)
        except ClientDisconnected:
            self.client_lost()
            return False
        return True

    def _respond_whole(self, pending: tuple[int, bytes, int | None, str | None]) -> None:
        """The response came whole within one read: head and body leave in one write."""
        status, fields, length, reason = pending
        held = self.held
        self.held = None
        body = b"" if held is None else held[0] if len(held) == 1 else b"".join(held)
        exchange = self.exchange
        if exchange.finished:
            return
        exchange.add_server_lines = False
        self.responded = True
        if exchange.head.method == "HEAD" and length is None:
            length = -1  # the upstream announced no length: neither does the client's answer
        try:
            if length == -1:
                holding = exchange.conn.hold_writes()
                exchange.start_encoded(status, fields, None, reason=reason)
                exchange.end()
                if holding:
                    exchange.conn.release_writes()
            else:
                exchange.respond_encoded(status, fields, body, length, reason)
        except ClientDisconnected:
            self.client_lost()

    def read_started(self) -> None:
        # Writes to the client are collected while a read is relayed, so that what one read
        # brings leaves in one send. A response that comes whole within one read leaves in
        # one write anyway (on_response_end), so collecting starts with the body's reads.
        if self.responded:
            self.holding = self.exchange.conn.hold_writes()

    def read_done(self) -> None:
        if self.pending is not None and not self.done:
            # The head came, the end of the response did not: head and body so far leave now,
            # and silence from here on is the idle timeout's.
            self.timer_deadline_idle()
            client = self.exchange.conn
            holding = self.holding or client.hold_writes()
            if self._start_response():
                held = self.held
                self.held = None
                for data in held or ():
                    self.on_body(data)
            if holding and not self.holding:
                client.release_writes()
        if self.holding:
            self.holding = False
            self.exchange.conn.release_writes()

    def on_body(self, data: bytes) -> None:
        if self.pending is not None:
            # Held until the read ends: the whole response may be in it, and leave at once.
            if self.held is None:
                self.held = [data]
            else:
                self.held.append(data)
            return
        exchange = self.exchange
        if exchange.finished:
            return
        try:
            exchange.write(data)
        except ValueError:
            self.client_lost()
            return
        client = exchange.conn
        if client.write_paused and not self.client_paused:
            # The client reads slower than the upstream sends: stop reading the upstream
            # until the client catches up, so nothing piles up in between.
            conn = self.conn
            if conn is not None:
                self.client_paused = True
                conn.pause_reading()
                client.when_writable(self._client_writable)

    def _client_writable(self) -> None:
        self.client_paused = False
        conn = self.conn
        if conn is not None and not self.done:
            conn.resume_reading()

    def on_response_end(self) -> None:
        pending = self.pending
        if pending is not None:
            self.pending = None
            self._respond_whole(pending)
        conn = self.conn
        ok = self.status < 500
        self._finish_attempt(ok=ok)
        if conn is not None and self.pool is not None:
            if self.body_sent and self.task is None:
                self.pool.release(conn)
            else:
                # The upstream answered before reading the whole request body: the rest of it
                # is still on its way, so the connection cannot carry another request.
                conn.sink = None
                conn.abort()
        self._end(None)
        if not self.exchange.finished:
            self.exchange.end()

    def upstream_failed(self, error: BaseException) -> None:
        if self.done:
            return
        self.conn = None
        if self.responded:
            self._finish_attempt(ok=False)
            self._end(f"upstream failed mid-response: {_describe(error)}")
            self.exchange.abort(f"upstream {self._key()} failed mid-response: {_describe(error)}")
            return
        # A kept-alive connection that closed before any byte of the answer is the usual
        # race with the upstream's keep-alive timeout: the request most likely never reached
        # it, and a fresh connection to the same server is the natural retry.
        stale = self.reused and isinstance(error, (NoResponse, ConnectionResetError))
        status = error.status if isinstance(error, BadGateway) else 502
        self._failed_before_response(_describe(error), sent=True, status=status, stale=stale)

    # deadlines ---------------------------------------------------------------------------------

    def _response_timeout(self) -> float:
        return self.runtime.response_timeout

    def _arm(self, deadline: float) -> None:
        if self.deadline_total is not None and self.deadline_total < deadline:
            deadline = self.deadline_total
        self.deadline = deadline
        self.balancer.armed.add(self)

    def _disarm(self) -> None:
        if self.deadline:
            self.deadline = 0.0
            self.balancer.armed.discard(self)

    def timer_deadline_idle(self) -> bool:
        conn = self.conn
        if conn is None:
            return False
        self.reads_seen = conn.reads
        self._arm(self.loop.time() + self.runtime.idle_timeout)
        return True

    def on_deadline(self, now: float) -> None:
        """Called by the balancer's tick once :attr:`deadline` has passed."""
        self._disarm()
        if self.done:
            return
        total_passed = self.deadline_total is not None and now >= self.deadline_total
        conn = self.conn
        if not total_passed and conn is not None:
            if self.responded and conn.reads != self.reads_seen:
                self.timer_deadline_idle()
                return
            if self.client_paused:
                # A slow client is the engine's write timeout to judge, not the upstream's.
                self._arm(now + self.runtime.idle_timeout)
                return
        kind = "total" if total_passed else "idle" if self.responded else "response"
        why = f"upstream {self._key()} {kind} timeout"
        if conn is not None:
            conn.sink = None
            conn.abort()
            self.conn = None
        if self.responded:
            self._finish_attempt(ok=False)
            self._end(why)
            self.exchange.abort(why)
            return
        if self.task is not None:
            self.task.cancel()
            self.task = None
        self._failed_before_response(why, sent=True, timeout=True)

    # ending --------------------------------------------------------------------------------

    def _can_retry(self, *, before_sending: bool, same_server: bool = False) -> bool:
        """Whether another attempt may follow this one (see RetryPolicy)."""
        runtime = self.runtime
        if self.done:
            return False
        tried = self.tried
        if same_server:
            # A fresh connection after a stale kept-alive one, once per server.
            if tried.count(tried[-1]) > 1:
                return False
        else:
            # Attempts count servers, not connections: a request retried after a stale
            # connection never reached the server, and if that server has just died its
            # fresh connection fails too; another server must still get its turn.
            servers = len(set(tried))
            if servers >= runtime.route.retry.attempts:
                return False
            if servers >= len(runtime.snapshot.active):
                return False  # nobody left to try: the failure is the answer
        if not before_sending:
            head = self.exchange.head
            if head.method not in IDEMPOTENT or self.body_started:
                return False
        now = self.loop.time()
        if self.deadline_total is not None and now >= self.deadline_total:
            return False
        if not runtime.budget.try_retry(now):
            if self.server is not None:
                runtime.stats[self.server.key].budget_exhausted += 1
            return False
        if self.server is not None:
            runtime.stats[self.server.key].retries += 1
        return True

    def _failed_before_response(
        self,
        why: str,
        *,
        sent: bool,
        timeout: bool = False,
        status: int = 502,
        stale: bool = False,
    ) -> None:
        """This attempt failed with nothing sent to the client: retry it, or answer."""
        server = self.server
        key = self._key()
        self._finish_attempt(ok=stale)  # a stale connection is not the server's failure
        conn = self.conn
        if conn is not None:
            conn.sink = None
            conn.abort()
            self.conn = None
        status = 504 if timeout else status
        self.failure = (status, f"upstream {'timed out' if timeout else 'failed'}")
        if self._can_retry(before_sending=not sent, same_server=stale):
            logger.info("retrying %s: upstream %s: %s", self._what(), key, why)
            self._attempt(server if stale else None)
            return
        logger.error("upstream %s: %s (%s)", key, why, self._what())
        self._answer(*self.failure)

    def _retry_after(self, why: str, *, ok: bool) -> None:
        """Drop this attempt's connection and response, and try another server."""
        conn = self.conn
        key = self._key()
        self._finish_attempt(ok=ok)
        if conn is not None:
            conn.sink = None
            conn.abort()
            self.conn = None
        logger.info("retrying %s on another server: upstream %s: %s", self._what(), key, why)
        self._attempt()

    def _finish_attempt(self, *, ok: bool) -> None:
        self.pending = None
        self.held = None
        if self.deadline:
            self.deadline = 0.0
            self.balancer.armed.discard(self)
        server = self.server
        if server is None:
            return
        self.server = None
        runtime = self.runtime
        latency = self.loop.time() - self.attempt_at
        runtime.strategy.on_finish(server, latency, ok)
        runtime.stats[server.key].record(latency, ok, self.status)
        runtime.outlier.observe(server, ok, self.loop)

    def _answer(self, status: int, detail: str) -> None:
        self._end(detail)
        exchange = self.exchange
        if exchange.started:
            return
        exchange.respond(
            status,
            [("content-type", "text/plain; charset=utf-8")],
            f"{status} {HTTPStatus(status).phrase}: {detail}\n".encode(),
        )

    def _end(self, why: str | None) -> None:
        self.done = True
        self._disarm()
        # The exchange and this forward refer to each other: without this, each request
        # would leave a cycle for the garbage collector, whose passes then stall the loop
        # for milliseconds at a time.
        self.exchange.state = None

    def client_lost(self) -> None:
        """The client went away: free the upstream side; a response cut short ends there."""
        if self.done:
            return
        task = self.task
        if task is not None:
            task.cancel()
            self.task = None
        conn = self.conn
        self.conn = None
        if self.server is not None:
            # Not the upstream's fault: it counts neither as a failure nor as a latency.
            server, self.server = self.server, None
            self.runtime.strategy.on_finish(server, self.loop.time() - self.attempt_at, True)
        if conn is not None:
            conn.sink = None
            conn.abort()
        self._end("client gone")

    # request details ----------------------------------------------------------------------

    def _request_head(self, host: bytes | None, content_length: int | None = None) -> bytes:
        exchange = self.exchange
        head = exchange.head
        balancer = self.balancer
        peer = exchange.peer
        target = None
        runtime = self.runtime
        if runtime.strip:
            target = _strip_prefix(head.target, head.raw_path, runtime.prefix)
        return forward_request_head(
            head,
            client=peer[0] if peer is not None else None,
            proto=exchange.conn.scheme,
            trusted=balancer.trusts_someone and balancer.trusted.trusts_peer(peer),
            style=balancer.config.forwarding,
            host=host,
            request_id=(
                (balancer.request_id, balancer.new_request_id()) if balancer.request_id else None
            ),
            target=target,
            websocket=self.websocket,
            content_length=content_length,
        )

    def _hash_key(self) -> bytes | None:
        spec = self.runtime.route.hash_key
        head = self.exchange.head
        if spec.kind == "path":
            return head.raw_path
        if spec.kind == "header":
            value = head.get(spec.name)
            if value is not None:
                return value.encode("latin-1")
        elif spec.kind == "cookie":
            cookie = _cookie(head.get_all("cookie"), spec.name)
            if cookie is not None:
                return cookie
        client = self.exchange.client
        return client[0].encode() if client is not None else None

    def _key(self) -> str:
        server = self.server
        if server is not None:
            return server.key
        return self.tried[-1].key if self.tried else "-"

    def _what(self) -> str:
        head = self.exchange.head
        return f"{head.method} {head.target.decode('latin-1')}"


def _response_fields(head: ResponseHead) -> tuple[bytes, bool]:
    """The upstream's end-to-end fields, encoded, and whether a Date was among them."""
    named: set[bytes] | None = None
    lines = []
    has_date = False
    for name, value in head.headers:
        lowered = name.lower()
        if lowered in _NOT_FORWARDED:
            if lowered == b"connection":
                options = connection_options(value)
                if options:
                    named = named or set()
                    named.update(options)
            continue
        if lowered == b"date":
            has_date = True
        lines.append(b"%s: %s\r\n" % (name, value))
    if named:
        # Rare: an upstream naming its own fields in Connection. Filter on a second pass.
        lines = [
            b"%s: %s\r\n" % (name, value)
            for name, value in head.headers
            if name.lower() not in named and name.lower() not in _NOT_FORWARDED
        ]
    return b"".join(lines), has_date


def _asks_websocket(values: list[str]) -> bool:
    return any(
        token.strip().lower().split("/", 1)[0] == "websocket"
        for value in values
        for token in value.split(",")
    )


def status_has_body(status: int) -> bool:
    return status >= 200 and status not in (204, 304)


def _strip_prefix(target: bytes, raw_path: bytes, prefix: bytes) -> bytes:
    prefix = prefix.rstrip(b"/")
    query = target[len(raw_path) :] if target.startswith(raw_path) else b""
    rest = raw_path[len(prefix) :] if raw_path.startswith(prefix) else raw_path
    if not rest.startswith(b"/"):
        rest = b"/" + rest
    return rest + query


def _cookie(values: list[str], name: str) -> bytes | None:
    for value in values:
        for part in value.split(";"):
            key, sep, found = part.partition("=")
            if sep and key.strip() == name:
                return found.strip().encode("latin-1")
    return None


def _describe(error: BaseException) -> str:
    if isinstance(error, ProtocolError):
        return error.detail
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
