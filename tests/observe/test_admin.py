"""The admin application over a real socket: probes, metrics, the summary and the event feed."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bastion.engine import ServerConfig
from bastion.observe.admin import ServerHealth, admin_app
from bastion.observe.aggregate import Aggregator
from tests.serving import RunningServer, serve


def snapshot(
    pid: int, slot: int, requests: int, checks: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "v": 1,
        "pid": pid,
        "slot": slot,
        "requests": [("GET", 200, "/items/{id}", requests, 0, 10 * requests)],
        "durations": [("GET", "/items/{id}", requests, *([0.0] * 13), 0.001 * requests)],
        "engine": {"requests": requests, "connections_opened": 1, "connections_closed": 0},
        "pool": {"threads": 4, "busy": 0, "queued": 0},
        "process": {"cpu_seconds": 0.5, "rss_bytes": 1e6, "open_fds": 10},
        "loop_lag": 0.0,
        "checks": checks or {},
        "app": [],
    }


@pytest.fixture
def aggregator() -> Aggregator:
    aggregator = Aggregator()
    for pid, slot in ((201, 0), (202, 1)):
        aggregator.worker_started(pid, slot, 1)
        aggregator.worker_state(pid, "serving")
        aggregator.update(snapshot(pid, slot, 10))
    aggregator.tick()
    return aggregator


@pytest.fixture
def admin(aggregator: Aggregator) -> Iterator[tuple[RunningServer, ServerHealth]]:
    health = ServerHealth(aggregator, beat_deadline=0.5)
    with serve(admin_app(health, tick=0.1)) as server:
        yield server, health


def test_probes_follow_liveness_and_readiness(admin: tuple[RunningServer, ServerHealth]) -> None:
    server, health = admin
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz?verbose")
        assert ready.status_code == 200 and ready.text.startswith("ok")
        health.draining = True
        drained = client.get("/readyz")
        assert drained.status_code == 503 and "draining" in drained.text
        assert client.get("/healthz").status_code == 200  # draining is not dead
        time.sleep(0.6)  # no heartbeat for longer than the deadline: a blocked event loop
        dead = client.get("/healthz", headers={"accept": "application/json"})
        assert dead.status_code == 503
        assert dead.json()["workers"]["0"]["ok"] is False


def test_failing_check_is_reported(aggregator: Aggregator) -> None:
    failing = {"database": {"ok": False, "detail": "timed out after 1s", "seconds": 1.0}}
    aggregator.update(snapshot(202, 1, 10, failing))
    with serve(admin_app(ServerHealth(aggregator))) as server:
        response = httpx.get(f"{server.url}/readyz?verbose&format=json")
        assert response.status_code == 503
        body = response.json()
        assert body["checks"]["database"]["workers"]["1"]["detail"] == "timed out after 1s"
        text = httpx.get(f"{server.url}/readyz?verbose").text
        assert "[-] database: worker 1: timed out after 1s" in text


def test_each_service_lists_its_own_workers_and_checks() -> None:
    # bastion up: two services, each with a worker 0, and a check of the same name.
    aggregator = Aggregator()
    failing = {"database": {"ok": False, "detail": "unreachable", "seconds": 0.1}}
    passing = {"database": {"ok": True, "detail": "", "seconds": 0.1}}
    for pid, service, slot, checks in (
        (301, "orders", 0, failing),
        (302, "users", 0, passing),
        (303, "users", 1, passing),
    ):
        aggregator.worker_started(pid, slot, 1, service)
        aggregator.worker_state(pid, "serving")
        aggregator.update(snapshot(pid, slot, 1, checks))
    with serve(admin_app(ServerHealth(aggregator))) as server:
        ready = httpx.get(f"{server.url}/readyz?verbose&format=json").json()
        assert ready["reasons"] == ["orders: check database failing"]
        assert ready["workers"] == 3 and "checks" not in ready
        orders, users = ready["services"]["orders"], ready["services"]["users"]
        assert orders["checks"]["database"]["workers"] == {"0": failing["database"]}
        assert set(users["checks"]["database"]["workers"]) == {"0", "1"}
        assert (orders["workers"], users["workers"]) == (1, 2)
        text = httpx.get(f"{server.url}/readyz?verbose").text
        assert text == (
            "failing\n- orders: check database failing\n"
            "orders: 1 serving\n  [-] database: worker 0: unreachable\n"
            "users: 2 serving\n  [+] database: worker 0: ok; worker 1: ok\n"
        )
        live = httpx.get(f"{server.url}/healthz?format=json").json()
        assert {name: set(part["workers"]) for name, part in live["services"].items()} == {
            "orders": {"0"},
            "users": {"0", "1"},
        }
        assert live["services"]["orders"]["workers"]["0"]["pid"] == 301
        text = httpx.get(f"{server.url}/healthz?verbose").text
        assert text == (
            "ok\norders:\n  [+] worker 0 (pid 301)\n"
            "users:\n  [+] worker 0 (pid 302)\n  [+] worker 1 (pid 303)\n"
        )


def test_metrics_negotiate_their_format(admin: tuple[RunningServer, ServerHealth]) -> None:
    server, _ = admin
    plain = httpx.get(f"{server.url}/metrics")
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(plain.text)}
    total = sum(s.value for s in families["bastion_requests"].samples)
    assert total == 20
    open_metrics = httpx.get(
        f"{server.url}/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
    assert open_metrics.text.endswith("# EOF\n")


def test_token_is_required_when_set(aggregator: Aggregator) -> None:
    with serve(admin_app(ServerHealth(aggregator), token="s3cret")) as server:
        for path in ("/healthz", "/readyz", "/metrics", "/", "/events", "/api/summary"):
            denied = httpx.get(f"{server.url}{path}")
            assert denied.status_code == 401, path
            assert denied.headers["www-authenticate"].startswith("Bearer")
            wrong = httpx.get(f"{server.url}{path}", headers={"authorization": "Bearer nope"})
            assert wrong.status_code == 401
        good = httpx.get(f"{server.url}/healthz", headers={"authorization": "Bearer s3cret"})
        assert good.status_code == 200
        assert httpx.get(f"{server.url}/nowhere").status_code == 404


def test_event_feed_sends_history_then_each_new_point(
    admin: tuple[RunningServer, ServerHealth], aggregator: Aggregator
) -> None:
    server, _ = admin
    with server.connect() as sock:
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: admin\r\n\r\n")
        received = b""
        deadline = time.monotonic() + 5
        while b"event: history" not in received and time.monotonic() < deadline:
            received += sock.recv(65536)
        assert b"content-type: text/event-stream" in received
        aggregator.update(snapshot(201, 0, 25))

        async def tick() -> None:
            aggregator.tick()

        asyncio.run_coroutine_threadsafe(tick(), server.loop).result(5)
        while b'"rps": 15' not in received and time.monotonic() < deadline:
            received += sock.recv(65536)
        assert b'"rps": 15' in received
        sock.shutdown(socket.SHUT_RDWR)
    # The feed stops once its client is gone.
    deadline = time.monotonic() + 5
    while server.server.state.connections and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.02)
    assert not server.server.state.connections  # type: ignore[union-attr]


def test_summary_is_json(admin: tuple[RunningServer, ServerHealth]) -> None:
    server, _ = admin
    body = httpx.get(f"{server.url}/api/summary").json()
    assert body["now"]["workers"][0]["slot"] == 0
    assert isinstance(json.dumps(body["history"]), str)


def test_a_dashboard_client_that_stops_reading_is_cut_and_costs_bounded_memory(
    aggregator: Aggregator,
) -> None:
    health = ServerHealth(aggregator)
    config = ServerConfig(write_timeout=2.0)
    with serve(admin_app(health, tick=0.02), config) as server:
        state = server.server.state
        assert state is not None
        # Small socket buffers on both sides (an accepted socket takes the listener's), so
        # that the server's side backs up after a few points, not after megabytes.
        for listener in server.server.sockets:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((server.host, server.port))
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: admin\r\n\r\n")
        requests = 10

        def new_point() -> tuple[int, int, int]:
            """Add a point for the feed; what the server holds for the stuck client: the
            bytes the feed wrote, those the transport holds, and its high-water mark."""
            nonlocal requests
            requests += 10
            aggregator.update(snapshot(201, 0, requests))
            aggregator.tick()
            conn = next(iter(state.connections), None)
            if conn is None or conn.transport is None or conn.current is None:
                return -1, -1, -1
            transport = conn.transport
            high = transport.get_write_buffer_limits()[1]
            return conn.current.bytes_sent, transport.get_write_buffer_size(), high

        try:
            # The client reads nothing: points pile up until the transport pauses the feed.
            seen: list[tuple[int, int, int]] = []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                sample = server.call(new_point)
                if sample[0] >= 0:
                    seen.append(sample)
                elif seen:
                    break  # the stream had begun: cut
                time.sleep(0.005)
            else:
                pytest.fail(f"the stuck client was never cut: {seen[-5:]} {len(seen)}")
            point = max(len(json.dumps(p)) for p in aggregator.history) + 16
            # While the client was stuck, the feed waited instead of queueing every point:
            # what the server held never grew past the transport's limit and one point.
            assert all(buffered <= high + point for _, buffered, high in seen)
            stalled = [sent for sent, buffered, high in seen if buffered >= high]
            assert len(stalled) > 1, "the client's buffers never filled up"
            # Points kept coming while it was paused; none of them was written.
            assert len(set(stalled)) == 1, "the feed kept writing to a paused transport"
        finally:
            sock.close()
        assert state.stats.errors_by_kind.get("timeout-write") == 1
        assert not state.connections
