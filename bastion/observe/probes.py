"""Health probes on the main listener, for platforms that only probe the service's port.

With ``--health-path-prefix /_bastion``, ``/_bastion/healthz`` and ``/_bastion/readyz`` are
answered by the worker that accepted the probe, before the application sees the request.
They speak for that worker only (its loop answered; the server is not stopping; its own checks
pass): the admin listener, served by the supervisor, is the place for the whole server's view.
Readiness fails from the moment the supervisor is told to stop (``stopping``, set on its
notice), not only once the worker drains, so a shutdown delay keeps the worker serving with
readiness failing, as the admin listener's does.
"""

from __future__ import annotations

from bastion.engine.exchange import Exchange
from bastion.engine.handler import Handler, HandlerWrapper
from bastion.observe.health import HealthChecks

_TEXT = [("content-type", "text/plain; charset=utf-8"), ("cache-control", "no-store")]


class ProbeRoutes(HandlerWrapper):
    """Answers ``{prefix}/healthz`` and ``{prefix}/readyz``; everything else goes to ``inner``."""

    def __init__(self, inner: Handler, prefix: str, checks: HealthChecks) -> None:
        super().__init__(inner)
        prefix = "/" + prefix.strip("/")
        if prefix == "/":
            raise ValueError("the health path prefix cannot be '/'")
        self.checks = checks
        # Set when the supervisor says the server is stopping (before the worker drains).
        self.stopping = False
        self._live = f"{prefix}/healthz".encode()
        self._ready = f"{prefix}/readyz".encode()
        self._handle = inner.handle

    def handle(self, exchange: Exchange) -> None:
        target = exchange.head.raw_path
        if target == self._live:
            exchange.route = target.decode()
            exchange.respond(200, _TEXT, b"ok\n")
        elif target == self._ready:
            exchange.route = target.decode()
            self._readiness(exchange)
        else:
            self._handle(exchange)

    def _readiness(self, exchange: Exchange) -> None:
        failing = [name for name, result in self.checks.results().items() if not result["ok"]]
        if self.stopping or exchange.conn.state.draining:
            failing.insert(0, "draining")
        if failing:
            body = "failing\n" + "".join(f"- {reason}\n" for reason in failing)
            exchange.respond(503, _TEXT, body.encode())
        else:
            exchange.respond(200, _TEXT, b"ok\n")
