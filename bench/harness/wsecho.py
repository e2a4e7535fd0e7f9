"""WebSocket echo throughput, and the memory of idle WebSockets, Bastion against uvicorn.

Each server runs pinned to core 0; the load client runs in this process on core 1. The
client is a bare asyncio protocol that sends one pre-masked 32-byte text frame per
connection and waits for its 34-byte echo before sending the next, so it does almost no work
per message (no frame parsing beyond counting bytes): its CPU use is printed beside every row,
and a row whose client core was saturated is flagged, since it measured the client.

Servers are run in turn, ``--rounds`` times interleaved (A B C D, A B C D, ...), so a burst of
load from another process hurts one round of each rather than every round of one; the table
gives the range and the median.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import os
import resource
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.harness import contention, procs, venv
from bench.harness.specs import HOST

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = BENCH_DIR.parent
APP = "bench.apps.ws_echo"
FASTAPI_APP = "bench.apps.ws_fastapi:app"
PAYLOAD = b"x" * 32
MASK = b"\x12\x34\x56\x78"
# A client frame: FIN + text, masked, length 32 - the same bytes every time.
FRAME = (
    struct.pack("!BB", 0x81, 0x80 | len(PAYLOAD))
    + MASK
    + bytes(b ^ MASK[i % 4] for i, b in enumerate(PAYLOAD))
)
ECHO = struct.pack("!BB", 0x81, len(PAYLOAD)) + PAYLOAD  # what the server sends back
HANDSHAKE = (
    f"GET /ws HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Key: {base64.b64encode(b'bench-key-16byte').decode()}\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n"
).encode()


def _bastion(target: str, *extra: str) -> Callable[[venv.Venv, int], list[str]]:
    def build(env: venv.Venv, port: int) -> list[str]:
        return [str(env.python), "-m", "bastion", "run", target,
                "--bind", f"{HOST}:{port}", *extra]  # fmt: skip

    return build


def _uvicorn(target: str, implementation: str) -> Callable[[venv.Venv, int], list[str]]:
    def build(env: venv.Venv, port: int) -> list[str]:
        return [
            str(env.python), "-m", "uvicorn", target,
            "--host", HOST, "--port", str(port),
            "--loop", "uvloop", "--http", "httptools", "--ws", implementation,
            "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip

    return build


def _bare(env: venv.Venv, port: int) -> list[str]:
    return [str(env.python), "-m", "bench.apps.ws_bare", str(port), "--host", HOST]


SERVERS: dict[str, Callable[[venv.Venv, int], list[str]]] = {
    # Not a WebSocket server: canned bytes, to measure the client alone (see ws_bare).
    "bare": _bare,
    "bastion-native": _bastion(f"{APP}:native"),
    "bastion-asgi": _bastion(f"{APP}:asgi_app", "--interface", "asgi"),
    "uvicorn-asgi": _uvicorn(f"{APP}:asgi_app", "websockets"),
    "uvicorn-sansio-asgi": _uvicorn(f"{APP}:asgi_app", "websockets-sansio"),
    "bastion-fastapi": _bastion(FASTAPI_APP, "--interface", "asgi"),
    "uvicorn-fastapi": _uvicorn(FASTAPI_APP, "websockets"),
}
RATIOS = (("bastion-native", "uvicorn-asgi"), ("bastion-fastapi", "uvicorn-fastapi"))


class EchoClient(asyncio.Protocol):
    """One connection: handshake, then one message in flight at a time."""

    def __init__(self, opened: asyncio.Future[None]) -> None:
        self.opened = opened
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.pending = 0
        self.count = 0
        self.running = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(HANDSHAKE)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        if not self.opened.done():
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.head.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(RuntimeError(f"handshake refused: {self.head[:60]!r}"))
                return
            self.opened.set_result(None)
            data = self.head[end + 4 :]
        self.pending += len(data)
        size = len(ECHO)
        while self.pending >= size:
            self.pending -= size
            self.count += 1
            if self.running:
                self.transport.write(FRAME)  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed during the handshake"))


async def open_clients(port: int, count: int, concurrency: int = 200) -> list[EchoClient]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)

    async def one() -> EchoClient:
        async with gate:
            opened: asyncio.Future[None] = loop.create_future()
            _, client = await loop.create_connection(lambda: EchoClient(opened), HOST, port)
            await opened
            return client

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def check_echo(port: int) -> None:
    """One exchange, read back byte for byte: the server really echoes."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(HANDSHAKE)
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"handshake refused: {head[:80]!r}")
    writer.write(FRAME)
    answer = await reader.readexactly(len(ECHO))
    writer.close()
    if answer != ECHO:
        raise RuntimeError(f"unexpected echo {answer!r}")


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(port: int, pid: int, args: argparse.Namespace) -> dict[str, float]:
    await check_echo(port)
    clients = await open_clients(port, args.connections)
    for client in clients:
        client.transport.write(FRAME)  # type: ignore[union-attr]
    await asyncio.sleep(args.warmup)
    before_count = sum(c.count for c in clients)
    before_cpu = _cpu_self()
    before = contention.snapshot(pid)
    start = time.monotonic()
    await asyncio.sleep(args.duration)
    elapsed = time.monotonic() - start
    count = sum(c.count for c in clients) - before_count
    client_cpu = _cpu_self() - before_cpu
    after = contention.snapshot(pid)
    for client in clients:
        client.running = False
        client.transport.close()  # type: ignore[union-attr]
    server_ticks = after.server - before.server
    other = (after.machine - before.machine) - server_ticks - (after.own - before.own)
    return {
        "messages_per_s": count / elapsed,
        # CPU the server spent per message: unlike messages/s, barely moved by other
        # processes taking turns on the server's core.
        "server_us_per_message": 1e6 * server_ticks / contention.CLK_TCK / max(count, 1),
        "server_cpu_pct": 100.0 * server_ticks / contention.CLK_TCK / elapsed,
        "client_cpu_pct": 100.0 * client_cpu / elapsed,
        "other_cpu_pct": 100.0 * max(0, other) / contention.CLK_TCK / elapsed,
    }


async def idle_memory(port: int, pid: int, args: argparse.Namespace) -> dict[str, float]:
    await check_echo(port)
    await asyncio.sleep(0.5)
    before = sum(procs.rss_kib(p) or 0 for p in procs.process_tree(pid))
    clients = await open_clients(port, args.idle)
    await asyncio.sleep(args.hold)
    alive = sum(1 for c in clients if not c.transport.is_closing())  # type: ignore[union-attr]
    after = sum(procs.rss_kib(p) or 0 for p in procs.process_tree(pid))
    for client in clients:
        client.transport.close()  # type: ignore[union-attr]
    return {"rss_before_kib": before, "rss_after_kib": after, "open": alive}


def run_one(
    env: venv.Venv, name: str, work: Callable[..., object], args: argparse.Namespace
) -> dict[str, float] | None:
    port = procs.free_port()
    with tempfile.TemporaryDirectory(prefix="bench-ws-") as tmp:
        result, _ = procs.serve_and_run(
            SERVERS[name](env, port),
            port,
            REPO_ROOT,
            venv.server_env(REPO_ROOT),
            Path(tmp) / "server.log",
            lambda server: work(port, server.pid, args),  # type: ignore[arg-type, return-value]
            timeout=args.warmup + args.duration + args.hold + 120,
        )
    return result  # type: ignore[return-value]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated server names")
    parser.add_argument("--idle", type=int, default=0, help="also hold this many idle WebSockets")
    parser.add_argument("--hold", type=float, default=3.0, help="seconds idle before measuring")
    parser.add_argument("--no-install", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    procs.sigterm_as_interrupt()
    names = [n for n in args.only.split(",") if n] or list(SERVERS)
    unknown = [n for n in names if n not in SERVERS]
    if unknown:
        print(f"unknown servers: {', '.join(unknown)} (known: {', '.join(SERVERS)})")
        return 2
    env, _ = venv.ensure(BENCH_DIR / ".venv", REPO_ROOT, install=not args.no_install)
    with_versions = venv.versions(env, REPO_ROOT)
    with_versions["websockets"] = _package_version(env, "websockets")
    print(f"# {dt.date.today()}  {' '.join(f'{k}={v}' for k, v in with_versions.items() if v)}")
    print(f"# {args.connections} connections, 32-byte text echo, {args.duration:g}s x "
          f"{args.rounds} rounds; server on core {procs.SERVER_CORE}, client on core "
          f"{procs.CLIENT_CORE}")  # fmt: skip
    os.sched_setaffinity(0, {int(procs.CLIENT_CORE)})
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            result = run_one(env, name, measure, args)
            if result is not None:
                rows[name].append(result)
                print(f"  {name:20s} {result['messages_per_s']:>10,.0f} msg/s "
                      f"{result['server_us_per_message']:5.1f} us/msg  server "
                      f"{result['server_cpu_pct']:3.0f}%  client {result['client_cpu_pct']:3.0f}%"
                      f"  others {result['other_cpu_pct']:3.0f}%", flush=True)  # fmt: skip
    print("\n| server | messages/s (median) | range | server CPU per message (median) "
          "| client core (max) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    medians, costs = {}, {}
    for name, results in rows.items():
        if not results:
            continue
        rates = [r["messages_per_s"] for r in results]
        medians[name] = statistics.median(rates)
        costs[name] = statistics.median(r["server_us_per_message"] for r in results)
        client = max(r["client_cpu_pct"] for r in results)
        print(f"| {name} | {medians[name]:,.0f} | {min(rates):,.0f}-{max(rates):,.0f} "
              f"| {costs[name]:.1f} us | {client:.0f}% |")  # fmt: skip
    for ours, theirs in RATIOS:
        if ours in medians and theirs in medians:
            print(f"\n{ours} / {theirs}: {medians[ours] / medians[theirs]:.2f}x messages/s, "
                  f"{costs[theirs] / costs[ours]:.2f}x less CPU per message")  # fmt: skip
    if args.idle:
        limit = args.idle + 1000
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < limit:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard), hard))
        for name in ("bastion-native", "uvicorn-asgi"):
            if name not in names:
                continue
            result = run_one(env, name, idle_memory, args)
            if result is not None:
                print(f"\n{name}: {int(result['open']):,} idle WebSockets, process tree RSS "
                      f"{result['rss_before_kib'] / 1024:.1f} MiB -> "
                      f"{result['rss_after_kib'] / 1024:.1f} MiB")  # fmt: skip
    return 0


def _package_version(env: venv.Venv, name: str) -> str | None:
    import subprocess

    done = subprocess.run(
        [str(env.python), "-c", f"import importlib.metadata as m; print(m.version({name!r}))"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return done.stdout.strip() or None


if __name__ == "__main__":
    sys.exit(main())
