"""examples/microservices end to end: ``bastion up`` on its stack file, on free ports."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.serving import LoadThreads

pytest.importorskip("fastapi")
pytest.importorskip("flask")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "microservices"
SERVING = re.compile(r"(\S+) worker (\d+) \(pid (\d+)\) is serving")

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="bastion up needs fork()")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Up:
    """``bastion up`` in a child process, its stderr collected line by line."""

    def __init__(self, stack: Path) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", NO_COLOR="1")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "bastion", "up", str(stack)],
            cwd=stack.parent,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.lines.append(line)

    def wait_for(self, pattern: str, timeout: float, after: int = 0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[after:]:
                found = re.search(pattern, line)
                if found:
                    return found
            if self.popen.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in:\n{''.join(self.lines)}")

    def serving(self, group: str) -> dict[int, int]:
        """The pid serving in each slot of ``group``, the latest for each."""
        pids: dict[int, int] = {}
        for line in self.lines:
            found = SERVING.search(line)
            if found and found.group(1) == group:
                pids[int(found.group(2))] = int(found.group(3))
        return pids


class Load(LoadThreads):
    """GETs of ``url`` in a loop from two threads, keeping what failed."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers = 0
        self.failures: list[str] = []
        super().__init__(2)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, _ = get(self.url)
            except OSError as exc:
                self.failures.append(repr(exc))
                continue
            if status != 200:
                self.failures.append(str(status))
            self.answers += 1


def get(url: str) -> tuple[int, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, json.load(response)


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    """The example, copied with each of its ports replaced by a free one."""
    for source in EXAMPLE.iterdir():
        if source.suffix in (".py", ".toml"):
            shutil.copy(source, tmp_path / source.name)
    path = tmp_path / "stack.toml"
    text = path.read_text()
    for port in sorted(set(re.findall(r"127\.0\.0\.1:(\d+)", text))):
        text = text.replace(f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}")
    path.write_text(text)
    return path


def test_the_example_runs_end_to_end(stack: Path) -> None:
    up = Up(stack)
    try:
        up.wait_for("every service is ready", timeout=25)
        balancer = up.wait_for(r"balancer serving on (http://\S+)", timeout=1).group(1)
        admin = up.wait_for(r"admin \(health, metrics, dashboard\) on (http://\S+)", 1).group(1)

        # Through the balancer, each of the three services answers, and they call each other.
        seen = set()
        for _ in range(6):
            status, body = get(f"{balancer}/users/1")
            assert status == 200 and body["name"] == "Ada"
            seen.add(body["served_by"])
        assert seen == {"users-1", "users-2"}
        status, order = get(f"{balancer}/orders/10")
        assert status == 200 and order["served_by"] == "orders"
        assert order["customer"]["name"] == "Ada"
        status, page = get(f"{balancer}/")
        assert status == 200 and page["served_by"] == "frontend"
        assert page["orders"]["served_by"] == "orders"
        assert page["users"]["served_by"] in ("users-1", "users-2")
        with urllib.request.urlopen(f"{admin}/readyz", timeout=5) as response:
            assert response.status == 200
        # Request metrics are told apart by service (snapshots arrive once a second).
        deadline = time.monotonic() + 10
        while True:
            with urllib.request.urlopen(f"{admin}/metrics", timeout=5) as response:
                metrics = response.read().decode()
            missing = [
                service
                for service in ("orders", "users", "frontend", "balancer")
                if not re.search(rf'bastion_requests_total{{[^}}]*service="{service}"', metrics)
            ]
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert not missing, metrics

        # kill -9 of one service's worker: that worker alone is replaced, and served again.
        users = up.serving("users")
        others = {g: up.serving(g) for g in ("frontend", "orders", "users-2", "balancer")}
        assert len(users) == 2
        mark = len(up.lines)
        os.kill(users[0], signal.SIGKILL)
        found = up.wait_for(r"users worker 0 \(pid (\d+)\) is serving", timeout=15, after=mark)
        assert int(found.group(1)) != users[0]
        assert up.serving("users")[1] == users[1]
        assert {g: up.serving(g) for g in others} == others
        seen = set()
        for _ in range(6):
            status, body = get(f"{balancer}/users/2")
            assert status == 200 and body["name"] == "Grace"
            seen.add(body["served_by"])
        assert "users-1" in seen
        status, order = get(f"{balancer}/orders/11")
        assert status == 200 and order["customer"]["name"] == "Grace"

        # kill -STOP of users-2: its health checks fail, /users goes to users alone; once
        # resumed, two passed checks bring it back.
        (frozen,) = up.serving("users-2").values()
        mark = len(up.lines)
        os.kill(frozen, signal.SIGSTOP)
        try:
            up.wait_for(r"upstream \S+ \(route \"users\"\) is down", timeout=10, after=mark)
            served = {get(f"{balancer}/users/1")[1]["served_by"] for _ in range(6)}
            assert served == {"users-1"}
        finally:
            os.kill(frozen, signal.SIGCONT)
        up.wait_for(r"upstream \S+ \(route \"users\"\) is up", timeout=10, after=mark)

        # A new weight in the file and SIGHUP: about three /users requests in four go to
        # users-2, and none fails while the services' new workers take over.
        stack.write_text(
            stack.read_text().replace(
                '{ url = "service:users-2", weight = 1 }', '{ url = "service:users-2", weight = 3 }'
            )
        )
        mark = len(up.lines)
        with Load(f"{balancer}/users/1") as load:
            up.popen.send_signal(signal.SIGHUP)
            up.wait_for("balancer: SIGHUP received: applied to the running workers", 10, mark)
            for group in ("frontend", "users", "users-2", "orders"):
                up.wait_for(rf"{group}: reload complete", timeout=20, after=mark)
        assert load.failures == [] and load.answers > 0
        served = [get(f"{balancer}/users/1")[1]["served_by"] for _ in range(40)]
        assert served.count("users-2") >= 2 * served.count("users-1"), served

        up.popen.send_signal(signal.SIGTERM)
        assert up.popen.wait(timeout=20) == 0
        up.wait_for("every group stopped", timeout=2)
    finally:
        if up.popen.poll() is None:
            up.popen.kill()
            up.popen.wait(5)
