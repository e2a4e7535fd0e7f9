"""The balancer against upstreams on hosts of their own (network namespaces, see netns.py).

Each upstream is a separate process in its own namespace, reached over a veth link, so a
killed server is a real dead host to the balancer and a slow one is slow on the wire. The
balancer runs in this process, so its per-upstream counters can be read as the load runs.
"""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from bastion.balancer.config import single_route
from bastion.balancer.proxy import Balancer
from tests.balancer import netns
from tests.serving import serve

REASON = netns.unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"multi-host tests: {REASON}")

SLOW_S = 0.05


@dataclass
class Outcome:
    at: float  # when the request was sent, time.monotonic()
    latency: float
    status: int | None  # None: the request failed without a response
    error: str = ""


def _client(
    port: int, until: float, interval: float, out: list[Outcome], lock: threading.Lock
) -> None:
    """GET / over one keep-alive connection until ``until``, one request per ``interval``
    (0: back to back); a broken connection is recorded and replaced."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    mine: list[Outcome] = []
    next_at = time.monotonic()
    try:
        while (now := time.monotonic()) < until:
            if interval:
                if now < next_at:
                    time.sleep(next_at - now)
                next_at += interval
            sent = time.monotonic()
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                mine.append(Outcome(sent, time.monotonic() - sent, response.status))
            except (OSError, http.client.HTTPException) as exc:
                mine.append(Outcome(sent, time.monotonic() - sent, None, repr(exc)))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    finally:
        conn.close()
        with lock:
            out.extend(mine)


def _load(port: int, seconds: float, clients: int, rate_per_client: float = 0.0) -> LoadRun:
    run = LoadRun()
    until = time.monotonic() + seconds
    interval = 1.0 / rate_per_client if rate_per_client else 0.0
    run.threads = [
        threading.Thread(target=_client, args=(port, until, interval, run.outcomes, run.lock))
        for _ in range(clients)
    ]
    for thread in run.threads:
        thread.start()
    return run


@dataclass
class LoadRun:
    outcomes: list[Outcome]
    lock: threading.Lock
    threads: list[threading.Thread]

    def __init__(self) -> None:
        self.outcomes = []
        self.lock = threading.Lock()
        self.threads = []

    def wait(self, timeout: float = 30.0) -> list[Outcome]:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            assert not thread.is_alive(), "a client thread did not finish"
        return sorted(self.outcomes, key=lambda outcome: outcome.at)


def _percentile(outcomes: list[Outcome], share: float) -> float:
    latencies = sorted(outcome.latency for outcome in outcomes)
    return latencies[min(len(latencies) - 1, int(len(latencies) * share))]


# kill -9 under load ---------------------------------------------------------------------------


@pytest.mark.alone
def test_killed_upstream_costs_no_get_and_is_ejected_within_a_second(tmp_path: Path) -> None:
    with netns.upstream_hosts([0.0, 0.0, 0.0], tmp_path) as hosts:
        # Round robin keeps choosing the dead server in turn until it is ejected: the
        # strategy that notices least, so ejection is what stops the attempts.
        config = single_route([host.url for host in hosts], strategy="round-robin")
        balancer = Balancer(config)
        runtime = balancer.routes[0]
        victim = hosts[1]
        with serve(balancer) as running:
            # 6 clients at 50 requests/s each: about 300 GET/s for 3 s, the kill after 1 s.
            load = _load(running.port, 3.0, clients=6, rate_per_client=50)
            samples: list[tuple[float, int]] = []
            stop = time.monotonic() + 3.0
            killed_at = 0.0
            while (now := time.monotonic()) < stop:
                if not killed_at and now >= stop - 2.0:
                    victim.kill()
                    killed_at = time.monotonic()
                samples.append((now, runtime.stats[victim.key].requests))
                time.sleep(0.002)
            outcomes = load.wait()
        failed = [outcome for outcome in outcomes if outcome.status != 200]
        assert len(outcomes) > 600, f"only {len(outcomes)} requests were sent"
        assert not failed, f"{len(failed)} of {len(outcomes)} GETs failed: {failed[:5]}"
        server = runtime.snapshot.get(victim.key)
        assert server is not None and server.state.ejected
        assert runtime.stats[victim.key].ejections == 1
        # The last time the victim's attempt count moved: when it was last tried.
        last_change = killed_at
        for (_, before), (at, count) in itertools.pairwise(samples):
            if count != before and at >= killed_at:
                last_change = at
        assert last_change - killed_at < 1.0, (
            f"the dead server was still tried {last_change - killed_at:.3f} s after the kill"
        )
        # The survivors took everything after the kill.
        after = [outcome for outcome in outcomes if outcome.at > killed_at + 1.0]
        assert len(after) > 200


# a slow server among three --------------------------------------------------------------------


@dataclass
class StrategyRun:
    strategy: str
    requests: int
    slow_share: float
    p95: float
    p99: float
    failed: int


# Few clients, so that the balancer has spare time and the fast servers' latency is theirs,
# not the balancer's queue: at 32 clients peak EWMA's cost of a fast server (latency times
# outstanding) approaches the slow one's and it sends the slow server 2% of the requests.
CLIENTS = 6


def _run_strategy(hosts: netns.Hosts, slow: netns.Host, strategy: str) -> StrategyRun:
    balancer = Balancer(single_route([host.url for host in hosts], strategy=strategy))
    runtime = balancer.routes[0]
    with serve(balancer) as running:
        # Warm the pool and, for peak EWMA, let the first latencies arrive before measuring.
        _load(running.port, 0.5, clients=CLIENTS).wait()
        before = {host.key: runtime.stats[host.key].requests for host in hosts}
        outcomes = _load(running.port, 3.0, clients=CLIENTS).wait()
        counts = {host.key: runtime.stats[host.key].requests - before[host.key] for host in hosts}
    total = sum(counts.values())
    return StrategyRun(
        strategy=strategy,
        requests=len(outcomes),
        slow_share=counts[slow.key] / max(1, total),
        p95=_percentile(outcomes, 0.95),
        p99=_percentile(outcomes, 0.99),
        failed=sum(1 for outcome in outcomes if outcome.status != 200),
    )


def _compare_strategies(hosts: netns.Hosts, slow: netns.Host) -> None:
    runs = {name: _run_strategy(hosts, slow, name) for name in ("round-robin", "p2c", "peak-ewma")}
    # A p99 rests on 1% of the requests: when the test suite's other work starves the
    # balancer for a moment, the fast servers' measured latency spikes with it, and a run
    # can lose its tail to the machine rather than to the strategy. Such a run is repeated
    # (twice at most); the strategies' shares are checked on every run.
    for _ in range(2):
        if runs["peak-ewma"].p99 * 3 <= runs["round-robin"].p99:
            break
        runs["peak-ewma"] = _run_strategy(hosts, slow, "peak-ewma")
    table = "\n".join(
        f"  {r.strategy:12} {r.requests:6} requests, slow server {r.slow_share:6.2%}, "
        f"p95 {r.p95 * 1000:6.1f} ms, p99 {r.p99 * 1000:6.1f} ms, {r.failed} failed"
        for r in runs.values()
    )
    rr, p2c, ewma = runs["round-robin"], runs["p2c"], runs["peak-ewma"]
    assert all(r.failed == 0 for r in runs.values()), table
    assert all(r.requests > 500 for r in runs.values()), table
    # Round robin cannot see the slow server: it keeps its third, and the p99 is its delay.
    assert rr.slow_share > 0.25, table
    assert rr.p99 >= SLOW_S, table
    # P2C's share of the slow server goes as the fast servers' latency over the slow one's,
    # so a machine busy with other work (slower fast servers) raises it: a fifth of round
    # robin's is the bound; peak EWMA's stays far lower.
    assert p2c.slow_share < rr.slow_share / 5, table
    assert ewma.slow_share < rr.slow_share / 10, table
    # Peak EWMA routes by latency: the slow server gets well under 1% and the p99 is a fast
    # server's.
    assert ewma.p99 * 3 <= rr.p99, table
    # P2C evens out requests in flight, so each server's rate goes as 1 / its latency: the
    # slow server keeps one or two requests in flight and gets 1-3% of them, which is still
    # more than the 1% a p99 hides. The p95 is where its gain shows.
    assert p2c.p95 * 3 <= rr.p95, table


@pytest.mark.alone
def test_slow_server_gets_far_less_from_p2c_and_peak_ewma(tmp_path: Path) -> None:
    with netns.upstream_hosts([0.0, 0.0, SLOW_S], tmp_path) as hosts:
        _compare_strategies(hosts, hosts[2])


@pytest.mark.alone
def test_slow_link_with_netem(tmp_path: Path) -> None:
    with netns.upstream_hosts([0.0, 0.0, 0.0], tmp_path) as hosts:
        done = hosts[2].netem("delay", f"{SLOW_S * 1000:.0f}ms")
        if done.returncode != 0:
            pytest.skip(
                "tc netem is not available on this kernel (sch_netem missing: "
                f"{done.stderr.strip()}); the slow server is covered at the application level"
            )
        _compare_strategies(hosts, hosts[2])


# upstream keep-alive -------------------------------------------------------------------------


def test_sequential_requests_reuse_one_upstream_connection(tmp_path: Path) -> None:
    with netns.upstream_hosts([0.0], tmp_path) as hosts:
        (host,) = hosts
        balancer = Balancer(single_route([host.url]))
        with serve(balancer) as running:
            conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10)
            try:
                for _ in range(50):
                    conn.request("GET", "/")
                    response = conn.getresponse()
                    assert response.status == 200
                    assert response.read() == b"a\n"
            finally:
                conn.close()
            # A new client connection too: the pool is the balancer's, not the client's.
            for _ in range(10):
                conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10)
                try:
                    conn.request("GET", "/")
                    assert conn.getresponse().read() == b"a\n"
                finally:
                    conn.close()
            opened = balancer.routes[0].pools[host.key].opened_total
        stats = host.stats()
    assert stats["requests"] == 60
    assert stats["connections"] == 1
    assert opened == 1
