"""Upstream servers on hosts of their own: one network namespace per upstream, joined to the
root namespace by a veth pair, each running a small Bastion app in a separate process.

The balancer under test stays in the root namespace and reaches upstream ``i`` at
``10.77.N.2:8000`` over its own link, so killing a server, or slowing one, looks to the
balancer as it would on a network: a refused connection, a reset, a late answer.

Run as a module, this file is the upstream server itself::

    ip netns exec NS python3 -m tests.balancer.netns --name a --bind 10.77.5.2:8000 --delay 0.05
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bastion import App, Response
from bastion.app import Request
from bastion.engine import ServerConfig, run

REPO_ROOT = Path(__file__).resolve().parents[2]
PORT = 8000
# Every `ip` call is bounded: a wedged netlink call must fail the test, not hang it.
IP_TIMEOUT_S = 10.0


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=check
    )


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"bstprobe{os.getpid()}"
    try:
        added = _ip("netns", "add", probe, check=False)
        if added.returncode != 0:
            return f"`ip netns add` failed: {added.stderr.strip()}"
        veth = _ip(
            "link", "add", f"vp{os.getpid()}", "type", "veth", "peer", "name", "eth0",
            "netns", probe, check=False,
        )  # fmt: skip
        if veth.returncode != 0:
            return f"cannot create a veth pair: {veth.stderr.strip()}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns` is not usable: {exc}"
    finally:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            _ip("link", "del", f"vp{os.getpid()}", check=False)
            _ip("netns", "del", probe, check=False)
    return None


def _free_subnet(wanted: int) -> int:
    """A third octet for 10.77.X.0/24 with no route yet, starting at ``wanted``, so two runs
    at the same time (or a leftover from a killed one) do not share an address."""
    for step in range(254):
        octet = (wanted + step) % 254 + 1
        if not _ip("route", "show", f"10.77.{octet}.0/24").stdout.strip():
            return octet
    raise RuntimeError("no free 10.77.X.0/24 subnet")


@dataclass
class Host:
    """One namespace with one upstream server in it."""

    name: str  # the server's name, which it answers with
    netns: str
    link: str  # the root namespace's end of the veth pair
    octet: int
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def address(self) -> str:
        return f"10.77.{self.octet}.2"

    @property
    def key(self) -> str:
        return f"{self.address}:{PORT}"

    @property
    def url(self) -> str:
        return f"http://{self.key}"

    def stats(self, timeout: float = 5.0) -> dict[str, int]:
        """What the server counted: ``requests`` to ``/`` and distinct client ``connections``."""
        conn = http.client.HTTPConnection(self.address, PORT, timeout=timeout)
        try:
            conn.request("GET", "/stats")
            data: dict[str, int] = json.loads(conn.getresponse().read())
            return data
        finally:
            conn.close()

    def kill(self) -> None:
        """SIGKILL the server: no goodbye on its connections beyond what the kernel sends."""
        process = self.process
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=5)

    def netem(self, *spec: str) -> subprocess.CompletedProcess[str]:
        """Apply ``tc qdisc ... netem SPEC`` to the server's side of the link."""
        return subprocess.run(
            ["ip", "netns", "exec", self.netns, "tc", "qdisc", "add", "dev", "eth0", "root",
             "netem", *spec],
            capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False,
        )  # fmt: skip


@dataclass
class Hosts:
    hosts: list[Host] = field(default_factory=list)

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts)

    def __getitem__(self, index: int) -> Host:
        return self.hosts[index]

    def __len__(self) -> int:
        return len(self.hosts)


def _wait_listening(host: Host, deadline: float) -> None:
    while time.monotonic() < deadline:
        process = host.process
        if process is not None and process.poll() is not None:
            log = host.log.read_text(errors="replace") if host.log else ""
            raise RuntimeError(f"upstream {host.name} exited with {process.returncode}:\n{log}")
        try:
            with socket.create_connection((host.address, PORT), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"upstream {host.name} not listening on {host.key} in time")


@contextlib.contextmanager
def upstream_hosts(
    delays: Sequence[float], workdir: Path, start_timeout: float = 20.0
) -> Iterator[Hosts]:
    """One namespace and one upstream server per entry of ``delays`` (seconds each response
    waits before it is sent); everything is removed on exit, whatever happened."""
    pid = os.getpid()
    hosts = Hosts()
    try:
        for index, delay in enumerate(delays):
            octet = _free_subnet((pid % 80) * 3 + index)
            host = Host(
                name=chr(ord("a") + index),
                netns=f"bst{pid}n{index}",
                link=f"vb{pid}n{index}",
                octet=octet,
                log=workdir / f"upstream-{index}.log",
            )
            hosts.hosts.append(host)
            _ip("netns", "add", host.netns)
            _ip(
                "link", "add", host.link, "type", "veth", "peer", "name", "eth0",
                "netns", host.netns,
            )  # fmt: skip
            _ip("addr", "add", f"10.77.{octet}.1/24", "dev", host.link)
            _ip("link", "set", host.link, "up")
            _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _ip("-n", host.netns, "link", "set", "eth0", "up")
            _ip("-n", host.netns, "link", "set", "lo", "up")
            env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
            assert host.log is not None
            with host.log.open("wb") as log:
                host.process = subprocess.Popen(
                    ["ip", "netns", "exec", host.netns, sys.executable, "-m",
                     "tests.balancer.netns", "--name", host.name,
                     "--bind", f"{host.address}:{PORT}", "--delay", str(delay)],
                    cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
        deadline = time.monotonic() + start_timeout
        for host in hosts:
            _wait_listening(host, deadline)
        yield hosts
    finally:
        for host in hosts:
            process = host.process
            if process is not None and process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)
            # Deleting the namespace takes its end of the veth pair, and with it ours.
            _ip("netns", "del", host.netns, check=False)
            _ip("link", "del", host.link, check=False)


# The upstream server ------------------------------------------------------------------------


def _app(name: str, delay: float) -> App:
    app = App()
    requests = 0
    peers: set[tuple[str, int] | None] = set()
    body = f"{name}\n".encode()

    @app.get("/")
    async def root(request: Request) -> Response:
        nonlocal requests
        requests += 1
        peers.add(request.exchange.peer)
        if delay:
            # Slow as a far-away server is slow: every request waits, none queues behind another.
            await asyncio.sleep(delay)
        return Response(body, headers={"content-type": "text/plain"})

    @app.get("/stats")
    async def stats(request: Request) -> dict[str, int]:
        return {"requests": requests, "connections": len(peers)}

    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--bind", required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    # Long keep-alive, so that only the balancer decides when an upstream connection ends.
    run(_app(args.name, args.delay), [args.bind], ServerConfig(keepalive_timeout=120.0))


if __name__ == "__main__":
    main()
