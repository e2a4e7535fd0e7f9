"""Messages from a real supervisor's jobs reach every worker, and a restarted worker (or a
new generation after a reload) is told the current state first, with or without an admin
listener."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.ops.running import ROOT, Supervisor, bastion_env
from tests.process.test_monitor import wait_until


def received(directory: Path, pid: int) -> list[dict[str, Any]]:
    try:
        text = (directory / f"{pid}.log").read_text()
    except FileNotFoundError:
        return []
    # A line may be half written while we read.
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def in_order(messages: list[dict[str, Any]]) -> bool:
    """The state first, then every broadcast after it, none missing."""
    first, *rest = messages
    return first.get("state") is True and [m["n"] for m in rest] == list(
        range(first["n"] + 1, first["n"] + 1 + len(rest))
    )


@pytest.mark.parametrize("admin", [False, True], ids=["no-admin", "admin"])
def test_broadcasts_reach_every_worker_and_a_new_one_gets_the_state(
    tmp_path: Path, admin: bool
) -> None:
    popen = subprocess.Popen(
        [sys.executable, "-m", "tests.process.broadcasting", str(tmp_path)]
        + (["--admin"] if admin else []),
        cwd=ROOT,
        env=bastion_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    server = Supervisor(popen)
    try:
        server.wait_for("serving on")
        pids = server.wait_workers(2)
        wait_until(
            lambda: all(len(received(tmp_path, pid)) >= 4 for pid in pids), what="broadcasts"
        )
        for pid in pids:
            assert in_order(received(tmp_path, pid)), received(tmp_path, pid)

        victim, survivor = pids
        os.kill(victim, signal.SIGKILL)
        (fresh,) = set(server.wait_workers(2, gone=victim)) - {survivor}
        wait_until(lambda: len(received(tmp_path, fresh)) >= 3, what="the new worker's messages")
        messages = received(tmp_path, fresh)
        assert in_order(messages), messages
        # Its state is the count when it started, not from scratch.
        assert messages[0]["n"] >= received(tmp_path, victim)[-1]["n"]
        assert in_order(received(tmp_path, survivor))

        # A reload runs the plan's jobs again; the new generation starts from their state.
        mark = server.mark()
        server.signal(signal.SIGHUP)
        server.wait_for("reload complete", after=mark)
        wait_until(lambda: not {survivor, fresh} & set(server.workers()), what="old workers gone")
        new = server.wait_workers(2)
        wait_until(lambda: all(len(received(tmp_path, pid)) >= 3 for pid in new), what="news")
        for pid in new:
            assert in_order(received(tmp_path, pid)), received(tmp_path, pid)
            assert received(tmp_path, pid)[0]["n"] >= messages[-1]["n"]
    finally:
        if popen.poll() is None:
            os.killpg(popen.pid, signal.SIGTERM)
            try:
                popen.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(popen.pid, signal.SIGKILL)
                popen.wait(10)
    assert popen.returncode == 0, server.text
