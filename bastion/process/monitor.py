"""The supervisor's monitoring: the workers' telemetry and the admin listener.

On the supervisor's event loop (:mod:`bastion.process.loop`), which runs while the supervisor
waits, the same engine that serves applications serves the admin application (health,
metrics, dashboard) and reads the datagrams workers send once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Sequence

from bastion.engine.config import ServerConfig
from bastion.engine.server import Server
from bastion.observe.admin import AdminRoute, ServerHealth, WorkerSnapshots, admin_app
from bastion.observe.aggregate import Aggregator
from bastion.observe.config import MonitorConfig
from bastion.observe.telemetry import decode

logger = logging.getLogger("bastion.error")

# Each worker's datagram is tens of KiB with a thousand series; several may wait at once.
_BUFFER = 4 << 20
TICK = 1.0


class Monitor:
    """Owns the telemetry socket, the aggregator and, when configured, the admin server."""

    def __init__(
        self, config: MonitorConfig, beat_deadline: float, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.config = config
        self.aggregator = Aggregator(config.max_series)
        self.health = ServerHealth(self.aggregator, beat_deadline)
        self.loop = loop
        receiver, sender = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for sock in (receiver, sender):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER)
        receiver.setblocking(False)
        self._receiver = receiver
        # One buffer for every datagram: a worker's snapshot is never larger than the socket's.
        self._buffer = bytearray(_BUFFER)
        # Inherited by every worker: they all send on it, the supervisor reads the other end.
        self.sender = sender
        self.server: Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.job_routes: list[AdminRoute] = []
        self._routes_of: dict[object, list[AdminRoute]] = {}

    # lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the admin listener (raises OSError if it cannot) and start reading telemetry."""
        loop = self.loop
        loop.add_reader(self._receiver.fileno(), self._drain)
        self._ticker = loop.create_task(self._tick_forever())
        if self.config.admin_bind is None:
            return
        config = ServerConfig(
            threads=1,
            queue_size=1,
            max_connections=256,
            keepalive_timeout=30.0,
            write_timeout=10.0,
            graceful_timeout=2.0,
        )
        app = admin_app(self.health, token=self.config.admin_token, extra=lambda: self.job_routes)
        server = Server(app, config, binds=(self.config.admin_bind,))
        loop.run_until_complete(server.start())
        self.server = server

    @property
    def urls(self) -> list[str]:
        return self.server.urls if self.server is not None else []

    def close(self) -> None:
        """Stop the admin listener (open dashboards are told to go) and release everything
        but the loop, which is the supervisor's."""
        loop = self.loop
        if self._ticker is not None:
            self._ticker.cancel()
        if self.server is not None:
            with contextlib.suppress(Exception):
                loop.run_until_complete(self.server.shutdown(timeout=2.0))
        with contextlib.suppress(Exception):
            loop.run_until_complete(asyncio.sleep(0))
        loop.remove_reader(self._receiver.fileno())
        self._receiver.close()
        self.sender.close()

    def child_fds(self) -> list[int]:
        """What a forked worker must close: every descriptor the monitor holds but the
        sender, which the worker keeps to ship its telemetry (the loop's own are
        :meth:`SupervisorLoop.child_fds`)."""
        fds = [self._receiver.fileno()]
        if self.server is not None:
            fds.extend(sock.fileno() for sock in self.server.sockets)
            state = self.server.state
            if state is not None:
                for conn in state.connections:
                    transport = conn.transport
                    info = transport.get_extra_info("socket") if transport is not None else None
                    if info is not None:
                        fds.append(info.fileno())
        return [fd for fd in fds if fd >= 0]

    # what the supervisor reports ----------------------------------------------------------

    def worker_started(
        self, pid: int, slot: int, generation: int, group: str | None = None
    ) -> None:
        self.aggregator.worker_started(pid, slot, generation, group)

    def worker_ready(self, pid: int) -> None:
        self.aggregator.worker_state(pid, "serving")

    def worker_beat(self, pid: int) -> None:
        self.aggregator.beat(pid)

    def worker_stopping(self, pid: int) -> None:
        self.aggregator.worker_state(pid, "draining")

    def worker_exited(self, pid: int, reason: str) -> None:
        self._drain()  # its last snapshot, sent as it stopped, is counted first
        self.aggregator.worker_exited(pid, reason)

    def serve_jobs(self, jobs: Sequence[object], owner: object = None) -> None:
        """Answer the admin routes of ``owner``'s current jobs, in place of its previous ones
        (several supervisors may share one monitor: ``bastion up``).

        A job that has them has ``admin_routes(workers)``, which returns
        :data:`~bastion.observe.admin.AdminRoute` tuples; ``workers()`` gives the latest
        snapshot of each serving worker, for the figures only workers know.
        """
        routes: list[AdminRoute] = []
        for job in jobs:
            contribute = getattr(job, "admin_routes", None)
            if contribute is None:
                continue
            try:
                routes.extend(contribute(self.worker_snapshots))
            except Exception:  # a job's bug must not take the admin listener down
                logger.exception("cannot add a job's admin routes")
        self._routes_of[owner] = routes
        self.job_routes = [route for each in self._routes_of.values() for route in each]

    def worker_snapshots(self) -> WorkerSnapshots:
        return [
            (worker.slot, worker.snapshot)
            for worker in self.aggregator.workers.values()
            if worker.state == "serving" and worker.snapshot is not None
        ]

    def draining(self) -> None:
        """The server is stopping: readiness fails from now on (liveness does not)."""
        self.health.draining = True

    # inside -----------------------------------------------------------------------------------

    def _drain(self) -> None:
        receiver = self._receiver
        buffer = self._buffer
        while True:
            try:
                size = receiver.recv_into(buffer)
            except OSError:  # nothing more waiting (or the socket is gone)
                return
            snapshot = decode(memoryview(buffer)[:size])
            if snapshot is not None:
                self.aggregator.update(snapshot)

    async def _tick_forever(self) -> None:
        aggregator = self.aggregator
        next_tick = time.monotonic()
        while True:
            next_tick += TICK
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
            try:
                view = aggregator.view()
                totals = await view.totals_stepwise()
                aggregator.history.append(aggregator.next_point(view, totals))
            except Exception:  # a figure must never take the supervisor down
                logger.exception("cannot compute the monitoring figures")
