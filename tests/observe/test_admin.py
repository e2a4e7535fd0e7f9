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
