"""The supervisor's view of every worker: snapshots merged into one server's numbers.

Each worker ships a cumulative snapshot once a second (:mod:`bastion.observe.telemetry`); the
latest per worker is kept. When a worker exits, its last snapshot's counters are folded into
a *retired* total, so the sums exposed here never go backwards across crashes, kills, reloads
and recycling (``rate()`` in Prometheus relies on that), and the cost of a scrape depends on
the number of series, never on how many workers have come and gone.

:class:`MetricsCollector` exposes the merged numbers through ``prometheus_client``;
:meth:`Aggregator.tick` keeps a short per-second history for the dashboard and ``bastion top``.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from bastion.observe.metrics import DEFAULT_MAX_SERIES, DURATION_BUCKETS, OVERFLOW

HISTORY = 300  # seconds of per-second figures kept for the dashboard
_BUCKET_LABELS = [f"{bound:g}" for bound in DURATION_BUCKETS] + ["+Inf"]
_COUNTED_APP_TYPES = frozenset(("counter", "histogram", "summary"))
WEBSOCKET_COUNTERS = ("opened", "closed", "messages_in", "messages_out", "bytes_in", "bytes_out")

Key = tuple[Any, ...]


class _Totals:
    """Cumulative counters, summed over any number of snapshots."""

    def __init__(self) -> None:
        # The service is "" except under ``bastion up``, where one supervisor runs several.
        self.requests: dict[Key, list[float]] = {}  # (service, method, status, route) -> 3 sums
        self.durations: dict[Key, list[float]] = {}  # (service, method, route) -> buckets + sum
        self.engine: dict[str, float] = {}
        self.errors: dict[str, float] = {}
        self.cpu_by_slot: dict[str, float] = {}
        self.websocket: dict[str, float] = {}  # opened, messages_in, bytes_out, ...
        self.websocket_closes: dict[int, float] = {}  # close code -> count
        self.app: dict[tuple[str, str, str], dict[Key, float]] = {}  # family -> sample -> sum

    def add(self, snapshot: dict[str, Any]) -> None:
        service = snapshot.get("service", "")
        for row in snapshot.get("requests", ()):
            _add_to(self.requests, (service, *row[:3]), row[3:])
        for row in snapshot.get("durations", ()):
            _add_to(self.durations, (service, *row[:2]), row[2:])
        engine = snapshot.get("engine") or {}
        for name in ("requests", "connections_opened", "keepalive_reused"):
            self.engine[name] = self.engine.get(name, 0) + engine.get(name, 0)
        for kind, count in (engine.get("errors") or {}).items():
            self.errors[kind] = self.errors.get(kind, 0) + count
        websocket = snapshot.get("websocket") or {}
        for name in WEBSOCKET_COUNTERS:
            self.websocket[name] = self.websocket.get(name, 0) + websocket.get(name, 0)
        for code, count in (websocket.get("closes") or {}).items():
            self.websocket_closes[code] = self.websocket_closes.get(code, 0) + count
        slot = snapshot.get("label") or str(snapshot.get("slot", 0))
        cpu = (snapshot.get("process") or {}).get("cpu_seconds", 0.0)
        self.cpu_by_slot[slot] = self.cpu_by_slot.get(slot, 0.0) + cpu
        for name, kind, doc, samples in snapshot.get("app", ()):
            if kind not in _COUNTED_APP_TYPES:
                continue
            family = self.app.setdefault((name, kind, doc), {})
            for sample_name, labels, value in samples:
                key = (sample_name, tuple(labels))
                family[key] = family.get(key, 0.0) + value

    def merged(self, live: Iterable[dict[str, Any]]) -> _Totals:
        total = _Totals()
        total.requests = {key: list(values) for key, values in self.requests.items()}
        total.durations = {key: list(values) for key, values in self.durations.items()}
        total.engine = dict(self.engine)
        total.errors = dict(self.errors)
        total.cpu_by_slot = dict(self.cpu_by_slot)
        total.websocket = dict(self.websocket)
        total.websocket_closes = dict(self.websocket_closes)
        total.app = {name: dict(samples) for name, samples in self.app.items()}
        for snapshot in live:
            total.add(snapshot)
        return total


def _add_to(table: dict[Key, list[float]], key: Key, values: Iterable[float]) -> None:
    sums = table.get(key)
    if sums is None:
        table[key] = list(values)
    else:
        for index, value in enumerate(values):
            sums[index] += value


class WorkerView:
    """What the supervisor knows of one worker besides its snapshots (changed on the loop)."""

    __slots__ = (
        "pid",
        "slot",
        "label",
        "service",
        "generation",
        "state",
        "started",
        "last_beat",
        "snapshot",
    )

    def __init__(
        self, pid: int, slot: int, generation: int, started: float, group: str | None = None
    ) -> None:
        self.pid = pid
        self.slot = slot
        # The ``worker`` label: the slot, or "group/slot" where one supervisor process runs
        # several groups (bastion up), whose slots would otherwise be taken for each other.
        self.label = f"{group}/{slot}" if group else str(slot)
        self.service = group or ""
        self.generation = generation
        self.state = "starting"
        self.started = started
        self.last_beat = started
        self.snapshot: dict[str, Any] | None = None


class Aggregator:
    """Every worker's latest snapshot, the retired totals, and a per-second history."""

    def __init__(self, max_series: int = DEFAULT_MAX_SERIES) -> None:
        self.max_series = max_series
        self.workers: dict[int, WorkerView] = {}
        self.retired = _Totals()
        self.starts = 0
        self.exits: dict[str, int] = {}
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self._previous: _Totals | None = None
        self.started = time.time()

    # what the supervisor reports --------------------------------------------------------------

    def worker_started(
        self, pid: int, slot: int, generation: int, group: str | None = None
    ) -> None:
        self.workers[pid] = WorkerView(pid, slot, generation, time.monotonic(), group)
        self.starts += 1

    def worker_state(self, pid: int, state: str) -> None:
        worker = self.workers.get(pid)
        if worker is not None:
            worker.state = state

    def beat(self, pid: int) -> None:
        worker = self.workers.get(pid)
        if worker is not None:
            worker.last_beat = time.monotonic()

    def update(self, snapshot: dict[str, Any]) -> None:
        worker = self.workers.get(snapshot.get("pid", 0))
        if worker is not None:  # a late datagram from a retired worker is not counted twice
            snapshot["label"] = worker.label
            if worker.service:
                snapshot["service"] = worker.service
            worker.snapshot = snapshot

    def worker_exited(self, pid: int, reason: str) -> None:
        worker = self.workers.pop(pid, None)
        if worker is None:
            return
        if worker.snapshot is not None:
            # A new object, never changed in place: a view taken earlier (being rendered on
            # another thread) keeps the totals it was taken with.
            self.retired = self.retired.merged([worker.snapshot])
        self.exits[reason] = self.exits.get(reason, 0) + 1

    # reading it --------------------------------------------------------------------------------

    def live_snapshots(self) -> list[dict[str, Any]]:
        return [w.snapshot for w in self.workers.values() if w.snapshot is not None]

    def view(self) -> AggregateView:
        """What is known now, frozen: cheap to take on the loop, safe to read on any thread."""
        return AggregateView(
            self.retired,
            tuple(
                WorkerRecord(w.pid, w.slot, w.state, w.snapshot, w.label)
                for w in self.workers.values()
            ),
            self.starts,
            dict(self.exits),
            self.max_series,
        )

    def totals(self) -> _Totals:
        return self.view().totals()

    def next_point(self, view: AggregateView, totals: _Totals | None = None) -> dict[str, Any]:
        """The figures of the last second, from ``view`` (and its ``totals``, if already
        summed); one call at a time. The caller appends the result to :attr:`history`."""
        now = totals if totals is not None else view.totals()
        previous, self._previous = self._previous, now
        return _point(now, previous, view.workers)

    def tick(self) -> dict[str, Any]:
        """Once a second, all on the calling thread: the last second's point, recorded."""
        point = self.next_point(self.view())
        self.history.append(point)
        return point


class WorkerRecord(NamedTuple):
    pid: int
    slot: int
    state: str
    snapshot: dict[str, Any] | None
    label: str = ""


class AggregateView(NamedTuple):
    retired: _Totals
    workers: tuple[WorkerRecord, ...]
    starts: int
    exits: dict[str, int]
    max_series: int

    def snapshots(self) -> list[dict[str, Any]]:
        return [w.snapshot for w in self.workers if w.snapshot is not None]

    def totals(self) -> _Totals:
        return self.retired.merged(self.snapshots())

    async def totals_stepwise(self) -> _Totals:
        """:meth:`totals`, giving the loop a turn after each worker's snapshot, so a probe
        that arrives during a scrape is answered in the middle of it."""
        total = self.retired.merged(())
        for snapshot in self.snapshots():
            await asyncio.sleep(0)
            total.add(snapshot)
        return total


def _route_label(service: str, method: str, route: str) -> str:
    route_text = f"{method} {route or '-'}"
    return f"{service}: {route_text}" if service else route_text


def _websocket_messages(now: _Totals, previous: _Totals | None) -> float:
    """WebSocket messages both ways since ``previous``."""
    if previous is None:
        return 0.0
    names = ("messages_in", "messages_out")
    moved = sum(now.websocket.get(n, 0) - previous.websocket.get(n, 0) for n in names)
    return max(0.0, moved)


def _point(
    now: _Totals, previous: _Totals | None, workers: Iterable[WorkerRecord]
) -> dict[str, Any]:
    statuses: dict[str, float] = {}
    routes: dict[str, float] = {}
    buckets = [0.0] * (len(DURATION_BUCKETS) + 1)
    slowest: dict[str, float] = {}
    if previous is not None:
        for key, values in now.requests.items():
            service, method, status, route = key
            before = previous.requests.get(key)
            count = values[0] - (before[0] if before else 0)
            if count > 0:
                group = f"{int(status) // 100}xx"
                statuses[group] = statuses.get(group, 0) + count
                label = _route_label(service, method, route)
                routes[label] = routes.get(label, 0) + count
        for key, values in now.durations.items():
            before = previous.durations.get(key)
            for index in range(len(buckets)):
                buckets[index] += values[index] - (before[index] if before else 0)
            seconds = values[-1] - (before[-1] if before else 0)
            observed = sum(values[:-1]) - (sum(before[:-1]) if before else 0)
            if observed > 0:
                slowest[_route_label(*key)] = seconds / observed
    per_worker = []
    for worker in sorted(workers, key=lambda w: w.slot):
        snapshot = worker.snapshot or {}
        engine = snapshot.get("engine") or {}
        process = snapshot.get("process") or {}
        pool = snapshot.get("pool") or {}
        websocket = snapshot.get("websocket") or {}
        per_worker.append(
            {
                "slot": worker.slot,
                "label": worker.label,
                "pid": worker.pid,
                "state": worker.state,
                "requests": engine.get("requests", 0),
                "in_flight": engine.get("in_flight", 0),
                "connections": engine.get("connections_opened", 0)
                - engine.get("connections_closed", 0),
                "busy": pool.get("busy", 0),
                "queued": pool.get("queued", 0),
                "loop_lag": snapshot.get("loop_lag", 0.0),
                "websockets": websocket.get("opened", 0) - websocket.get("closed", 0),
                "rss": process.get("rss_bytes", 0.0),
                "cpu": process.get("cpu_seconds", 0.0),
            }
        )
    return {
        "time": time.time(),
        "rps": sum(statuses.values()),
        "p50": quantile(buckets, 0.50),
        "p95": quantile(buckets, 0.95),
        "p99": quantile(buckets, 0.99),
        "status": statuses,
        "connections": sum(w["connections"] for w in per_worker),
        "in_flight": sum(w["in_flight"] for w in per_worker),
        "busy": sum(w["busy"] for w in per_worker),
        "queued": sum(w["queued"] for w in per_worker),
        "loop_lag": max((w["loop_lag"] for w in per_worker), default=0.0),
        "websockets": sum(w["websockets"] for w in per_worker),
        "websocket_messages": _websocket_messages(now, previous),
        "workers": per_worker,
        "busiest": sorted(routes.items(), key=lambda item: -item[1])[:5],
        "slowest": sorted(slowest.items(), key=lambda item: -item[1])[:5],
    }


def quantile(buckets: list[float], q: float) -> float | None:
    """The ``q`` quantile (seconds) of a histogram's per-bucket counts, interpolated linearly."""
    total = sum(buckets)
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    lower = 0.0
    for index, count in enumerate(buckets):
        upper = DURATION_BUCKETS[index] if index < len(DURATION_BUCKETS) else DURATION_BUCKETS[-1]
        if count and seen + count >= rank:
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
        lower = upper
    return DURATION_BUCKETS[-1]


# Figures the supervisor itself holds (service discovery's, say), added by the module that
# keeps them: each is called with the metric prefix on every scrape.
_SUPERVISOR_SOURCES: list[Callable[[str], Iterable[Metric]]] = []


def add_supervisor_metrics(source: Callable[[str], Iterable[Metric]]) -> None:
    """Have ``source(prefix)`` add its families to every scrape of ``/metrics``."""
    if source not in _SUPERVISOR_SOURCES:
        _SUPERVISOR_SOURCES.append(source)


class MetricsCollector:
    """A ``prometheus_client`` collector over an :class:`Aggregator` (a fresh view per
    scrape) or over one :class:`AggregateView` (to render it on another thread)."""

    def __init__(
        self,
        source: Aggregator | AggregateView,
        prefix: str = "bastion",
        totals: _Totals | None = None,
    ) -> None:
        self.source = source
        self.prefix = prefix
        self._totals = totals

    def describe(self) -> list[Metric]:
        return []  # collected fresh on every scrape; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        source = self.source
        view = source.view() if isinstance(source, Aggregator) else source
        totals = self._totals or view.totals()
        p = self.prefix
        yield from _request_families(p, totals, view.max_series)
        yield from _engine_families(p, totals)
        yield from _websocket_families(p, totals, view)
        yield from _worker_families(p, totals, view)
        yield from _app_families(totals, view)
        for extra in _SUPERVISOR_SOURCES:
            yield from extra(p)


def _capped(table: dict[Key, list[float]], cap: int, route_index: int) -> dict[Key, list[float]]:
    """At most ``cap`` label sets; the rest are summed under the route ``__overflow__``."""
    if len(table) <= cap:
        return table
    kept: dict[Key, list[float]] = {}
    for key, values in table.items():
        if len(kept) >= cap - 1:
            key = (*key[:route_index], OVERFLOW, *key[route_index + 1 :])
        _add_to(kept, key, values)
    return kept


def _request_families(p: str, totals: _Totals, cap: int) -> Iterator[Metric]:
    # A ``service`` label only where there are services (bastion up): a plain server's
    # series keep the names dashboards and alerts were written against.
    by_service = any(key[0] for key in totals.requests) or any(key[0] for key in totals.durations)
    first = 0 if by_service else 1  # where each key's labels begin
    names = ["service"] if by_service else []
    requests = CounterMetricFamily(
        f"{p}_requests",
        "Requests answered, by method, status and route template.",
        labels=[*names, "method", "status", "route"],
    )
    request_bytes: dict[Key, float] = {}
    response_bytes: dict[Key, float] = {}
    for key, (count, received, sent) in _capped(totals.requests, cap, 3).items():
        requests.add_metric([str(label) for label in key[first:]], count)
        by_route = (*key[first:2], key[3])
        request_bytes[by_route] = request_bytes.get(by_route, 0) + received
        response_bytes[by_route] = response_bytes.get(by_route, 0) + sent
    yield requests
    for name, doc, table in (
        ("request_body_bytes", "Request body bytes received, by method and route.", request_bytes),
        ("response_body_bytes", "Response body bytes sent, by method and route.", response_bytes),
    ):
        family = CounterMetricFamily(f"{p}_{name}", doc, labels=[*names, "method", "route"])
        for labels, value in table.items():
            family.add_metric(list(labels), value)
        yield family
    durations = HistogramMetricFamily(
        f"{p}_request_duration_seconds",
        "Time from the request head to the end of the response, by method and route.",
        labels=[*names, "method", "route"],
    )
    for key, values in _capped(totals.durations, cap, 2).items():
        cumulative = 0.0
        buckets = []
        for label, count in zip(_BUCKET_LABELS, values[:-1], strict=True):
            cumulative += count
            buckets.append((label, cumulative))
        durations.add_metric(list(key[first:]), buckets, values[-1])
    yield durations


_REFUSALS = {
    "pool-full": "503",
    "connection-limit": "503",
    "timeout-head": "408",
    "timeout-body": "408",
}


def _engine_families(p: str, totals: _Totals) -> Iterator[Metric]:
    accepted = CounterMetricFamily(f"{p}_connections_accepted", "Connections accepted.")
    accepted.add_metric([], totals.engine.get("connections_opened", 0))
    yield accepted
    reused = CounterMetricFamily(
        f"{p}_keepalive_reused", "Requests served on a connection that had served one before."
    )
    reused.add_metric([], totals.engine.get("keepalive_reused", 0))
    yield reused
    refusals = CounterMetricFamily(
        f"{p}_refusals",
        "Requests refused by the server itself, by status and reason.",
        labels=["status", "reason"],
    )
    timeouts = CounterMetricFamily(
        f"{p}_timeouts", "Deadlines that expired, by what was awaited.", labels=["kind"]
    )
    errors = CounterMetricFamily(
        f"{p}_errors", "Handler failures and broken responses, by kind.", labels=["kind"]
    )
    for kind, count in sorted(totals.errors.items()):
        if kind.startswith("protocol-"):
            refusals.add_metric([kind[9:], "protocol"], count)
        elif kind in _REFUSALS:
            refusals.add_metric([_REFUSALS[kind], kind], count)
        if kind.startswith("timeout-"):
            timeouts.add_metric([kind[8:]], count)
        elif not kind.startswith("protocol-") and kind not in _REFUSALS:
            errors.add_metric([kind], count)
    yield refusals
    yield timeouts
    yield errors


def _websocket_families(p: str, totals: _Totals, view: AggregateView) -> Iterator[Metric]:
    counts = totals.websocket
    opened = CounterMetricFamily(f"{p}_websocket_connections", "WebSocket connections accepted.")
    opened.add_metric([], counts.get("opened", 0))
    yield opened
    current = GaugeMetricFamily(f"{p}_websocket_connections_open", "Open WebSocket connections.")
    # From the live workers alone: a worker that exited took its connections with it.
    live = [snapshot.get("websocket") or {} for snapshot in view.snapshots()]
    current.add_metric([], sum(ws.get("opened", 0) - ws.get("closed", 0) for ws in live))
    yield current
    messages = CounterMetricFamily(
        f"{p}_websocket_messages", "WebSocket messages, by direction.", labels=["direction"]
    )
    payload = CounterMetricFamily(
        f"{p}_websocket_payload_bytes",
        "WebSocket message payload bytes (before compression), by direction.",
        labels=["direction"],
    )
    for direction in ("in", "out"):
        messages.add_metric([direction], counts.get(f"messages_{direction}", 0))
        payload.add_metric([direction], counts.get(f"bytes_{direction}", 0))
    yield messages
    yield payload
    closes = CounterMetricFamily(
        f"{p}_websocket_closes",
        "Closed WebSocket connections, by close code (1006: no close frame; 0: outside 1000-4999).",
        labels=["code"],
    )
    for code, count in sorted(totals.websocket_closes.items()):
        closes.add_metric([str(code)], count)
    yield closes


def _worker_families(p: str, totals: _Totals, view: AggregateView) -> Iterator[Metric]:
    starts = CounterMetricFamily(f"{p}_worker_starts", "Worker processes started.")
    starts.add_metric([], view.starts)
    yield starts
    exits = CounterMetricFamily(
        f"{p}_worker_exits", "Worker processes that exited, by reason.", labels=["reason"]
    )
    for reason, count in sorted(view.exits.items()):
        exits.add_metric([reason], count)
    yield exits
    gauges = {
        "requests_in_flight": ("Requests received and not yet answered.", "engine", "in_flight"),
        "pool_threads": ("Threads of the pool for blocking handlers.", "pool", "threads"),
        "pool_busy_threads": ("Pool threads running a handler.", "pool", "busy"),
        "pool_queue_depth": ("Blocking handlers waiting for a thread.", "pool", "queued"),
        "process_resident_memory_bytes": ("Resident memory.", "process", "rss_bytes"),
        "process_open_fds": ("Open file descriptors.", "process", "open_fds"),
    }
    families = {
        name: GaugeMetricFamily(f"{p}_{name}", doc, labels=["worker"])
        for name, (doc, _, _) in gauges.items()
    }
    connections = GaugeMetricFamily(
        f"{p}_connections_open", "Open client connections.", labels=["worker"]
    )
    lag = GaugeMetricFamily(
        f"{p}_event_loop_lag_seconds",
        "How late the worker's event loop ran a timer, last second.",
        labels=["worker"],
    )
    for worker in view.workers:
        snapshot = worker.snapshot
        if snapshot is None:
            continue
        label = [worker.label]
        for name, (_, section, field) in gauges.items():
            families[name].add_metric(label, (snapshot.get(section) or {}).get(field, 0))
        engine = snapshot.get("engine") or {}
        connections.add_metric(
            label, engine.get("connections_opened", 0) - engine.get("connections_closed", 0)
        )
        lag.add_metric(label, snapshot.get("loop_lag", 0.0))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    families["process_resident_memory_bytes"].add_metric(["supervisor"], _own_rss())
    yield from families.values()
    yield connections
    yield lag
    cpu = CounterMetricFamily(
        f"{p}_process_cpu_seconds",
        "CPU time of the worker processes in each slot, and of the supervisor.",
        labels=["worker"],
    )
    for slot, seconds in sorted(totals.cpu_by_slot.items()):
        cpu.add_metric([slot], seconds)
    cpu.add_metric(["supervisor"], usage.ru_utime + usage.ru_stime)
    yield cpu
    states: dict[str, int] = {}
    for worker in view.workers:
        states[worker.state] = states.get(worker.state, 0) + 1
    workers = GaugeMetricFamily(f"{p}_workers", "Worker processes, by state.", labels=["state"])
    for state in ("starting", "serving", "draining"):
        workers.add_metric([state], states.get(state, 0))
    yield workers
    checks = GaugeMetricFamily(
        f"{p}_health_check_passing",
        "1 when a readiness check passes in every worker.",
        labels=["check"],
    )
    verdicts: dict[str, bool] = {}
    for snapshot in view.snapshots():
        for name, result in (snapshot.get("checks") or {}).items():
            verdicts[name] = verdicts.get(name, True) and bool(result.get("ok"))
    for name, passing in sorted(verdicts.items()):
        checks.add_metric([name], 1.0 if passing else 0.0)
    yield checks


def _app_families(totals: _Totals, view: AggregateView) -> Iterator[Metric]:
    """The application's own metrics: counters summed (retired workers included), gauges per
    worker slot."""
    for (name, kind, doc), samples in totals.app.items():
        family = Metric(name, doc, kind)
        for (sample_name, labels), value in samples.items():
            family.add_sample(sample_name, dict(labels), value)
        yield family
    gauges: dict[tuple[str, str, str], Metric] = {}
    for worker in view.workers:
        for name, kind, doc, samples in (worker.snapshot or {}).get("app", ()):
            if kind in _COUNTED_APP_TYPES:
                continue
            found = gauges.get((name, kind, doc))
            if found is None:
                found = gauges[(name, kind, doc)] = Metric(name, doc, kind)
            family = found
            for sample_name, labels, value in samples:
                family.add_sample(sample_name, {**dict(labels), "worker": worker.label}, value)
    yield from gauges.values()


def _own_rss() -> float:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return float(int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError):
        return 0.0
