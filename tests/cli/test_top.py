"""``bastion top`` against a live admin listener: one frame, and a screen that keeps changing."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bastion.observe.admin import ServerHealth, admin_app
from bastion.observe.aggregate import Aggregator
from tests.serving import RunningServer, serve

ROUTE = "/orders/{id}"


def snapshot(pid: int, slot: int, requests: int) -> dict[str, Any]:
    return {
        "v": 1,
        "pid": pid,
        "slot": slot,
        "requests": [
            ("GET", 200, ROUTE, requests, 0, 0),
            ("POST", 503, ROUTE, requests // 10, 0, 0),
        ],
        "durations": [("GET", ROUTE, requests, *([0.0] * 13), 0.0005 * requests)],
        "engine": {"requests": requests, "connections_opened": 3, "connections_closed": 1},
        "pool": {"threads": 4, "busy": 1, "queued": 0},
        "process": {"cpu_seconds": requests / 1000, "rss_bytes": 30e6, "open_fds": 12},
        "loop_lag": 0.0004,
        "checks": {},
        "app": [],
    }


@pytest.fixture
def admin() -> Iterator[RunningServer]:
    """An admin listener whose two workers serve more requests every tick."""
    aggregator = Aggregator()
    for pid, slot in ((301, 0), (302, 1)):
        aggregator.worker_started(pid, slot, 1)
        aggregator.worker_state(pid, "serving")
    stop = threading.Event()
    with serve(admin_app(ServerHealth(aggregator))) as server:

        def traffic() -> None:
            served = 0
            while not stop.is_set():
                served += 100 + served // 7
                for pid, slot in ((301, 0), (302, 1)):
                    aggregator.update(snapshot(pid, slot, served * (slot + 1)))
                server.call(aggregator.tick)
                stop.wait(0.2)

        thread = threading.Thread(target=traffic, daemon=True)
        thread.start()
        try:
            time.sleep(0.5)
            yield server
        finally:
            stop.set()
            thread.join(5)


def test_one_frame(admin: RunningServer) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bastion", "top", "--admin", f"127.0.0.1:{admin.port}", "--once"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode == 0, result.stderr
    frame = result.stdout
    assert "requests/s" in frame and "p99" in frame
    assert "GET /orders/{id}" in frame  # busiest routes
    assert frame.count("serving") == 2  # one line per worker


def test_unreachable_admin_is_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bastion", "top", "--admin", "127.0.0.1:1", "--once"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "cannot reach" in result.stderr


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_live_screen_in_tmux(admin: RunningServer) -> None:
    session = f"bastion-top-{admin.port}"
    command = f"{sys.executable} -m bastion top --admin 127.0.0.1:{admin.port} --interval 0.3"
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "30", command], check=True
    )
    try:
        screens = []
        deadline = time.monotonic() + 10
        while len(set(screens)) < 3 and time.monotonic() < deadline:
            time.sleep(0.4)
            pane = subprocess.run(
                ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True
            ).stdout
            if "requests/s" in pane:
                screens.append(pane.split("bastion top", 1)[1].split("\n", 1)[1])
        assert len(set(screens)) >= 3, screens
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
