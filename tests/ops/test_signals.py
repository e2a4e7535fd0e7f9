"""Signals to the supervisor: reload with no failed request, graceful and immediate stops."""

from __future__ import annotations

import http.client
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.ops.running import ROOT, Load, supervisor

APP = "tests.ops.apps:app"

VERSION = """
from bastion import App, Response

app = App()

@app.get("/")
async def index(request):
    return Response(b"version %d")
"""


@pytest.mark.parametrize("sockets", ["--reuse-port", "--no-reuse-port"])
def test_sighup_replaces_every_worker_with_zero_failed_requests(sockets: str) -> None:
    with supervisor(APP, "--bind", "127.0.0.1:0", "--workers", "2", sockets) as proc:
        old = set(proc.wait_workers(2))
        with Load(proc.port, "/pid", clients=6) as load:
            load.wait_ok(300)
            mark = proc.mark()
            proc.signal(signal.SIGHUP)
            proc.wait_for("reload complete", after=mark)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not set(proc.workers()).isdisjoint(old):
                time.sleep(0.05)
            load.wait_ok(300)
        new = set(proc.workers())
        assert len(new) == 2 and new.isdisjoint(old)
        assert load.failures == []
        served = {int(body) for body in load.bodies}
        assert old & served and new & served
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_sighup_reloads_code_and_a_broken_reload_keeps_the_old_workers(tmp_path: Path) -> None:
    module = tmp_path / "versioned.py"
    module.write_text(VERSION % 1)
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}"}
    with supervisor("versioned:app", "--bind", "127.0.0.1:0", env=env) as proc:
        assert proc.get("/") == (200, b"version 1")
        (old,) = proc.wait_workers(1)
        module.write_text(VERSION % 22)
        mark = proc.mark()
        proc.signal(signal.SIGHUP)
        proc.wait_for("reload complete", after=mark)
        proc.wait_for(rf"\(pid {old}\) stopped", after=mark)  # drained, not serving any more
        assert proc.get("/") == (200, b"version 22")
        module.write_text("raise RuntimeError('broken on purpose')\n")
        mark = proc.mark()
        with Load(proc.port, "/", clients=2, expect=b"version 22") as load:
            load.wait_ok(20)
            proc.signal(signal.SIGHUP)
            proc.wait_for("reload failed", after=mark)
            load.wait_ok(50)
        assert load.failures == []
        assert "broken on purpose" in proc.text
        assert proc.get("/") == (200, b"version 22")
        proc.wait_workers(1)


def test_sigterm_under_load_finishes_in_flight_requests_and_exits_zero() -> None:
    args = ("--bind", "127.0.0.1:0", "--workers", "2", "--graceful-timeout", "5")
    with supervisor(APP, *args) as proc:
        results: list[object] = []

        def slow() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=10)
            try:
                conn.request("GET", "/sleep?s=1")
                response = conn.getresponse()
                results.append((response.status, response.read()[:5]))
            except Exception as exc:
                results.append(exc)

        with Load(proc.port, "/", clients=4) as load:
            load.wait_ok(100)
            clients = [threading.Thread(target=slow) for _ in range(8)]
            for client in clients:
                client.start()
            time.sleep(0.3)
            started = time.monotonic()
            proc.signal(signal.SIGTERM)
            for client in clients:
                client.join(10)
            assert proc.wait(15) == 0
            elapsed = time.monotonic() - started
        assert results == [(200, b"slept")] * 8
        assert elapsed < 5
        assert "shutting down gracefully" in proc.text


def test_sigquit_stops_at_once() -> None:
    with supervisor(APP, "--bind", "127.0.0.1:0", "--workers", "2") as proc:
        proc.wait_workers(2)
        conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=10)
        conn.request("GET", "/sleep?s=20")
        time.sleep(0.3)
        started = time.monotonic()
        proc.signal(signal.SIGQUIT)
        assert proc.wait(10) == 0
        assert time.monotonic() - started < 3
        try:
            response = conn.getresponse()
            response.read()
            raise AssertionError("the in-flight request should have been cut")
        except (ConnectionError, http.client.HTTPException):
            pass
        assert proc.workers() == []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_sighup_moves_to_a_new_address_and_closes_the_old_one(tmp_path: Path) -> None:
    config = tmp_path / "bastion.toml"
    old_port, new_port = free_port(), free_port()
    config.write_text(f'app = "{APP}"\nbind = "127.0.0.1:{old_port}"\nworkers = 2\n')
    with supervisor("--config", str(config)) as proc:
        assert proc.port == old_port and proc.get("/")[0] == 200
        config.write_text(f'app = "{APP}"\nbind = "127.0.0.1:{new_port}"\nworkers = 2\n')
        mark = proc.mark()
        proc.signal(signal.SIGHUP)
        proc.wait_for("reload complete", after=mark)
        proc.port = new_port
        assert proc.get("/")[0] == 200
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", old_port), timeout=1).close()
            except ConnectionRefusedError:
                break
            except TimeoutError:
                pass  # its last moments: new connections are ignored, then refused
            time.sleep(0.05)
        else:
            raise AssertionError("the old address is still listening")
