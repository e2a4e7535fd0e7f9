"""Active health checks: ``GET health.path`` on every upstream of a route, on a schedule.

A :class:`HealthChecker` probes each upstream of each route that has a ``health`` setting,
keeps the rise/fall counters, and calls ``on_change(route, key, healthy)`` when a verdict
flips. It owns no pool: in the supervisor, :class:`HealthJob` sends its verdicts to every
worker, each of which applies them to its own snapshot; in a single process, the balancer
passes its own ``apply_health`` as ``on_change``.

A probe is one HTTP/1.1 request on a fresh connection (TLS for ``https`` upstreams, with the
default verification), read with :class:`bastion.http.ResponseParser` up to the response
head and no further: the body is never read, and the whole probe (connect, handshake,
request, head) fits in ``health.timeout``, so an upstream that trickles bytes or sends a
huge body costs a probe no more than that.

Servers start healthy, as in HAProxy: a balancer that starts or reloads keeps sending to its
pool at once instead of refusing everything until every server has passed ``rise`` checks
(Envoy's choice), and a server that is really down is found within ``fall`` checks, during
which retries and passive outlier detection cover it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import random
import socket
import ssl
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bastion.balancer.config import BalancerConfig, HealthCheck, Route, Upstream
from bastion.balancer.tls import route_context, server_name
from bastion.engine.bounded import within
from bastion.http import NoResponse, ProtocolError, ResponseHead, ResponseParser

logger = logging.getLogger("bastion.error")

OnChange = Callable[[str, str, bool], None]
Verdicts = dict[tuple[str, str], bool]

# What a worker is sent: one kind of message for a change and for the whole state.
HEALTH_MESSAGE = "balancer.health"
_USER_AGENT = b"bastion-health-check"


@dataclass(eq=False)
class _Target:
    """One upstream of one route and where its counters stand."""

    route: Route
    upstream: Upstream
    check: HealthCheck
    request: bytes
    healthy: bool
    successes: int = 0
    failures: int = 0


class HealthChecker:
    """Probes the upstreams of every route with ``health`` set; see the module docstring.

    ``initial`` carries verdicts over from a previous checker (a reload), so a server that
    was down stays down until it passes ``rise`` checks. ``ssl_context`` is for ``https``
    upstreams (default: the system's trust store, hostname checked).
    """

    def __init__(
        self,
        config: BalancerConfig,
        on_change: OnChange,
        *,
        initial: Mapping[tuple[str, str], bool] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.on_change = on_change
        self._rng = rng or random.Random()
        self._ssl_context = ssl_context
        self._targets: list[_Target] = []
        initial = initial or {}
        for route in config.routes:
            check = route.health
            if check is None:
                continue
            if not check.path.isascii():
                raise ValueError(
                    f'route "{route.name}": health.path must be ASCII (percent-encoded)'
                )
            for upstream in route.upstreams:
                host = check.host.encode("ascii", "replace") if check.host else upstream.authority
                if any(c in host for c in b" \r\n\t\x00\x7f?") or not host:
                    raise ValueError(
                        f'route "{route.name}": health.host {check.host!r} is not a host'
                    )
                self._targets.append(
                    _Target(
                        route,
                        upstream,
                        check,
                        _request(check.path.encode("ascii"), host),
                        initial.get((route.name, upstream.key), True),
                    )
                )
        # Probe sockets that a process forked mid-probe must not keep open.
        self._sockets: set[socket.socket] = set()
        self._watchers: list[asyncio.Future[None]] = []
        _live_checkers.add(self)

    def verdicts(self) -> Verdicts:
        """``(route name, upstream key) → healthy`` for every checked upstream."""
        return {(t.route.name, t.upstream.key): t.healthy for t in self._targets}

    async def run(self) -> None:
        """Check until cancelled (returns at once when no route has checks).

        A run started while another is still going takes over from it, which then ends:
        a supervisor that rolls back to an earlier plan runs its jobs again while the
        cancelled run is still winding down.
        """
        if not self._targets:
            return
        previous = self._watchers
        for task in previous:
            task.cancel()
        if previous:
            await asyncio.gather(*previous, return_exceptions=True)
        tasks = self._watchers = [asyncio.ensure_future(self._watch(t)) for t in self._targets]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._watchers is tasks:
                self._watchers = []

    def next_delay(self, check: HealthCheck) -> float:
        """The pause before the next probe: ``interval``, give or take ``jitter`` of it, at random,
        so that probes of many servers drift apart instead of arriving together."""
        spread = check.jitter * check.interval
        return max(0.0, check.interval + self._rng.uniform(-spread, spread))

    def first_delay(self, check: HealthCheck) -> float:
        """Before the first probe: anywhere in one interval, so a pool is not probed at once
        when the checker starts, whatever the jitter."""
        return self._rng.uniform(0.0, check.interval)

    async def _watch(self, target: _Target) -> None:
        await asyncio.sleep(self.first_delay(target.check))
        while True:
            ok, why = await self.probe(target)
            self._record(target, ok, why)
            # Counted from the probe's end, as Envoy does: a slow server is not probed faster.
            await asyncio.sleep(self.next_delay(target.check))

    def _record(self, target: _Target, ok: bool, why: str) -> None:
        check = target.check
        if ok:
            target.failures = 0
            if target.healthy:
                return
            target.successes += 1
            if target.successes < check.rise:
                return
            count = target.successes
        else:
            target.successes = 0
            if not target.healthy:
                return
            target.failures += 1
            if target.failures < check.fall:
                return
            count = target.failures
        target.healthy = ok
        target.successes = target.failures = 0
        logger.warning(
            'upstream %s (route "%s") is %s: %s after %d check%s',
            target.upstream.key,
            target.route.name,
            "up" if ok else "down",
            why,
            count,
            "" if count == 1 else "s",
        )
        try:
            self.on_change(target.route.name, target.upstream.key, ok)
        except Exception:  # a failing receiver must not stop the checks
            logger.exception("health verdict for %s could not be applied", target.upstream.key)

    async def probe(self, target: _Target) -> tuple[bool, str]:
        """One check: ``(passed, what happened)``, never raises but for cancellation."""
        try:
            status = await within(self._exchange(target), target.check.timeout)
        except asyncio.TimeoutError:
            return False, "timed out"
        except ConnectionRefusedError:
            return False, "connect refused"
        except ssl.SSLError as exc:
            return False, f"TLS: {exc.reason or exc}"
        except NoResponse:
            return False, "closed without responding"
        except ProtocolError as exc:
            return False, f"bad response: {exc}"
        except OSError as exc:
            return False, exc.strerror or str(exc) or type(exc).__name__
        except Exception as exc:  # a name the resolver cannot encode, say: still a failure
            return False, f"{type(exc).__name__}: {exc}"
        if status in target.check.statuses:
            return True, f"status {status}"
        return False, f"status {status}"

    async def _exchange(self, target: _Target) -> int:
        loop = asyncio.get_running_loop()
        upstream = target.upstream
        sock = await self._connect(loop, upstream.host, upstream.port)
        transport: asyncio.Transport | None = None
        try:
            context = None
            if upstream.scheme == "https":
                context = route_context(target.route, self._ssl_context)
            reply: asyncio.Future[int] = loop.create_future()
            transport, _ = await loop.create_connection(
                lambda: _Probe(reply),
                sock=sock,
                ssl=context,
                server_hostname=server_name(target.route, upstream.host) if context else None,
            )
            transport.write(target.request)
            return await reply
        finally:
            # Never read on: what follows the head (a body of any size) is not wanted.
            if transport is not None:
                transport.abort()
            self._sockets.discard(sock)
            sock.close()

    async def _connect(
        self, loop: asyncio.AbstractEventLoop, host: str, port: int
    ) -> socket.socket:
        try:
            ip = ipaddress.ip_address(host)
            addresses: list[tuple[int, Any]] = [
                (socket.AF_INET6 if ip.version == 6 else socket.AF_INET, (host, port))
            ]
        except ValueError:  # a name: resolved for every probe, so a changed record is seen
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            addresses = [(family, address) for family, _, _, _, address in infos]
        error: OSError = OSError(f"{host} resolves to no address")
        for family, address in addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            self._sockets.add(sock)
            try:
                sock.setblocking(False)
                await loop.sock_connect(sock, address)
            except OSError as exc:
                error = exc
            except BaseException:
                self._sockets.discard(sock)
                sock.close()
                raise
            else:
                return sock
            self._sockets.discard(sock)
            sock.close()
        raise error

    def _close_in_child(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                os.close(sock.fileno())


class _Probe(asyncio.Protocol):
    """Feeds what an upstream answers to the response parser until the final head."""

    def __init__(self, reply: asyncio.Future[int]) -> None:
        self.reply = reply
        self.parser = ResponseParser(self)
        self.parser.expect("GET")

    def data_received(self, data: bytes) -> None:
        if self.reply.done():
            return
        try:
            self.parser.feed(data)
        except ProtocolError as exc:
            self.reply.set_exception(exc)

    def eof_received(self) -> bool | None:
        self.connection_lost(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.reply.done():
            return
        if exc is not None:
            self.reply.set_exception(exc)
            return
        try:
            self.parser.feed_eof()
        except ProtocolError as error:
            self.reply.set_exception(error)
        else:  # pragma: no cover - feed_eof raises when no response was awaited
            self.reply.set_exception(ConnectionError("closed before responding"))

    def on_informational(self, head: ResponseHead) -> None:
        pass

    def on_response(self, head: ResponseHead) -> None:
        if not self.reply.done():
            self.reply.set_result(head.status)

    def on_body(self, data: bytes) -> None:
        pass

    def on_response_end(self) -> None:
        pass


class HealthJob:
    """A :class:`HealthChecker` run once, in the supervisor, for ``ServePlan.jobs``.

    Each verdict that changes is broadcast to every worker; a worker that starts later is
    sent every current verdict first (:meth:`state`). In the worker, the handler's
    ``supervisor_message(message)`` hands each message to :func:`health_verdicts`.
    """

    def __init__(
        self,
        config: BalancerConfig,
        *,
        initial: Mapping[tuple[str, str], bool] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._ssl_context = ssl_context
        self.checker = HealthChecker(
            config, self._changed, initial=initial, ssl_context=ssl_context
        )
        self._broadcast: Callable[[dict[str, Any]], None] | None = None
        self._swapped: asyncio.Event | None = None

    async def run(self, broadcast: Callable[[dict[str, Any]], None]) -> None:
        # Kept after the run: nothing changes a verdict once the checker is stopped.
        self._broadcast = broadcast
        while True:
            # Waits even when the checker has nothing to check: a new configuration may.
            swapped = self._swapped = asyncio.Event()
            checking = asyncio.ensure_future(self.checker.run())
            try:
                await swapped.wait()
            finally:
                checking.cancel()
                await asyncio.gather(checking, return_exceptions=True)

    def reconfigure(self, config: BalancerConfig) -> None:
        """Check what ``config`` lists from now on: new upstreams start healthy, removed ones
        are no longer probed, kept ones keep their verdict (``ValueError`` for a route whose
        health settings cannot be probed, and the checks go on as they were)."""
        checker = HealthChecker(
            config, self._changed, initial=self.checker.verdicts(), ssl_context=self._ssl_context
        )
        self.checker = checker
        if self._swapped is not None:
            self._swapped.set()

    def state(self) -> list[dict[str, Any]]:
        verdicts = self.checker.verdicts()
        if not verdicts:
            return []
        return [health_message(list(verdicts.items()))]

    def _changed(self, route: str, key: str, healthy: bool) -> None:
        if self._broadcast is not None:
            self._broadcast(health_message([((route, key), healthy)]))


def health_message(verdicts: list[tuple[tuple[str, str], bool]]) -> dict[str, Any]:
    return {
        "kind": HEALTH_MESSAGE,
        "verdicts": [[route, key, healthy] for (route, key), healthy in verdicts],
    }


def health_verdicts(message: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """``(route, key, healthy)`` for each verdict a supervisor message carries (none when it
    is about something else)."""
    if message.get("kind") != HEALTH_MESSAGE:
        return []
    verdicts = []
    for item in message.get("verdicts", ()):
        if (
            isinstance(item, (list, tuple))
            and len(item) == 3
            and isinstance(item[0], str)
            and isinstance(item[1], str)
            and isinstance(item[2], bool)
        ):
            verdicts.append((item[0], item[1], item[2]))
    return verdicts


def _request(path: bytes, host: bytes) -> bytes:
    return b"".join(
        (
            b"GET ",
            path,
            b" HTTP/1.1\r\nHost: ",
            host,
            b"\r\nUser-Agent: ",
            _USER_AGENT,
            b"\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        )
    )


_live_checkers: weakref.WeakSet[HealthChecker] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A probe's connection open when a process forks (the supervisor starting a worker) would
    # otherwise stay open in the child for the child's whole life, the upstream never seeing
    # it close. The child never runs the parent's loop, so closing the descriptors is enough.
    for checker in list(_live_checkers):
        checker._close_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
