"""Service discovery against a real DNS server on loopback: records added, removed and
expiring change the pool; SRV ports and weights are used; failures keep the last good set;
resolving never holds up the loop it runs on."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from bastion.balancer.config import BalancerConfig, Route, Upstream
from bastion.balancer.control import BalancerControl
from bastion.balancer.discovery import (
    DiscoveredUpstream,
    Discovery,
    DiscoveryJob,
    DiscoverySettings,
    metrics,
    resolutions,
    settings_from_table,
)
from bastion.balancer.proxy import Balancer
from tests.balancer.dnsserver import DnsServer
from tests.balancer.upstreams import echo_app
from tests.cli.running import bastion
from tests.serving import RunningServer, serve

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


def fast(server: DnsServer, **changes: Any) -> DiscoverySettings:
    """Settings for tests: this server, short floors, no jitter."""
    values: dict[str, Any] = {
        "nameserver": server.address,
        "timeout": 0.3,
        "min_ttl": 0.1,
        "max_ttl": 5.0,
        "jitter": 0.0,
        "retry": 0.1,
    }
    values.update(changes)
    return DiscoverySettings(**values)


class Running:
    """A :class:`BalancerControl` and a :class:`DiscoveryJob` on an event loop of their own
    (the supervisor's, in production), with what the control broadcast."""

    def __init__(self, job: DiscoveryJob, deliver: Callable[[dict[str, Any]], None]) -> None:
        self.job = job
        self.control = job.control
        self.messages: list[dict[str, Any]] = []
        self._deliver = deliver
        self.loop = asyncio.new_event_loop()
        self._tasks: list[asyncio.Task[None]] = []
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def _broadcast(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        self._deliver(message)

    def __enter__(self) -> Running:
        self._thread.start()

        async def start() -> None:
            self._tasks = [
                asyncio.ensure_future(self.control.run(self._broadcast)),
                asyncio.ensure_future(self.job.run(self._broadcast)),
            ]

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(5)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    def servers(self, route: str = "api") -> list[str]:
        return [u.key for u in self.control.route(route).upstreams]

    def weights(self, route: str = "api") -> dict[str, float]:
        return {u.key: u.weight for u in self.control.route(route).upstreams}


def discovered(
    settings: DiscoverySettings,
    *urls: str,
    static: tuple[Upstream, ...] = (),
    slow_start: float = 0.0,
    deliver: Callable[[dict[str, Any]], None] = lambda message: None,
) -> Running:
    """Route "api" with ``urls`` discovered (resolved once now, as a config load does)."""
    discovery = Discovery(settings)
    targets = tuple(DiscoveredUpstream(url) for url in urls)
    upstreams = discovery.expand("api", static, targets)
    config = BalancerConfig(routes=(Route(upstreams, name="api", slow_start=slow_start),))
    job = discovery.job(BalancerControl(config))
    assert job is not None
    return Running(job, deliver)


def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def count(url: str, result: str) -> int:
    return sum(n for (_, u, r), n in resolutions().items() if u == url and r == result)


# the pool follows the records ---------------------------------------------------------------


def test_records_added_and_removed_change_the_pool(dns_server: DnsServer) -> None:
    dns_server.set("api.test", "A", ["127.0.0.2", "127.0.0.3"], ttl=0)
    with discovered(fast(dns_server), "dns+http://api.test:8000") as running:
        assert running.servers() == ["127.0.0.2:8000", "127.0.0.3:8000"]
        dns_server.set("api.test", "A", ["127.0.0.2", "127.0.0.3", "127.0.0.4"], ttl=0)
        wait_for(lambda: "127.0.0.4:8000" in running.servers())
        dns_server.set("api.test", "A", ["127.0.0.4"], ttl=0)
        dns_server.set("api.test", "AAAA", ["::1"], ttl=0)
        wait_for(lambda: running.servers() == ["127.0.0.4:8000", "[::1]:8000"])
    # Each change reached the workers as one configuration, and nothing was sent for the
    # resolutions that found the same set again.
    assert 2 <= len(running.messages) <= 4


def test_a_name_is_asked_again_when_its_ttl_runs_out(dns_server: DnsServer) -> None:
    dns_server.set("api.test", "A", ["127.0.0.2"], ttl=2)
    with discovered(fast(dns_server), "dns+http://api.test:8000") as running:
        wait_for(lambda: dns_server.asked("api.test", "A") >= 2)  # the load, then the job's
        first = time.monotonic()
        dns_server.set("api.test", "A", ["127.0.0.3"], ttl=2)
        time.sleep(1.2)  # within the TTL: the answer is kept, not asked for again
        assert dns_server.asked("api.test", "A") == 2
        assert running.servers() == ["127.0.0.2:8000"]
        wait_for(lambda: running.servers() == ["127.0.0.3:8000"], timeout=3)
        assert time.monotonic() - first >= 1.5


def test_ttls_are_kept_within_the_floor_and_the_cap(dns_server: DnsServer) -> None:
    dns_server.set("api.test", "A", ["127.0.0.2"], ttl=3600)
    settings = fast(dns_server, max_ttl=0.3)
    with discovered(settings, "dns+http://api.test:8000"):
        wait_for(lambda: dns_server.asked("api.test", "A") >= 4, timeout=3)
    dns_server.set("zero.test", "A", ["127.0.0.2"], ttl=0)
    with discovered(fast(dns_server, min_ttl=0.5), "dns+http://zero.test:8000"):
        time.sleep(1.2)
    # A TTL of 0 is held for the floor: the load, then at about 0 s, 0.5 s and 1 s.
    assert dns_server.asked("zero.test", "A") <= 4


def test_srv_targets_ports_and_weights_from_the_lowest_priority(dns_server: DnsServer) -> None:
    name = "_http._tcp.api.service.test"
    dns_server.set(
        name, "SRV", ["1 10 8001 a.test.", "1 30 8002 b.test.", "2 50 8003 c.test."], ttl=0
    )
    for target, address in (("a", "127.0.0.2"), ("b", "127.0.0.3"), ("c", "127.0.0.4")):
        dns_server.set(f"{target}.test", "A", [address], ttl=0)
    with discovered(fast(dns_server), f"srv+http://{name}") as running:
        assert running.weights() == {"127.0.0.2:8001": 10.0, "127.0.0.3:8002": 30.0}
        # The first class gone: the backup class is used.
        dns_server.set(name, "SRV", ["2 50 8003 c.test."], ttl=0)
        wait_for(lambda: running.servers() == ["127.0.0.4:8003"])
        # Without addresses in the answer, the targets are looked up.
        dns_server.glue = False
        dns_server.set(name, "SRV", ["1 0 9000 a.test.", "1 0 9001 b.test."], ttl=0)
        wait_for(lambda: running.servers() == ["127.0.0.2:9000", "127.0.0.3:9001"])
        assert set(running.weights().values()) == {1.0}  # all weights 0: equal shares


def test_static_upstreams_are_kept_and_come_first(dns_server: DnsServer) -> None:
    dns_server.set("api.test", "A", ["127.0.0.3", "127.0.0.9"], ttl=0)
    static = (Upstream("http://127.0.0.9:8000", 5),)
    with discovered(fast(dns_server), "dns+http://api.test:8000", static=static) as running:
        assert running.weights() == {"127.0.0.9:8000": 5, "127.0.0.3:8000": 1}
        dns_server.set("api.test", "A", ["127.0.0.4"], ttl=0)
        wait_for(lambda: running.servers() == ["127.0.0.9:8000", "127.0.0.4:8000"])


# failures keep the last good set -------------------------------------------------------------


def test_failures_leave_the_pool_as_it_was(
    dns_server: DnsServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = "dns+http://api.test:8000"
    dns_server.set("api.test", "A", ["127.0.0.2", "127.0.0.3"], ttl=0)
    before = {result: count(url, result) for result in ("timeout", "servfail", "nxdomain")}
    with (
        caplog.at_level(logging.INFO, "bastion.error"),
        discovered(fast(dns_server), url) as running,
    ):
        good = running.servers()

        def fails_with(result: str, times: int = 2) -> None:
            start = count(url, result)
            wait_for(lambda: count(url, result) >= start + times)
            assert running.servers() == good
            assert running.job.status()[0]["failing"] == result

        dns_server.fail("api.test", "drop")
        fails_with("timeout")
        dns_server.fail("api.test", "servfail")
        fails_with("servfail")
        dns_server.fail("api.test", None)
        dns_server.remove("api.test")
        fails_with("nxdomain")
        dns_server.set("api.test", "TXT", ['"no addresses here"'], ttl=0)
        fails_with("empty")
        dns_server.set("api.test", "A", [f"10.1.{i // 200}.{i % 200 + 1}" for i in range(300)])
        fails_with("too-many")
        dns_server.set("api.test", "A", ["127.0.0.4"], ttl=0)
        wait_for(lambda: running.servers() == ["127.0.0.4:8000"])
        assert running.job.status()[0]["failing"] is None
    assert count(url, "timeout") > before["timeout"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # One line per change of state, however many resolutions failed.
    assert len(warnings) == 6, warnings
    assert "keeping the last 2 servers" in warnings[0]
    assert "NXDOMAIN" in warnings[2]
    assert "resolves again" in warnings[-1]


def test_a_name_that_never_resolved_stops_the_load_or_starts_without_it(
    dns_server: DnsServer,
) -> None:
    discovery = Discovery(fast(dns_server))
    target = DiscoveredUpstream("dns+http://missing.test:8000")
    with pytest.raises(ValueError, match=r"dns\+http://missing.test:8000: .*NXDOMAIN"):
        discovery.expand("api", (), (target,))
    static = (Upstream("http://127.0.0.9:8000"),)
    assert discovery.expand("api", static, (target,)) == static


def test_a_reload_starts_from_the_last_good_set_without_asking(dns_server: DnsServer) -> None:
    dns_server.set("api.test", "A", ["127.0.0.2"], ttl=0)
    target = DiscoveredUpstream("dns+http://api.test:8000")
    first = Discovery(fast(dns_server))
    first.expand("api", (), (target,))
    asked = dns_server.asked("api.test", "A")
    dns_server.fail("api.test", "drop")
    again = Discovery(fast(dns_server), previous=first.found)
    assert [u.key for u in again.expand("api", (), (target,))] == ["127.0.0.2:8000"]
    assert dns_server.asked("api.test", "A") == asked


def test_discovery_counters_in_the_exposition(dns_server: DnsServer) -> None:
    dns_server.set("api.test", "A", ["127.0.0.2"], ttl=0)
    with discovered(fast(dns_server), "dns+http://api.test:8000"):
        wait_for(lambda: count("dns+http://api.test:8000", "ok") >= 1)
        families = {family.name: family for family in metrics()}
    samples = families["bastion_discovery_resolutions"].samples
    assert any(s.labels["result"] == "ok" and s.labels["route"] == "api" for s in samples)
    (servers,) = families["bastion_discovery_servers"].samples
    assert servers.value == 1
    assert families["bastion_discovery_failing"].samples[0].value == 0


# never blocking the loop ---------------------------------------------------------------------


@pytest.mark.alone
def test_resolving_does_not_hold_up_the_loop(dns_server: DnsServer) -> None:
    dns_server.set("slow.test", "A", ["127.0.0.2"], ttl=0)
    dns_server.set("lost.test", "A", ["127.0.0.3"], ttl=0)
    settings = fast(dns_server, timeout=0.5)
    with discovered(settings, "dns+http://slow.test:8000", "dns+http://lost.test:8000") as running:
        dns_server.slow("slow.test", 0.3)  # every answer arrives 300 ms late
        dns_server.fail("lost.test", "drop")  # and these never do
        asked = dns_server.asked("slow.test", "A")

        async def measure() -> float:
            loop = asyncio.get_running_loop()
            worst = 0.0
            end = loop.time() + 1.5
            while loop.time() < end:
                before = loop.time()
                await asyncio.sleep(0.005)
                worst = max(worst, loop.time() - before - 0.005)
            return worst

        lag = asyncio.run_coroutine_threadsafe(measure(), running.loop).result(5)
        assert dns_server.asked("slow.test", "A") >= asked + 2  # resolving all along
        assert running.servers() == ["127.0.0.2:8000", "127.0.0.3:8000"]
    assert lag < 0.05, f"the loop was held up for {lag * 1000:.0f} ms"


# end to end: a real balancer serving requests -----------------------------------------------


@contextmanager
def apps_on(addresses: list[str]) -> Iterator[tuple[int, list[RunningServer]]]:
    """An echo app named after its address on each of ``addresses``, all on one port."""
    with ExitStack() as stack:
        first = stack.enter_context(serve(echo_app(addresses[0]), binds=(f"{addresses[0]}:0",)))
        port = first.port
        servers = [first]
        for address in addresses[1:]:
            servers.append(
                stack.enter_context(serve(echo_app(address), binds=(f"{address}:{port}",)))
            )
        yield port, servers


def test_a_balancer_follows_the_records(dns_server: DnsServer) -> None:
    with apps_on(["127.0.0.2", "127.0.0.3", "127.0.0.4"]) as (port, _):
        dns_server.set("api.test", "A", ["127.0.0.2", "127.0.0.3"], ttl=0)
        balancer: list[Balancer] = []
        lb: list[RunningServer] = []

        def deliver(message: dict[str, Any]) -> None:
            if lb:
                lb[0].call(balancer[0].supervisor_message, message)

        running = discovered(
            fast(dns_server), f"dns+http://api.test:{port}", slow_start=0.5, deliver=deliver
        )
        balancer.append(Balancer(running.control.config))
        with serve(balancer[0]) as served, running, httpx.Client(base_url=served.url) as client:
            lb.append(served)

            def names(count: int = 30) -> Counter[str]:
                seen: Counter[str] = Counter()
                for _ in range(count):
                    response = client.get("/")
                    assert response.status_code == 200
                    seen[response.text.split("\n")[0].removeprefix("name=")] += 1
                return seen

            assert set(names()) == {"127.0.0.2", "127.0.0.3"}
            dns_server.set("api.test", "A", ["127.0.0.3", "127.0.0.4"], ttl=0)
            wait_for(lambda: "127.0.0.4" in names(10))
            time.sleep(0.1)  # what was in flight on .2 has finished there
            assert set(names()) == {"127.0.0.3", "127.0.0.4"}
            # A resolver that stops answering changes nothing the balancer does.
            dns_server.fail("api.test", "drop")
            time.sleep(0.5)
            assert set(names()) == {"127.0.0.3", "127.0.0.4"}


# what the configuration accepts -------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("dns+http://10.0.0.2:8000", "is an address, not a name"),
        ("srv+http://_http._tcp.api.test:80", "the SRV records give the ports"),
        ("dns+https://api.test:443", "plain http upstreams only"),
        ("dns+http://api.test:8000/v1", "no path"),
        ("dns+ftp://api.test:21", r"expected dns\+http://"),
        ("dns+http://api.test:0", "port 0"),
    ],
)
def test_bad_discovered_upstreams_are_named(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        DiscoveredUpstream(url)


def test_discovered_upstream_defaults() -> None:
    target = DiscoveredUpstream("dns+http://api.internal")
    assert (target.kind, target.name, target.port) == ("dns", "api.internal", 80)
    srv = DiscoveredUpstream("SRV+HTTP://_http._tcp.api.service.consul", weight=2)
    assert (srv.kind, srv.scheme, srv.port, srv.weight) == ("srv", "http", 0, 2)


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"nameserver": "resolver.local"}, "expected an address"),
        ({"nameserver": "127.0.0.1:99999"}, "bad port"),
        ({"min_ttl": 0}, "min_ttl must be > 0"),
        ({"min_ttl": 10, "max_ttl": 5}, "max_ttl must be >= discovery.min_ttl"),
        ({"max_records": 0}, "max_records"),
        ({"timout": 1}, "unknown key 'timout'"),
    ],
)
def test_bad_discovery_settings_are_named(table: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        settings_from_table(table)


def test_nameserver_spellings() -> None:
    assert DiscoverySettings(nameserver="127.0.0.1:5353").address() == ("127.0.0.1", 5353)
    assert DiscoverySettings(nameserver="10.0.0.53").address() == ("10.0.0.53", 53)
    assert DiscoverySettings(nameserver="[::1]:5353").address() == ("::1", 5353)
    assert DiscoverySettings(nameserver="::1").address() == ("::1", 53)


def test_bastion_balance_follows_the_records(dns_server: DnsServer, tmp_path: Path) -> None:
    with apps_on(["127.0.0.2", "127.0.0.3"]) as (port, _):
        dns_server.set("api.test", "A", ["127.0.0.2"], ttl=0)
        config = tmp_path / "lb.toml"
        config.write_text(
            f"""
workers = 2

[discovery]
nameserver = "{dns_server.address}"
min_ttl = 0.1
retry = 0.1
timeout = 0.5

[[route]]
name = "api"
upstreams = ["dns+http://api.test:{port}"]
"""
        )
        with bastion("balance", "--config", str(config), "--bind", "127.0.0.1:0") as lb:

            def names() -> set[str]:
                seen = set()
                for _ in range(12):
                    response = httpx.get(f"http://127.0.0.1:{lb.port}/", timeout=5)
                    assert response.status_code == 200
                    seen.add(response.text.split("\n")[0].removeprefix("name="))
                return seen

            assert names() == {"127.0.0.2"}
            dns_server.set("api.test", "A", ["127.0.0.2", "127.0.0.3"], ttl=0)
            wait_for(lambda: names() == {"127.0.0.2", "127.0.0.3"})
            dns_server.set("api.test", "A", ["127.0.0.3"], ttl=0)
            wait_for(lambda: names() == {"127.0.0.3"})
            lb.popen.terminate()
            assert lb.wait(10) == 0


def test_discovery_figures_are_on_the_supervisors_metrics() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from bastion.observe.aggregate import Aggregator, MetricsCollector

    registry = CollectorRegistry()
    registry.register(MetricsCollector(Aggregator()))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    assert "# TYPE bastion_discovery_resolutions_total counter" in text
    assert "# TYPE bastion_discovery_failing gauge" in text
