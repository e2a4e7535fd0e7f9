"""The admin listener of a real supervisor: counters summed over workers that never go
backwards, readiness and liveness through signals and blocked workers, checks, tokens."""

from __future__ import annotations

import http.client
import itertools
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.ops.running import ROOT, Load, bastion_env, supervisor

APP = "tests.process.apps:app"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def admin_get(
    port: int, path: str, token: str | None = None, timeout: float = 5.0
) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def requests_total(port: int) -> float:
    _, text = admin_get(port, "/metrics")
    for family in text_string_to_metric_families(text):
        if family.name == "bastion_requests":
            return sum(sample.value for sample in family.samples if sample.name.endswith("_total"))
    return 0.0


def wait_until(condition, timeout: float = 10.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.05)


@pytest.fixture
def admin_port() -> int:
    return free_port()


def serve_monitored(admin_port: int, *args: str, **kwargs: object):  # type: ignore[no-untyped-def]
    return supervisor(
        APP, "--bind", "127.0.0.1:0", "--admin-bind", f"127.0.0.1:{admin_port}", *args, **kwargs
    )


def send(port: int, count: int, path: str = "/") -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(count):
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        assert response.status in (200, 404)
    conn.close()


def test_counts_are_exact_and_never_go_backwards(admin_port: int) -> None:
    with serve_monitored(admin_port, "--workers", "3") as server:
        server.wait_workers(3)
        wait_until(lambda: admin_get(admin_port, "/readyz")[0] == 200, what="ready")
        for _ in range(3):  # new connections: the kernel spreads them over the workers
            send(server.port, 40)
            send(server.port, 20, "/items/7")
        wait_until(lambda: requests_total(admin_port) == 180, what="180 requests counted")
        _, text = admin_get(admin_port, "/metrics")
        assert (
            'bastion_requests_total{method="GET",route="/items/{id:int}",status="200"} 60.0' in text
        )
        # A worker killed outright: what it had reported stays counted.
        time.sleep(1.2)  # (its last report covers all it served)
        victim = server.workers()[0]
        subprocess.run(["kill", "-9", str(victim)], check=True)
        seen = [requests_total(admin_port)]
        server.wait_workers(3, gone=victim)
        # A reload under load: the total only grows.
        stop = threading.Event()

        def scrape() -> None:
            while not stop.is_set():
                seen.append(requests_total(admin_port))
                time.sleep(0.05)

        scraper = threading.Thread(target=scrape, daemon=True)
        scraper.start()
        with Load(server.port, clients=2) as load:
            load.wait_ok(100)
            mark = server.mark()
            server.signal(signal.SIGHUP)
            server.wait_for("reload complete", after=mark)
            load.wait_ok(100)
        stop.set()
        scraper.join(5)
        assert load.failures == []
        assert seen[0] == 180
        assert all(later >= earlier for earlier, later in itertools.pairwise(seen)), seen
        wait_until(lambda: requests_total(admin_port) == 180 + load.ok, what="load counted")
        _, text = admin_get(admin_port, "/metrics")
        assert 'bastion_worker_exits_total{reason="crash"} 1.0' in text
        assert 'bastion_worker_exits_total{reason="reload"} 3.0' in text


def test_readiness_fails_at_once_on_sigterm_while_requests_finish(admin_port: int) -> None:
    with serve_monitored(admin_port, "--workers", "2", "--threads", "2") as server:
        server.wait_workers(2)
        wait_until(lambda: admin_get(admin_port, "/readyz")[0] == 200, what="ready")
        result: list[tuple[int, bytes]] = []
        slow = threading.Thread(target=lambda: result.append(server.get("/slow?s=1.5")))
        slow.start()
        time.sleep(0.3)  # the request is in flight
        server.signal(signal.SIGTERM)
        wait_until(lambda: admin_get(admin_port, "/readyz")[0] == 503, timeout=2, what="not ready")
        assert admin_get(admin_port, "/healthz")[0] == 200  # stopping is not dead
        slow.join(10)
        assert result == [(200, b"slow done")]
        assert server.wait(20) == 0


def test_shutdown_delay_keeps_serving_while_not_ready(admin_port: int) -> None:
    with serve_monitored(admin_port, "--shutdown-delay", "1.5") as server:
        wait_until(lambda: admin_get(admin_port, "/readyz")[0] == 200, what="ready")
        mark = server.mark()
        server.signal(signal.SIGTERM)
        wait_until(lambda: admin_get(admin_port, "/readyz")[0] == 503, timeout=2, what="not ready")
        # New connections during the delay are still served.
        for _ in range(5):
            assert server.get("/") == (200, b"Hello, world!")
            time.sleep(0.1)
        server.wait_for("shutdown delay over", after=mark, timeout=5)
        assert server.wait(20) == 0


def test_blocked_workers_fail_liveness_and_probes_stay_answered(admin_port: int) -> None:
    with serve_monitored(admin_port, "--workers", "2", "--worker-timeout", "60") as server:
        server.wait_workers(2)
        wait_until(lambda: admin_get(admin_port, "/healthz")[0] == 200, what="live")
        blockers = [
            threading.Thread(target=server.get, args=("/block?s=5", 30), daemon=True)
            for _ in range(4)
        ]
        for thread in blockers:
            thread.start()
        # Every worker's loop is blocked; probes (and a scrape) are still answered, and
        # liveness turns to failing once the heartbeats stop.
        wait_until(
            lambda: admin_get(admin_port, "/healthz", timeout=2)[0] == 503,
            timeout=8,
            what="liveness failing",
        )
        status, text = admin_get(admin_port, "/healthz?verbose")
        assert status == 503 and "event loop silent" in text
        assert admin_get(admin_port, "/metrics", timeout=2)[0] == 200
        for thread in blockers:
            thread.join(30)
        wait_until(lambda: admin_get(admin_port, "/healthz")[0] == 200, what="live again")


def test_checks_failing_and_hanging_are_reported(admin_port: int, tmp_path: Path) -> None:
    flag = tmp_path / "not-ready"
    with serve_monitored(
        admin_port,
        "--health-check",
        "tests.process.apps:hanging_check",
        "--health-check-timeout",
        "0.3",
        "--health-path-prefix",
        "/_bastion",
        env={"BASTION_TEST_FLAG": str(flag)},
    ) as server:
        wait_until(
            lambda: (
                "hanging_check: worker 0: timed out" in admin_get(admin_port, "/readyz?verbose")[1]
            ),
            what="the hung check reported",
        )
        status, text = admin_get(admin_port, "/readyz?verbose")
        assert status == 503 and "[+] flag_file" in text
        # The probe path on the main listener speaks for the worker that answers it.
        status, body = server.get("/_bastion/readyz")
        assert status == 503 and b"tests.process.apps:hanging_check" in body
        assert server.get("/_bastion/healthz") == (200, b"ok\n")


def test_app_check_turns_readiness_off_and_on(admin_port: int, tmp_path: Path) -> None:
    flag = tmp_path / "not-ready"
    with serve_monitored(admin_port, env={"BASTION_TEST_FLAG": str(flag)}):
        wait_until(lambda: admin_get(admin_port, "/readyz")[0] == 200, what="ready")
        flag.touch()
        wait_until(lambda: admin_get(admin_port, "/readyz")[0] == 503, what="not ready")
        assert "[-] flag_file" in admin_get(admin_port, "/readyz?verbose")[1]
        flag.unlink()
        wait_until(lambda: admin_get(admin_port, "/readyz")[0] == 200, what="ready again")


def test_token_is_enforced(admin_port: int) -> None:
    with serve_monitored(admin_port, "--admin-token", "let-me-in"):
        wait_until(lambda: admin_get(admin_port, "/healthz", "let-me-in")[0] == 200, what="live")
        assert admin_get(admin_port, "/healthz")[0] == 401
        assert admin_get(admin_port, "/metrics", "wrong")[0] == 401


def test_a_public_admin_address_needs_a_token() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bastion", "run", APP, "--admin-bind", "0.0.0.0:0"],
        cwd=ROOT,
        env=bastion_env(),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2
    assert "reachable from other machines: set admin_token" in result.stderr
    assert result.stderr.count("\n") == 1


def test_admin_port_in_use_is_one_line(admin_port: int) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", admin_port))
        taken.listen()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "bastion",
                "run",
                APP,
                "--bind",
                "127.0.0.1:0",
                "--admin-bind",
                f"127.0.0.1:{admin_port}",
            ],
            cwd=ROOT,
            env=bastion_env(),
            capture_output=True,
            text=True,
            timeout=20,
        )
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"bastion: error: admin listener: cannot listen on 127.0.0.1:{admin_port}: address "
        "already in use"
    )
