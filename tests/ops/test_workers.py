"""Worker processes: restarts, recycling, scaling and hung workers, on a real supervisor."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

from tests.ops.running import ROOT, Load, bastion_env, supervisor

APP = "tests.ops.apps:app"


def test_workers_share_the_port_and_a_killed_worker_is_replaced_under_load() -> None:
    with supervisor(APP, "--bind", "127.0.0.1:0", "--workers", "2") as proc:
        first = proc.wait_workers(2)
        seen = set()
        for _ in range(40):
            status, body = proc.get("/pid")
            assert status == 200
            seen.add(int(body))
        assert seen <= set(first)
        with Load(proc.port, "/", clients=4, expect=b"Hello") as load:
            load.wait_ok(50)
            victim = first[0]
            os.kill(victim, signal.SIGKILL)
            proc.wait_for(rf"worker \d \(pid {victim}\) was killed by SIGKILL")
            replaced = proc.wait_workers(2)
            assert victim not in replaced
            proc.wait_for(rf"worker \d \(pid (?!{victim})\d+\) is serving")
            # A client whose kept-alive connection went to the killed worker learns it on its
            # next request, which on a loaded machine may come after the restart: let every
            # client make progress before counting.
            load.wait_ok(50)
            failed_before = len(load.failures)
            load.wait_ok(200)
            # Requests in flight on the killed worker may fail; none after the restart.
            assert len(load.failures) == failed_before, load.failures
        for _ in range(20):
            status, _ = proc.get("/")
            assert status == 200
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_max_requests_recycles_workers_without_failing_a_request() -> None:
    args = ("--bind", "127.0.0.1:0", "--workers", "1", "--max-requests", "30")
    with supervisor(APP, *args, "--max-requests-jitter", "10") as proc:
        (first,) = proc.wait_workers(1)
        with Load(proc.port, "/pid", clients=2) as load:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and len(load.bodies) < 3:
                time.sleep(0.05)
        assert len(load.bodies) >= 3, proc.text  # at least two replacements
        assert load.failures == []
        assert str(first).encode() in load.bodies
        assert "reached its max_requests: replacing it" in proc.text
        assert "replaced after max_requests" in proc.text


def test_ttin_adds_and_ttou_removes_a_worker() -> None:
    with supervisor(APP, "--bind", "127.0.0.1:0", "--workers", "2") as proc:
        proc.wait_workers(2)
        proc.signal(signal.SIGTTIN)
        proc.wait_workers(3)
        proc.signal(signal.SIGTTIN)
        three_or_four = proc.wait_workers(4)
        proc.signal(signal.SIGTTOU)
        remaining = proc.wait_workers(3)
        assert set(remaining) < set(three_or_four)
        proc.wait_for("SIGTTOU: now 3 workers")
        for _ in range(30):
            assert proc.get("/")[0] == 200
        for _ in range(3):
            proc.signal(signal.SIGTTOU)
            time.sleep(0.2)
        proc.wait_workers(1)
        proc.wait_for("already down to one worker")
        assert proc.get("/")[0] == 200


def test_a_worker_with_a_blocked_event_loop_is_killed_and_replaced() -> None:
    args = ("--bind", "127.0.0.1:0", "--workers", "1", "--worker-timeout", "1")
    with supervisor(APP, *args) as proc:
        (stuck,) = proc.wait_workers(1)
        sock = socket.create_connection(("127.0.0.1", proc.port), timeout=10)
        sock.sendall(b"GET /hang?s=30 HTTP/1.1\r\nHost: t\r\n\r\n")
        started = time.monotonic()
        proc.wait_for(rf"\(pid {stuck}\) answered no heartbeat", timeout=10)
        proc.wait_for(rf"\(pid {stuck}\) was killed by SIGKILL", timeout=5)
        assert time.monotonic() - started < 6
        assert "Stack (most recent call first)" in proc.text or "File " in proc.text
        (fresh,) = proc.wait_workers(1)
        assert fresh != stuck
        assert proc.get("/")[0] == 200
        sock.close()


def test_workers_that_keep_crashing_make_the_supervisor_give_up() -> None:
    with supervisor(
        "tests.ops.crashing:app", "--bind", "127.0.0.1:0", ready=False, timeout=40
    ) as proc:
        assert proc.wait(40) == 1
        assert "giving up" in proc.text
        assert "restarting worker 0 in" in proc.text


def test_an_application_that_cannot_start_stops_the_supervisor_with_its_reason() -> None:
    with supervisor(
        "tests.ops.apps:nothing", "--bind", "127.0.0.1:0", "--workers", "3", ready=False
    ) as proc:
        assert proc.wait(20) == 2, proc.text
        assert "has no attribute 'nothing'" in proc.text
        assert "failed to start" in proc.text


def test_a_second_server_on_the_same_port_fails_instead_of_sharing_it() -> None:
    with supervisor(APP, "--bind", "127.0.0.1:0", "--workers", "2") as first:
        second = subprocess.run(
            [sys.executable, "-m", "bastion", "run", APP, "--bind", f"127.0.0.1:{first.port}"],
            cwd=ROOT,
            env=bastion_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 1
        assert "cannot listen" in second.stderr and "in use" in second.stderr


def test_a_worker_keeps_its_startup_objects_out_of_collections() -> None:
    # A full collection walks every tracked object; what the application and the server
    # built to start lives as long as the worker, and walking it stalled the loop.
    with supervisor(APP, "--bind", "127.0.0.1:0") as proc:
        status, body = proc.get("/gc")
    counts = json.loads(body)
    assert status == 200
    assert counts["frozen"] > 10_000
    assert counts["tracked"] < counts["frozen"] // 2
