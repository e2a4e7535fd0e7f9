"""A worker's side of monitoring: take a snapshot of its numbers once a second and ship it.

The hot path only adds to plain numbers (the engine's :class:`~bastion.engine.Stats` and
:class:`~bastion.observe.metrics.RequestMetrics`). Once a second, on the worker's loop, this
module reads them together with what is cheap to read about the process (CPU time, memory,
open files, event-loop lag, the thread pool), runs the application's health checks, collects
the application's own ``prometheus_client`` metrics, and sends the lot as one datagram to the
supervisor. Every snapshot is cumulative, so one that is lost (a full socket buffer) costs
nothing but a second of freshness, and a worker that dies unannounced loses at most the last
second of its counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import marshal
import os
import resource
import socket
import time
import zlib
from typing import TYPE_CHECKING, Any

from bastion.observe.config import MonitorConfig
from bastion.observe.health import HealthChecks, load_check
from bastion.observe.metrics import DEFAULT_MAX_SERIES, RequestMetrics
from bastion.observe.probes import ProbeRoutes
from bastion.websocket.stats import websocket_stats

if TYPE_CHECKING:
    from bastion.engine.handler import Handler
    from bastion.engine.state import ServerState

logger = logging.getLogger("bastion.error")

SNAPSHOT_VERSION = 1
# Families the default prometheus_client registry holds for every process; a worker's own
# process figures are reported by Bastion, per worker, instead.
_DEFAULT_FAMILIES = ("process_", "python_gc_", "python_info")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class WorkerTelemetry:
    """Counts requests in one worker and reports them, with its state, every ``interval``."""

    def __init__(
        self,
        slot: int,
        checks: HealthChecks | None = None,
        *,
        max_series: int = DEFAULT_MAX_SERIES,
        interval: float = 1.0,
    ) -> None:
        self.slot = slot
        self.metrics = RequestMetrics(max_series)
        self.checks = checks or HealthChecks()
        self.interval = interval
        self.loop_lag = 0.0
        self.started = time.time()
        self._state: ServerState | None = None
        # The probe paths on the main listener, if any (--health-path-prefix).
        self.probes: ProbeRoutes | None = None

    def server_stopping(self) -> None:
        """The supervisor was told to stop the server: the probe paths' readiness fails from
        now on, while this worker still serves (through a shutdown delay, say)."""
        if self.probes is not None:
            self.probes.stopping = True

    def attach(self, state: ServerState) -> None:
        """Start counting the requests of the server behind ``state``."""
        self._state = state
        state.stats.attach(self.metrics)

    async def run(self, channel: socket.socket) -> None:
        """Ship a snapshot every interval until cancelled (then one last one).

        The first goes out as soon as the checks have run once, so readiness does not wait a
        whole interval; checks then run on their own schedule, so a slow one never delays
        the numbers.
        """
        channel.setblocking(False)
        await self.checks.run_all()
        send(channel, self.snapshot())
        checking = asyncio.ensure_future(self._check_forever()) if len(self.checks) else None
        try:
            while True:
                before = time.monotonic()
                await asyncio.sleep(self.interval)
                # How late the loop woke us is how long a request would have waited for it.
                self.loop_lag = max(0.0, time.monotonic() - before - self.interval)
                send(channel, self.snapshot())
        finally:
            if checking is not None:
                checking.cancel()
            send(channel, self.snapshot(final=True))

    async def check_forever(self) -> None:
        """Run the checks once an interval (for the probe paths, with no supervisor to ship
        figures to)."""
        await self.checks.run_all()
        await self._check_forever()

    async def _check_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.checks.run_all()

    def snapshot(self, final: bool = False) -> dict[str, Any]:
        state = self._state
        engine: dict[str, Any] = {}
        pool: dict[str, int] = {}
        websocket: dict[str, Any] = {}
        if state is not None:
            websocket = websocket_stats(state).snapshot()
            stats = state.stats
            engine = {
                "requests": stats.requests,
                "in_flight": max(0, stats.requests - self.metrics.completed),
                "connections_opened": stats.connections_opened,
                "connections_closed": stats.connections_closed,
                "keepalive_reused": stats.keepalive_reused,
                "errors": dict(stats.errors_by_kind),
                "refusals": {
                    status: count
                    for status, count in stats.responses_by_status.items()
                    if status >= 400
                },
                "draining": state.draining,
            }
            threads = state.config.threads
            pending = state.pool.pending
            pool = {
                "threads": threads,
                "busy": min(pending, threads),
                "queued": max(0, pending - threads),
            }
        return {
            "v": SNAPSHOT_VERSION,
            "pid": os.getpid(),
            "slot": self.slot,
            "time": time.time(),
            "started": self.started,
            "final": final,
            "engine": engine,
            "pool": pool,
            "websocket": websocket,
            "loop_lag": self.loop_lag,
            "process": process_figures(),
            "checks": self.checks.results(),
            **self.metrics.snapshot(),
            "app": app_metrics(),
        }


def for_worker(
    handler: Handler, monitor: MonitorConfig, slot: int
) -> tuple[Handler, WorkerTelemetry]:
    """Set up a worker's monitoring: its checks, its telemetry, and the probe paths if asked.

    Raises ImportError or ValueError (in the worker, at start-up) for a check that cannot be
    loaded, so a typo is reported where the application's own errors are.
    """
    checks = HealthChecks.of(handler)
    for spec in monitor.health_checks:
        checks.add(load_check(spec), spec, monitor.health_check_timeout)
    telemetry = WorkerTelemetry(slot, checks, max_series=monitor.max_series)
    if monitor.health_path_prefix:
        handler = telemetry.probes = ProbeRoutes(handler, monitor.health_path_prefix, checks)
    return handler, telemetry


_warned_size = False


def send(channel: socket.socket, snapshot: dict[str, Any]) -> None:
    # A datagram is delivered whole or not at all; a full buffer or a gone supervisor just
    # means this second is skipped.
    global _warned_size
    try:
        channel.send(encode(snapshot))
    except OSError as exc:
        if exc.errno == errno.EMSGSIZE and not _warned_size:
            _warned_size = True
            logger.warning(
                "monitoring snapshot too large for the telemetry socket; lower "
                "--metrics-max-series (or raise net.core.wmem_max)"
            )


def encode(snapshot: dict[str, Any]) -> bytes:
    # Compressed: a thousand series are a few hundred KiB of marshal data, beyond what a
    # datagram may carry on a default Linux (net.core.wmem_max), and they shrink a lot.
    return zlib.compress(marshal.dumps(snapshot), 1)


def decode(data: bytes | memoryview) -> dict[str, Any] | None:
    """A snapshot from a worker, or None if it is not one this version understands."""
    try:
        snapshot = marshal.loads(zlib.decompress(data))
    except (EOFError, ValueError, TypeError, zlib.error):
        return None
    if not isinstance(snapshot, dict) or snapshot.get("v") != SNAPSHOT_VERSION:
        return None
    return snapshot


def process_figures() -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    figures = {"cpu_seconds": usage.ru_utime + usage.ru_stime, "rss_bytes": 0.0, "open_fds": 0.0}
    with contextlib.suppress(OSError):
        with open("/proc/self/statm", "rb") as statm:
            figures["rss_bytes"] = float(int(statm.read().split()[1]) * _PAGE_SIZE)
        figures["open_fds"] = float(len(os.listdir("/proc/self/fd")))
    return figures


def app_metrics() -> list[
    tuple[str, str, str, list[tuple[str, tuple[tuple[str, str], ...], float]]]
]:
    """The application's own ``prometheus_client`` metrics, as plain data."""
    try:
        from prometheus_client import REGISTRY
    except ImportError:  # pragma: no cover - a core dependency, but never fatal here
        return []
    families = []
    for family in REGISTRY.collect():
        if family.name.startswith(_DEFAULT_FAMILIES):
            continue
        samples = [
            (sample.name, tuple(sorted(sample.labels.items())), float(sample.value))
            for sample in family.samples
            # A counter's creation time cannot be summed across workers.
            if not sample.name.endswith("_created")
        ]
        families.append((family.name, family.type, family.documentation, samples))
    return families
