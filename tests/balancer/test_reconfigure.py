"""A running balancer switched to a new configuration: no request fails, state carries over."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import httpx

from bastion.balancer import Balancer, single_route
from bastion.balancer.config import (
    CONFIG_MESSAGE,
    BalancerConfig,
    ConnectionLimits,
    Route,
    Upstream,
    config_from_data,
    config_to_data,
)
from tests.balancer.upstreams import echo_app
from tests.serving import LoadThreads, serve


class Load(LoadThreads):
    """Requests in a loop from two client threads, counting who answered and what failed."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: Counter[str] = Counter()
        self.failures: list[str] = []
        super().__init__(2)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while not self._stop.is_set():
                try:
                    response = client.get("/slow?s=0.01")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code} {response.text}")
                else:
                    self.seen[response.text.split()[-1]] += 1


def test_removing_the_server_taking_traffic_fails_no_request() -> None:
    with serve(echo_app("a")) as a, serve(echo_app("b")) as b, serve(echo_app("c")) as c:
        balancer = Balancer(single_route([a.url, b.url]))
        with serve(balancer) as lb, Load(lb.url) as load:
            time.sleep(0.5)
            lb.call(balancer.reconfigure, single_route([b.url, c.url]))
            time.sleep(0.1)  # what was in flight on a finishes there
            before = Counter(load.seen)
            time.sleep(0.5)
            after = load.seen - before
        assert load.failures == []
        assert before["a"] > 0
        assert after["a"] == 0 and after["b"] > 0 and after["c"] > 0
    # b was kept: its kept-alive connections went on serving, none had to be opened again.
    assert b.stats.connections_opened <= 2


def test_requests_bound_to_a_removed_server_finish_there() -> None:
    """One sent, one waiting for the server's only connection: both are answered by it."""
    limits = ConnectionLimits(max_connections=1, max_pending=4)
    with serve(echo_app("a")) as a, serve(echo_app("b")) as b:
        balancer = Balancer(single_route([a.url], limits=limits))
        with serve(balancer) as lb:
            answers: list[str] = []

            def get(path: str) -> None:
                response = httpx.get(lb.url + path, timeout=10)
                answers.append(f"{response.status_code} {response.text.split()[-1]}")

            clients = [
                threading.Thread(target=get, args=("/slow?s=1",)),
                threading.Thread(target=get, args=("/slow?s=0.01",)),
            ]
            pool = balancer.routes[0].pools[a.url.removeprefix("http://")]
            clients[0].start()
            deadline = time.monotonic() + 5
            while pool.busy < 1:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            clients[1].start()
            while not pool.waiters:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            lb.call(balancer.reconfigure, single_route([b.url], limits=limits))
            assert httpx.get(lb.url + "/slow?s=0").text.split()[-1] == "b"
            for client in clients:
                client.join(10)
            assert sorted(answers) == ["200 a", "200 a"]
            # Its connection closes once the last of them is answered.
            while pool.open:
                assert time.monotonic() < deadline + 10
                time.sleep(0.01)


def test_weights_change_and_counters_carry_over() -> None:
    with serve(echo_app("a")) as a, serve(echo_app("b")) as b:
        balancer = Balancer(single_route([a.url, b.url]))
        with serve(balancer) as lb, httpx.Client(base_url=lb.url) as client:
            for _ in range(10):
                client.get("/")
            weighted = BalancerConfig(
                routes=(Route(upstreams=(Upstream(a.url, 0), Upstream(b.url, 1))),)
            )
            lb.call(balancer.reconfigure, weighted)
            names = {client.get("/").text.split("\n")[0] for _ in range(10)}
            stats = balancer.routes[0].stats
        assert names == {"name=b"}
        # Counters are per server, not per configuration: nothing went backwards.
        assert sum(s.requests for s in stats.values()) == 20


def test_a_configuration_sent_by_the_supervisor_applies() -> None:
    with serve(echo_app("a")) as a, serve(echo_app("b")) as b:
        balancer = Balancer(single_route([a.url]))
        with serve(balancer) as lb, httpx.Client(base_url=lb.url) as client:
            assert client.get("/").text.startswith("name=a")
            data = json.loads(json.dumps(config_to_data(single_route([b.url]))))
            lb.call(balancer.supervisor_message, {"kind": CONFIG_MESSAGE, "config": data})
            assert client.get("/").text.startswith("name=b")
            # A message that does not load changes nothing.
            lb.call(balancer.supervisor_message, {"kind": CONFIG_MESSAGE, "config": {"x": 1}})
            assert client.get("/").text.startswith("name=b")


def test_configuration_data_round_trips() -> None:
    config = single_route(["http://10.0.0.2:8000", "10.0.0.3:8001"], strategy="maglev")
    assert config_from_data(json.loads(json.dumps(config_to_data(config)))) == config
