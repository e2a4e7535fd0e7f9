"""Worker telemetry merged by the aggregator: real servers, real requests, real exposition."""

from __future__ import annotations

import asyncio
import http.client
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import websockets
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bastion import App, Request, Response
from bastion.observe.aggregate import Aggregator, MetricsCollector, quantile
from bastion.observe.metrics import DURATION_BUCKETS, OVERFLOW
from bastion.observe.telemetry import WorkerTelemetry, decode, encode
from tests.serving import RunningServer, serve


def make_app() -> App:
    app = App()

    @app.get("/users/{id:int}")
    async def user(request: Request) -> Response:
        return Response(b"user")

    @app.post("/upload")
    async def upload(request: Request) -> Response:
        return Response(b"got %d" % len(await request.body()))

    return app


@pytest.fixture
def workers() -> Iterator[list[tuple[RunningServer, WorkerTelemetry]]]:
    """Two servers, each counted by its own telemetry, as two worker processes would be."""
    with ExitStack() as stack:
        pairs = []
        for slot in range(2):
            server = stack.enter_context(serve(make_app()))
            telemetry = WorkerTelemetry(slot)
            assert server.server.state is not None
            server.call(telemetry.attach, server.server.state)
            pairs.append((server, telemetry))
        yield pairs


def get(server: RunningServer, path: str, count: int = 1) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    for _ in range(count):
        connection.request("GET", path)
        connection.getresponse().read()
    connection.close()


def scrape(aggregator: Aggregator) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    registry = CollectorRegistry()
    registry.register(MetricsCollector(aggregator))
    text = generate_latest(registry).decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def ship(aggregator: Aggregator, telemetry: WorkerTelemetry, pid: int) -> None:
    snapshot = telemetry.snapshot()
    snapshot["pid"] = pid  # in-process "workers" share a pid; the supervisor tells them apart
    decoded = decode(encode(snapshot))
    assert decoded is not None
    aggregator.update(decoded)


def test_counts_are_summed_over_workers_by_route_template(workers: list) -> None:
    (first, t1), (second, t2) = workers
    get(first, "/users/1", 3)
    get(second, "/users/2", 4)
    get(second, "/nowhere", 2)
    aggregator = Aggregator()
    aggregator.worker_started(101, 0, 1)
    aggregator.worker_started(102, 1, 1)
    ship(aggregator, t1, 101)
    ship(aggregator, t2, 102)
    samples = scrape(aggregator)
    requests = samples["bastion_requests_total"]
    assert requests[(("method", "GET"), ("route", "/users/{id:int}"), ("status", "200"))] == 7
    assert requests[(("method", "GET"), ("route", ""), ("status", "404"))] == 2
    histogram = samples["bastion_request_duration_seconds_count"]
    assert histogram[(("method", "GET"), ("route", "/users/{id:int}"))] == 7
    assert samples["bastion_connections_accepted_total"][()] == 3
    assert samples["bastion_keepalive_reused_total"][()] == 9 - 3


def test_counters_never_go_backwards_when_workers_exit(workers: list) -> None:
    (first, t1), (second, t2) = workers
    aggregator = Aggregator()
    aggregator.worker_started(101, 0, 1)
    aggregator.worker_started(102, 1, 1)
    get(first, "/users/1", 5)
    get(second, "/users/1", 5)
    ship(aggregator, t1, 101)
    ship(aggregator, t2, 102)
    key = (("method", "GET"), ("route", "/users/{id:int}"), ("status", "200"))
    assert scrape(aggregator)["bastion_requests_total"][key] == 10
    aggregator.worker_exited(101, "crash")
    ship(aggregator, t1, 101)  # a datagram that arrives after the exit is not counted again
    assert scrape(aggregator)["bastion_requests_total"][key] == 10
    # Its replacement starts from zero; the sum keeps growing from where it was.
    aggregator.worker_started(103, 0, 1)
    replacement = WorkerTelemetry(0)
    assert first.server.state is not None
    first.server.state.stats.request_observers.clear()
    first.call(replacement.attach, first.server.state)
    get(first, "/users/1", 2)
    ship(aggregator, replacement, 103)
    samples = scrape(aggregator)
    assert samples["bastion_requests_total"][key] == 12
    assert samples["bastion_worker_exits_total"][(("reason", "crash"),)] == 1
    assert samples["bastion_worker_starts_total"][()] == 3


def test_series_stay_bounded_whatever_paths_clients_try(workers: list) -> None:
    (server, telemetry), _ = workers
    telemetry.metrics.max_series = 3
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    for index in range(300):
        connection.request("GET", f"/users/{index}")
        connection.getresponse().read()
        connection.request("GET", f"/scan/{index}")
        connection.getresponse().read()
        connection.request("DELETE", f"/users/{index}")
        connection.getresponse().read()
        connection.request("PATCH", "/upload")
        connection.getresponse().read()
    connection.close()
    assert len(telemetry.metrics.requests) <= 3 + 4  # the cap, plus overflow rows
    assert any(key[2] == OVERFLOW for key in telemetry.metrics.requests)
    aggregator = Aggregator(max_series=3)
    aggregator.worker_started(101, 0, 1)
    ship(aggregator, telemetry, 101)
    exposed = scrape(aggregator)["bastion_requests_total"]
    # Beyond the cap, label sets keep their method and status and lose their route.
    assert len([key for key in exposed if ("route", OVERFLOW) not in key]) <= 2
    assert sum(exposed.values()) == 1200


def test_a_hundred_thousand_paths_make_no_new_series(workers: list) -> None:
    (server, telemetry), _ = workers
    sock = server.connect(timeout=10)
    batch = 500
    for start in range(0, 100_000, batch):
        sock.sendall(
            b"".join(
                b"GET /probe/%d?q=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (index, index)
                for index in range(start, start + batch)
            )
        )
        expected = batch
        received = b""
        while received.count(b"HTTP/1.1 404") < expected:
            received += sock.recv(1 << 20)
    sock.close()
    aggregator = Aggregator()
    aggregator.worker_started(101, 0, 1)
    ship(aggregator, telemetry, 101)
    samples = scrape(aggregator)
    assert samples["bastion_requests_total"] == {
        (("method", "GET"), ("route", ""), ("status", "404")): 100_000
    }
    assert len(samples["bastion_request_duration_seconds_bucket"]) == len(DURATION_BUCKETS) + 1


def test_application_metrics_are_merged(workers: list) -> None:
    (_, t1), (_, t2) = workers
    registry_counter = Counter("test_app_jobs", "Jobs the test app did.", ["kind"])
    registry_counter.labels("x").inc(3)
    aggregator = Aggregator()
    aggregator.worker_started(101, 0, 1)
    aggregator.worker_started(102, 1, 1)
    ship(aggregator, t1, 101)
    ship(aggregator, t2, 102)
    # Both "workers" share this process's registry: each reports 3, the sum is 6.
    assert scrape(aggregator)["test_app_jobs_total"][(("kind", "x"),)] == 6


def test_quantiles_from_bucket_counts() -> None:
    buckets = [0.0] * (len(DURATION_BUCKETS) + 1)
    buckets[0] = 50  # <= 1 ms
    buckets[3] = 50  # 5-10 ms
    assert quantile(buckets, 0.25) == pytest.approx(0.0005)
    assert 0.005 < (quantile(buckets, 0.99) or 0) <= 0.01
    assert quantile([0.0] * len(buckets), 0.5) is None


def test_tick_reports_the_last_second(workers: list) -> None:
    (server, telemetry), _ = workers
    aggregator = Aggregator()
    aggregator.worker_started(101, 0, 1)
    ship(aggregator, telemetry, 101)
    aggregator.tick()
    get(server, "/users/1", 4)
    get(server, "/missing", 1)
    ship(aggregator, telemetry, 101)
    point = aggregator.tick()
    assert point["rps"] == 5
    assert point["status"] == {"2xx": 4, "4xx": 1}
    assert point["busiest"][0] == ("GET /users/{id:int}", 4)
    assert point["p50"] is not None


def test_workers_of_several_groups_keep_their_own_labels() -> None:
    # bastion up: one supervisor process, each group with its own slot 0.
    aggregator = Aggregator()
    for pid, group in ((101, "users"), (102, "orders")):
        aggregator.worker_started(pid, 0, 0, group)
        telemetry = WorkerTelemetry(0)
        ship(aggregator, telemetry, pid)
    samples = scrape(aggregator)
    lag = {dict(labels)["worker"] for labels in samples["bastion_event_loop_lag_seconds"]}
    assert lag == {"users/0", "orders/0"}
    cpu = {dict(labels)["worker"] for labels in samples["bastion_process_cpu_seconds_total"]}
    assert {"users/0", "orders/0", "supervisor"} <= cpu
    # A single group (bastion run) keeps the plain slot number.
    single = Aggregator()
    single.worker_started(201, 0, 0)
    ship(single, WorkerTelemetry(0), 201)
    assert {
        dict(labels)["worker"] for labels in scrape(single)["bastion_event_loop_lag_seconds"]
    } == {"0"}


def test_tick_reports_open_websockets_and_their_messages() -> None:
    app = App()

    @app.websocket("/echo")
    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    with serve(app) as server:
        telemetry = WorkerTelemetry(0)
        assert server.server.state is not None
        server.call(telemetry.attach, server.server.state)
        aggregator = Aggregator()
        aggregator.worker_started(101, 0, 1)
        ship(aggregator, telemetry, 101)
        aggregator.tick()

        async def talk() -> None:
            async with websockets.connect(f"ws://127.0.0.1:{server.port}/echo") as ws:
                for text in ("a", "b", "c"):
                    await ws.send(text)
                    assert await ws.recv() == text
                # Still open when the worker reports.
                ship(aggregator, telemetry, 101)

        asyncio.run(talk())
        point = aggregator.tick()
    assert point["websockets"] == 1
    assert point["websocket_messages"] == 6  # three in, three out
    assert point["workers"][0]["websockets"] == 1
