"""Signals to a real ``bastion run``: readiness on the probe paths through a shutdown delay,
and SIGHUP sent to the whole process group."""

from __future__ import annotations

import os
import signal

import pytest

from tests.ops.running import Load, supervisor
from tests.process.test_monitor import admin_get, free_port, wait_until

APP = "tests.process.apps:app"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_probe_path_readiness_fails_at_sigterm_while_the_delay_keeps_serving(
    workers: str,
) -> None:
    admin = free_port()
    with supervisor(
        APP,
        "--bind",
        "127.0.0.1:0",
        "--workers",
        workers,
        "--admin-bind",
        f"127.0.0.1:{admin}",
        "--health-path-prefix",
        "/_bastion",
        # Far longer than the test: readiness must fail because of the signal, not the drain.
        "--shutdown-delay",
        "60",
    ) as server:
        server.wait_workers(int(workers))
        wait_until(lambda: admin_get(admin, "/readyz")[0] == 200, what="ready")
        assert server.get("/_bastion/readyz") == (200, b"ok\n")
        server.signal(signal.SIGTERM)
        server.wait_for("readiness fails now")
        # Each probe is a new connection, to whichever worker accepts it: every one says so.
        wait_until(
            lambda: all(server.get("/_bastion/readyz")[0] == 503 for _ in range(6)),
            timeout=5,
            what="probe path not ready",
        )
        status, body = server.get("/_bastion/readyz")
        assert status == 503 and b"draining" in body
        assert admin_get(admin, "/readyz")[0] == 503
        # Alive, and still accepting and serving new connections through the delay.
        for _ in range(6):
            assert server.get("/_bastion/healthz") == (200, b"ok\n")
            assert server.get("/") == (200, b"Hello, world!")
        assert "shutdown delay over" not in server.text
        server.signal(signal.SIGTERM)  # a second one drains now
        assert server.wait(20) == 0


def test_sighup_to_the_process_group_is_a_reload_that_fails_no_request() -> None:
    with supervisor(APP, "--bind", "127.0.0.1:0", "--workers", "2") as server:
        before = set(server.wait_workers(2))
        with Load(server.port, expect=b"Hello") as load:
            load.wait_ok(50)
            mark = server.mark()
            # What a terminal hanging up does: the signal reaches the workers as well.
            os.killpg(server.pid, signal.SIGHUP)
            server.wait_for("reload complete: generation 1 is serving", after=mark)
            wait_until(lambda: not before & set(server.workers()), what="old workers gone")
            load.wait_ok(50)
        assert load.failures == []
        assert "killed by SIGHUP" not in server.text
        for pid in before:
            server.wait_for(rf"worker \d \(pid {pid}\) stopped", after=mark)
        assert server.get("/") == (200, b"Hello, world!")
        server.signal(signal.SIGTERM)
        assert server.wait(20) == 0
