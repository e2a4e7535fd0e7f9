"""Memory cost of idle keep-alive connections on a Bastion server.

Starts ``python -m bastion run bench.apps.native_async:app`` itself, opens N connections
that each complete one request and then sit idle, and reports the server's RSS (VmRSS,
summed over its process tree) before and after. Idle connections are what a server holds
most of in production, so their per-connection cost matters more than any req/s figure.

    python bench/idle_connections.py [--connections 10000] [--hold 5]
                                     [--server-args "--keepalive-timeout 120"]

The server's default keep-alive timeout may close idle connections within seconds; pass a
longer one with ``--server-args`` so the "after" figure really holds N connections.
"""

import argparse
import asyncio
import contextlib
import os
import resource
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import procs, venv
from bench.harness.specs import HOST, SERVERS, LaunchContext

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = BENCH_DIR.parent
FD_HEADROOM = 1024  # for the interpreter, logs and the listening socket
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass
class Connections:
    """The client side: open streams plus why the others failed."""

    streams: list[Stream] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)

    def fail(self, exc: BaseException) -> None:
        reason = type(exc).__name__
        self.failures[reason] = self.failures.get(reason, 0) + 1

    def still_open(self) -> int:
        return sum(1 for reader, writer in self.streams if not _closed(reader, writer))


def _closed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    return reader.at_eof() or writer.is_closing()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--app", default="bench.apps.native_async:app")
    parser.add_argument("--server-args", default="", help='e.g. "--keepalive-timeout 120"')
    parser.add_argument(
        "--peer",
        choices=sorted(SERVERS),
        help="measure a server from bench/run.py's table instead (ignores --app/--server-args)",
    )
    parser.add_argument("--hold", type=float, default=5.0, help="idle seconds before measuring")
    parser.add_argument("--concurrency", type=int, default=200, help="connects in flight")
    parser.add_argument("--probe", type=int, default=100, help="reuse this many at the end")
    parser.add_argument(
        "--open-timeout", type=float, default=60.0, help="stop opening connections after this"
    )
    parser.add_argument("--timeout", type=float, default=180.0, help="bound on the whole run")
    parser.add_argument("--no-install", action="store_true", help="use bench/.venv as it is")
    return parser.parse_args()


def raise_nofile(needed: int) -> int:
    """Lift RLIMIT_NOFILE for us and (inherited) the server; root may raise the hard cap."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return needed
        needed = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return needed


def pin_client() -> None:
    """Keep the client off the server's core, as in bench/run.py."""
    with contextlib.suppress(OSError, ValueError):
        os.sched_setaffinity(0, {int(procs.CLIENT_CORE)})


def tree_rss_kib(pid: int) -> int:
    return sum(procs.rss_kib(p) or 0 for p in procs.process_tree(pid))


async def one_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> None:
    """Send one request and read exactly one Content-Length-framed response."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    if b" 200 " not in status + b" ":
        raise ConnectionError(f"unexpected status {status!r}")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)


async def connect(port: int, request: bytes) -> Stream:
    """One connection that has completed one request; closed again if that failed."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        await one_request(reader, writer, request)
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def open_idle(port: int, count: int, concurrency: int, limit_s: float) -> Connections:
    """Open ``count`` connections, each doing one full request, then leave them idle.

    Gives up on the rest after ``limit_s``: a server that stops accepting (a connection
    cap, backpressure) must not stall the run, and what it did accept is still measured.
    """
    request = f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    conns = Connections()
    gate = asyncio.Semaphore(concurrency)

    async def open_one() -> None:
        async with gate:
            try:
                conns.streams.append(await asyncio.wait_for(connect(port, request), 10))
            except (OSError, EOFError, asyncio.TimeoutError) as exc:
                conns.fail(exc)

    tasks = [asyncio.ensure_future(open_one()) for _ in range(count)]
    _, pending = await asyncio.wait(tasks, timeout=limit_s)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
        conns.failures["not opened in time"] = len(pending)
    return conns


async def probe(conns: Connections, port: int, sample: int) -> tuple[int, int]:
    """Reuse a sample of the idle connections, proving they are live and not half-open."""
    request = f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    picked = conns.streams[:: max(1, len(conns.streams) // max(1, sample))][:sample]
    ok = 0
    for reader, writer in picked:
        with contextlib.suppress(OSError, EOFError, asyncio.TimeoutError):
            await asyncio.wait_for(one_request(reader, writer, request), 5)
            ok += 1
    return ok, len(picked)


async def close_all(conns: Connections) -> None:
    for _, writer in conns.streams:
        writer.close()
    await asyncio.sleep(0.5)  # let the transports actually release their sockets


def kib(value: int) -> str:
    return f"{value / 1024:.1f} MiB"


async def measure(args: argparse.Namespace, server: procs.RunningServer) -> None:
    await asyncio.sleep(1.0)  # let the server settle after startup before the baseline
    before = tree_rss_kib(server.pid)
    started = time.monotonic()
    conns = await open_idle(server.port, args.connections, args.concurrency, args.open_timeout)
    opened = len(conns.streams)
    print(f"opened {opened}/{args.connections} in {time.monotonic() - started:.1f}s", end="")
    print(f"; failures: {conns.failures}" if conns.failures else "")
    try:
        at_open = tree_rss_kib(server.pid)
        await asyncio.sleep(args.hold)
        after = tree_rss_kib(server.pid)
        alive = conns.still_open()
        reused, probed = await probe(conns, server.port, args.probe)
    finally:
        await close_all(conns)
    print(f"server processes: {procs.process_tree(server.pid)}")
    print(f"RSS before          : {kib(before)}")
    print(f"RSS all opened      : {kib(at_open)} with {opened} connections")
    print(f"{f'RSS after {args.hold:g}s idle':<20}: {kib(after)} with {alive} still open")
    if alive:
        per_conn = (after - before) * 1024 / alive
        print(f"per idle connection : ~{per_conn:,.0f} bytes ((after - before) / still open)")
    if alive < opened:
        print("note: the server closed idle connections; raise its keep-alive timeout")
    print(f"probe               : {reused}/{probed} idle connections served another request")


def server_command(env: venv.Venv, args: argparse.Namespace, port: int, tmp: Path) -> list[str]:
    if args.peer:
        ctx = LaunchContext(port, env.python, env.bin_dir, REPO_ROOT, tmp)
        return SERVERS[args.peer].command(ctx)
    return [
        str(env.python), "-m", "bastion", "run", args.app, "--bind", f"{HOST}:{port}",
        *shlex.split(args.server_args),
    ]  # fmt: skip


def main() -> int:
    args = parse_args()
    procs.sigterm_as_interrupt()
    limit = raise_nofile(args.connections + FD_HEADROOM)
    if limit < args.connections + FD_HEADROOM:
        print(f"warning: RLIMIT_NOFILE is {limit}; expect failures past it", file=sys.stderr)
    env, _ = venv.ensure(BENCH_DIR / ".venv", REPO_ROOT, install=not args.no_install)
    pin_client()
    port = procs.free_port()
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
        argv = server_command(env, args, port, Path(tmp))
        print(f"server: taskset -c {procs.SERVER_CORE} {shlex.join(argv)}")
        log_path = Path(tmp) / "server.log"
        _, status = procs.serve_and_run(
            argv,
            port,
            REPO_ROOT,
            venv.server_env(REPO_ROOT),
            log_path,
            lambda server: measure(args, server),
            args.timeout,
        )
    return status
