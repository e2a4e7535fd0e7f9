"""Start ``bastion run`` as a real supervisor process and look at its workers."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_URL = re.compile(r"serving on (https?)://127\.0\.0\.1:(\d+)")


class Supervisor:
    """A running ``bastion run``; its stderr is collected by a thread as it arrives."""

    def __init__(self, popen: subprocess.Popen[str]) -> None:
        self.popen = popen
        self.lines: list[str] = []
        self.port = 0
        self.scheme = "http"
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def text(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 15.0, after: int = 0) -> re.Match[str]:
        """The first match of ``pattern`` in stderr lines from index ``after`` on."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[after:]:
                    found = compiled.search(line)
                    if found:
                        return found
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (
                    self.popen.poll() is not None and not self._reader.is_alive()
                ):
                    raise AssertionError(f"no {pattern!r} in output:\n{''.join(self.lines)}")
                self._changed.wait(min(remaining, 0.1))

    def mark(self) -> int:
        with self._changed:
            return len(self.lines)

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def wait(self, timeout: float) -> int:
        code = self.popen.wait(timeout)
        self._reader.join(5)
        return code

    def workers(self) -> list[int]:
        """Pids of the supervisor's live child processes (Linux /proc)."""
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            pids = [int(pid) for pid in path.read_text().split()]
        except OSError:
            return []
        return [pid for pid in pids if _alive(pid)]

    def wait_workers(self, count: int, timeout: float = 15.0, gone: int | None = None) -> list[int]:
        """The workers once there are ``count`` of them and ``gone`` (a worker killed) is not
        among them, judged on one reading of the list: a killed worker may still be alive at
        one reading and a zombie at the next, before its replacement is forked."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = self.workers()
            if len(pids) == count and gone not in pids:
                return pids
            time.sleep(0.05)
        raise AssertionError(
            f"expected {count} workers without {gone}, have {self.workers()}:\n{self.text}"
        )

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def bastion_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    env.update(extra or {})
    return env


@contextmanager
def supervisor(
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 20.0,
    cwd: Path = ROOT,
    ready: bool = True,
    pass_fds: tuple[int, ...] = (),
    prefix: tuple[str, ...] = (),
    stdout: int | None = subprocess.DEVNULL,
) -> Iterator[Supervisor]:
    """Run ``python -m bastion run ARGS``; wait for its URL unless ``ready`` is False."""
    popen = subprocess.Popen(
        [*prefix, sys.executable, "-m", "bastion", "run", *args],
        cwd=cwd,
        env=bastion_env(env),
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        pass_fds=pass_fds,
        start_new_session=True,
    )
    proc = Supervisor(popen)
    try:
        if ready:
            found = proc.wait_for(_URL.pattern, timeout)
            proc.scheme, proc.port = found.group(1), int(found.group(2))
        yield proc
    finally:
        if popen.poll() is None:
            # The whole session: the supervisor and any worker it left behind.
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait(10)
        else:
            with suppress(OSError):
                os.killpg(popen.pid, signal.SIGKILL)
        if popen.stdout is not None:
            popen.stdout.close()


class Load:
    """Clients that keep sending requests on keep-alive connections, counting failures."""

    def __init__(self, port: int, path: str = "/", clients: int = 4, expect: bytes = b"") -> None:
        self.port = port
        self.path = path
        self.expect = expect
        self.ok = 0
        self.failures: list[str] = []
        self.bodies: set[bytes] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self._stop.is_set():
            try:
                conn.request("GET", self.path)
                response = conn.getresponse()
                body = response.read()
                if response.status != 200 or not body.startswith(self.expect):
                    raise AssertionError(f"{response.status} {body[:100]!r}")
                if response.getheader("connection", "").lower() == "close":
                    conn.close()
            except Exception as exc:  # every failure is recorded, none ends the client
                with self._lock:
                    self.failures.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                time.sleep(0.01)
                continue
            with self._lock:
                self.ok += 1
                self.bodies.add(body)
        conn.close()

    def wait_ok(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        start = self.ok
        while self.ok - start < count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.ok - start >= count, f"only {self.ok - start} requests in {timeout}s"


def wait_for_lines(
    path: Path, done: Callable[[list[str]], bool], timeout: float = 5.0
) -> list[str]:
    """The lines of a log file once ``done(lines)`` (it is written after the reply is sent)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if done(lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)
