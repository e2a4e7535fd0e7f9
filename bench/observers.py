"""What request observers cost per request, in-process, without sockets or wrk.

Feeds keep-alive GET requests straight into an ``HTTPConnection`` (a transport that discards
what it is given) serving the native hello app, with no observer, with the metrics a worker
records when the admin listener is on, with the access log (common format) to a file, and with
both. Each variant runs in turn, ``--rounds`` times, interleaved so a drift of the machine is
spread over all of them; prints the median microseconds per request and what each variant
adds to the unobserved path.

    python bench/observers.py [--requests 200000] [--rounds 5] [--format common]
                              [--profile VARIANT] [--alone]

The figures are CPU time of the process (the access log's writer thread included);
``--profile`` runs one variant under ``cProfile``; ``--alone`` times only the observers,
called the way the engine calls them on a request it has already served, best of 7 runs,
which is steadier than the whole request path on a busy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bastion.engine import ServerConfig, new_event_loop
from bastion.engine.connection import HTTPConnection
from bastion.engine.state import ServerState
from bastion.engine.stats import RequestObserver
from bastion.observe.accesslog import AccessLog
from bastion.observe.telemetry import WorkerTelemetry
from bench.apps.native_async import app

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"
# Requests fed between turns of the loop: about what one turn of a busy server handles.
PER_TURN = 50


class _Transport:
    """Takes writes and forgets them; answers what a connection asks of a TCP transport."""

    def __init__(self) -> None:
        self.written = 0  # bytes: one write may carry several responses (the outbox)

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def close(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False


Setup = Callable[[ServerState, Path], list[RequestObserver]]


def _none(state: ServerState, tmp: Path) -> list[RequestObserver]:
    return []


def _metrics(state: ServerState, tmp: Path) -> list[RequestObserver]:
    WorkerTelemetry(0).attach(state)
    return []


def _access_log(log_format: str) -> Setup:
    def setup(state: ServerState, tmp: Path) -> list[RequestObserver]:
        log = AccessLog(log_format, str(tmp / "access.log"))
        state.stats.attach(log)
        return [log]

    return setup


def _both(log_format: str) -> Setup:
    def setup(state: ServerState, tmp: Path) -> list[RequestObserver]:
        _metrics(state, tmp)
        return _access_log(log_format)(state, tmp)

    return setup


async def _drive(conn: HTTPConnection, requests: int) -> float:
    feed = conn.data_received
    sleep = asyncio.sleep
    started = time.process_time()
    for _ in range(requests // PER_TURN):
        for _ in range(PER_TURN):
            feed(REQUEST)
        await sleep(0)
    return time.process_time() - started


def run_variant(setup: Setup, requests: int, profile: bool = False) -> float:
    """Microseconds of CPU per request through a fresh connection."""
    loop = new_event_loop()
    try:
        state = ServerState(loop, app, ServerConfig())
        with tempfile.TemporaryDirectory(prefix="bench-observers-") as tmp:
            closers = setup(state, Path(tmp))
            conn = HTTPConnection(state)
            transport = _Transport()
            conn.connection_made(transport)  # type: ignore[arg-type]
            loop.run_until_complete(_drive(conn, 2000))  # warm-up
            response_size = transport.written // 2000
            transport.written = 0
            profiler = cProfile.Profile() if profile else None
            if profiler is not None:
                profiler.enable()
            seconds = loop.run_until_complete(_drive(conn, requests))
            if profiler is not None:
                profiler.disable()
                pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
            assert transport.written >= requests * response_size, "responses went missing"
            for observer in closers:
                getattr(observer, "close", lambda: None)()
        return seconds / requests * 1e6
    finally:
        loop.close()


def time_alone(setup: Setup, calls: int) -> float:
    """Nanoseconds per request of the observers ``setup`` registers, called on their own."""
    captured: list[Any] = []

    def capture(state: ServerState, tmp: Path) -> list[RequestObserver]:
        state.stats.request_observers.append(lambda exchange, duration: captured.append(exchange))
        return []

    run_variant(capture, PER_TURN * 2)
    exchange = captured[-1]
    loop = new_event_loop()
    state = ServerState(loop, app, ServerConfig())

    async def measure() -> float:
        with tempfile.TemporaryDirectory(prefix="bench-observers-") as tmp:
            closers = setup(state, Path(tmp))
            observers = state.stats.request_observers + state.stats.untimed_observers
            best = float("inf")
            for _ in range(7):
                started = time.process_time()
                for _ in range(calls):
                    duration = time.perf_counter() - exchange.start_time
                    for observe in observers:
                        observe(exchange, duration)
                best = min(best, time.process_time() - started)
                await asyncio.sleep(0.06)  # the access log's batch is due: let it go
            for observer in closers:
                getattr(observer, "close", lambda: None)()
        return best / calls * 1e9

    try:
        return loop.run_until_complete(measure())
    finally:
        loop.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--format", default="common", help="access log format")
    parser.add_argument("--profile", help="run this variant once under cProfile")
    parser.add_argument("--alone", action="store_true", help="time the observers alone")
    args = parser.parse_args(argv)
    variants: dict[str, Setup] = {
        "none": _none,
        "metrics": _metrics,
        "access-log": _access_log(args.format),
        "both": _both(args.format),
    }
    if args.profile:
        run_variant(variants[args.profile], args.requests, profile=True)
        return 0
    if args.alone:
        calls = min(args.requests, 100_000)
        base = time_alone(_none, calls)
        for name, setup in variants.items():
            print(f"{name:<12} {time_alone(setup, calls) - base:>6.0f} ns per request")
        return 0
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, setup in variants.items():
            samples[name].append(run_variant(setup, args.requests))
    base = min(samples["none"])
    print(f"{'variant':<12} {'best us':>8} {'median':>7} {'added us':>9} {'ratio':>6}")
    for name, values in samples.items():
        best, median = min(values), statistics.median(values)
        print(f"{name:<12} {best:>8.2f} {median:>7.2f} {best - base:>9.2f} {base / best:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
