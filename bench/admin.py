"""The admin listener under pressure: probe latency, and what a dashboard costs.

Starts ``bastion run --workers 2 --admin-bind``, then

1. blocks every worker's event loop (requests to ``/block``) while a client scrapes
   ``/metrics`` in a loop, and times ``/readyz`` and ``/healthz`` probes meanwhile: the probes
   are answered by the supervisor, so neither the blocked workers nor the scrapes should hold
   them up;
2. measures the supervisor's CPU time over a fixed period with no dashboard connected, then
   with ``--dashboards`` event streams open, and reports the cost per connected dashboard as a
   share of one core.

    python bench/admin.py [--workers 2] [--probes 2000] [--dashboards 10] [--seconds 20]
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = "bench.apps.admin_app:app"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str, timeout: float = 30.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_ready(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if get(port, "/readyz", 1.0)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("the server did not become ready")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def probe_latency(admin: int, port: int, workers: int, probes: int) -> None:
    stop = threading.Event()
    scrapes = [0]

    def scrape() -> None:
        while not stop.is_set():
            get(admin, "/metrics")
            scrapes[0] += 1

    def block() -> None:
        while not stop.is_set():
            get(port, "/block?s=0.5")

    threads = [threading.Thread(target=scrape, daemon=True)]
    threads += [threading.Thread(target=block, daemon=True) for _ in range(workers * 2)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    timings = []
    conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
    for index in range(probes):
        path = "/readyz" if index % 2 else "/healthz"
        started = time.perf_counter()
        conn.request("GET", path)
        conn.getresponse().read()
        timings.append((time.perf_counter() - started) * 1000)
    conn.close()
    stop.set()
    print(
        f"probes with every worker blocked and {scrapes[0]} scrapes running: "
        f"p50 {statistics.median(timings):.2f} ms, p99 {percentile(timings, 0.99):.2f} ms, "
        f"max {max(timings):.2f} ms ({probes} probes)"
    )


def dashboard_cost(admin: int, supervisor_pid: int, dashboards: int, seconds: float) -> None:
    def measure() -> float:
        before = cpu_seconds(supervisor_pid)
        time.sleep(seconds)
        return (cpu_seconds(supervisor_pid) - before) / seconds

    idle = measure()
    streams = []
    for _ in range(dashboards):
        sock = socket.create_connection(("127.0.0.1", admin))
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: admin\r\n\r\n")
        streams.append(sock)
    readers = [threading.Thread(target=_drain, args=(sock,), daemon=True) for sock in streams]
    for reader in readers:
        reader.start()
    loaded = measure()
    for sock in streams:
        sock.close()
    each = (loaded - idle) / dashboards * 100
    print(
        f"supervisor CPU: {idle * 100:.2f}% of a core idle, {loaded * 100:.2f}% with "
        f"{dashboards} dashboards: {each:.3f}% per dashboard"
    )


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--probes", type=int, default=2000)
    parser.add_argument("--dashboards", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    port, admin = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, "-m", "bastion", "run", APP, "--workers", str(args.workers),
         "--bind", f"127.0.0.1:{port}", "--admin-bind", f"127.0.0.1:{admin}",
         "--worker-timeout", "120", "--log-level", "warning"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    try:
        wait_ready(admin)
        probe_latency(admin, port, args.workers, args.probes)
        time.sleep(2)  # let the blocked requests finish
        dashboard_cost(admin, server.pid, args.dashboards, args.seconds)
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
