"""Start ``bastion`` as a real child process and find the port it bound."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from tests.ops.running import Supervisor, bastion_env

ROOT = Path(__file__).resolve().parents[2]
_URL = re.compile(r"serving on https?://127\.0\.0\.1:(\d+)")


class Process:
    def __init__(self, popen: subprocess.Popen[str], port: int, output: list[str]) -> None:
        self.popen = popen
        self.port = port
        self.output = output

    def wait(self, timeout: float) -> int:
        code = self.popen.wait(timeout)
        assert self.popen.stderr is not None
        self.output.append(self.popen.stderr.read())
        return code

    @property
    def text(self) -> str:
        return "".join(self.output)


def bastion_out(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m bastion ARGS`` to its end (a refusal, --print-config, --check)."""
    return subprocess.run(
        [sys.executable, "-m", "bastion", *args],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=cwd,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", **(env or {})},
    )


@contextmanager
def bastion(
    *args: str,
    timeout: float = 15.0,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    stdout: int = subprocess.DEVNULL,
) -> Iterator[Process]:
    """Run ``python -m bastion ARGS`` (in ``cwd``, the repository root unless told, with
    ``env`` added to the environment, its stdout to ``stdout``) until it prints its URL."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", **(env or {}))
    popen = subprocess.Popen(
        [sys.executable, "-m", "bastion", *args],
        cwd=cwd,
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )
    output: list[str] = []
    try:
        deadline = time.monotonic() + timeout
        assert popen.stderr is not None
        port = 0
        while time.monotonic() < deadline:
            line = popen.stderr.readline()
            if not line:
                break
            output.append(line)
            found = _URL.search(line)
            if found:
                port = int(found.group(1))
                break
        if not port:
            popen.kill()
            rest = popen.stderr.read()
            raise AssertionError(f"bastion did not start: {''.join(output)}{rest}")
        yield Process(popen, port, output)
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait(5)
        # Closed here rather than left to the garbage collector, whose ResourceWarning would
        # land on whichever test happens to be running then.
        if popen.stderr is not None:
            popen.stderr.close()


@contextmanager
def in_session(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> Iterator[Supervisor]:
    """Run ``python -m bastion ARGS`` as the leader of a process group of its own, as under a
    terminal (so a signal can be sent to the whole group); its stderr is read as it comes
    (:class:`tests.ops.running.Supervisor`). Whatever is left of the group is killed after."""
    popen = subprocess.Popen(
        [sys.executable, "-m", "bastion", *args],
        cwd=cwd,
        env=bastion_env(env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        yield Supervisor(popen)
    finally:
        with suppress(OSError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(10)
