"""Soak: a Bastion server under a long mix of valid, malformed, slow and abandoned clients.

Starts ``bastion run bench.apps.soak_app`` with ``--workers 2`` and short deadlines, drives
the client mix of ``bench/harness/soak_clients.py`` with a fixed number of concurrent
clients, and samples every server process's RSS and open fds from /proc while it runs.
Baselines are taken with no client connected (after a warm-up with the same mix, so that
caches, pools and lazily opened files are already there), and the end figures the same way
after the clients stop and the server has had time to let go of what they left behind.

    python bench/soak.py [--duration 600] [--interface app|asgi|wsgi] [--json out.json]

Exits 1 if a server process ends with more open fds than at its baseline, if any connection
to the server's port is still ESTABLISHED or CLOSE-WAIT at the end, if a worker was
replaced, or if any client saw something a correct server never does (a 2xx to a malformed
request, two answers to one request, no answer or no close within the client's deadline).
Linux only (/proc).
"""

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import random
import re
import resource
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import procs, venv
from bench.harness.soak_clients import KINDS, Conversation, Result, ServerClosed, Timeouts
from bench.harness.soak_clients import Unexpected as UnexpectedAnswer
from bench.harness.specs import HOST

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = BENCH_DIR.parent
APPS = {
    "app": "bench.apps.soak_app:app",
    "asgi": "bench.apps.soak_app:asgi",
    "wsgi": "bench.apps.soak_app:wsgi",
}
# Kinds whose conversation may correctly end in a reset: a server that refuses a request and
# closes with unread bytes in its receive buffer makes the kernel send RST, which can
# overtake the refusal on the client side.
RESET_IS_A_CLOSE = {"malformed", "slowloris", "stalled-body"}
TCP_STATES = {
    "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
    "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
    "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING",
}  # fmt: skip
HELD = ("ESTABLISHED", "CLOSE_WAIT")
MIXABLE = [kind for kind, (_, weight, _) in KINDS.items() if weight]
EXAMPLE_BYTES = 400


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=600.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds before the baseline")
    parser.add_argument("--interface", choices=sorted(APPS), default="app")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=64, help="concurrent client loops")
    parser.add_argument(
        "--pause", type=float, default=0.02, help="seconds each client rests between conversations"
    )
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument(
        "--settle", type=float, default=30.0, help="at most this long for the server to let go"
    )
    parser.add_argument("--header-timeout", type=float, default=3.0)
    parser.add_argument("--body-timeout", type=float, default=3.0)
    parser.add_argument("--keepalive-timeout", type=float, default=3.0)
    parser.add_argument("--server-args", default="", help="more `bastion run` flags")
    parser.add_argument(
        "--bastion-from",
        type=Path,
        help="import bastion from this checkout (e.g. a `git archive` of another commit)",
    )
    parser.add_argument(
        "--only", help="comma-separated client kinds (default: all): " + ", ".join(MIXABLE)
    )
    parser.add_argument(
        "--no-drain", action="store_true", help="skip the shutdown under load at the end"
    )
    parser.add_argument("--seed", type=int, help="seed the client mix, for a repeatable run")
    parser.add_argument("--json", type=Path, help="write figures, samples and findings here")
    parser.add_argument("--server-log", type=Path, help="keep the server's output here")
    args = parser.parse_args(argv)
    kinds = args.only.split(",") if args.only else MIXABLE
    unknown = sorted(set(kinds) - set(MIXABLE))
    if unknown:
        parser.error(f"unknown client kinds: {', '.join(unknown)}")
    args.kinds = kinds
    return args


# --- /proc sampling --------------------------------------------------------------------


def quiet_port() -> int:
    """A free port below the ephemeral range.

    Outgoing connections anywhere on the machine take their local ports from the ephemeral
    range, and /proc/net/tcp cannot tell those from the server's side of our connections.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return procs.free_port()
    for port in random.sample(range(10_000, max(10_001, low)), 50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return port
    return procs.free_port()


def fd_count(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, from /proc/PID/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_sockets(port: int) -> Counter[str]:
    """States of the server's side of connections on ``port`` (listeners left out)."""
    states: Counter[str] = Counter()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                state = TCP_STATES.get(fields[3], fields[3])
                if local_port == port and state != "LISTEN":
                    states[state] += 1
    return states


@dataclass
class Sample:
    at: float  # seconds since the baseline
    rss_kib: dict[int, int]
    fds: dict[int, int]
    sockets: dict[str, int]

    @property
    def held(self) -> int:
        return sum(self.sockets.get(state, 0) for state in HELD)


def take_sample(pids: list[int], port: int, origin: float) -> Sample:
    rss = {pid: value for pid in pids if (value := procs.rss_kib(pid)) is not None}
    fds = {pid: value for pid in pids if (value := fd_count(pid)) is not None}
    return Sample(round(time.monotonic() - origin, 1), rss, fds, dict(server_sockets(port)))


def slope_per_minute(points: list[tuple[float, int]]) -> float:
    """Least-squares slope of value over time, per minute; 0 with fewer than two points."""
    if len(points) < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / len(points)
    mean_v = sum(v for _, v in points) / len(points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return 0.0
    return 60 * sum((t - mean_t) * (v - mean_v) for t, v in points) / spread


# --- the client mix ----------------------------------------------------------------------


@dataclass
class Finding:
    count: int = 0
    sent: str = ""
    received: str = ""


@dataclass
class Tally:
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    details: dict[str, Counter[str]] = field(default_factory=dict)
    findings: dict[str, dict[str, Finding]] = field(default_factory=dict)

    def add(self, kind: str, result: Result) -> None:
        self.outcomes.setdefault(kind, Counter())[result.outcome] += 1
        if result.outcome != "unexpected":
            if result.detail:
                self.details.setdefault(kind, Counter())[result.detail] += 1
            return
        finding = self.findings.setdefault(kind, {}).setdefault(result.detail, Finding())
        finding.count += 1
        if finding.count == 1:
            finding.sent = _shown(result.sent)
            finding.received = _shown(result.received)

    def unexpected(self) -> int:
        return sum(c["unexpected"] for c in self.outcomes.values())


def _shown(data: bytes) -> str:
    text = repr(data[:EXAMPLE_BYTES])
    return text + (f" ... ({len(data)} bytes)" if len(data) > EXAMPLE_BYTES else "")


async def converse(kind: str, port: int, timeouts: Timeouts) -> Result:
    """One client conversation on a fresh connection, bounded by the kind's deadline."""
    client, _, deadline = KINDS[kind]
    limit = deadline(timeouts)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 5.0)
    except ConnectionRefusedError:
        # Once a draining server has closed its listeners, refusing is the right answer.
        outcome = "closed" if kind == "during-drain" else "unexpected"
        return Result(outcome, "connection refused")
    except (OSError, asyncio.TimeoutError) as exc:
        return Result("unexpected", f"connect failed: {type(exc).__name__}")
    conv = Conversation(reader, writer)
    try:
        result = await asyncio.wait_for(client(conv, timeouts), limit)
    except asyncio.TimeoutError:
        result = Result("unexpected", f"hung: still waiting for {conv.stage} after {limit:g}s")
    except UnexpectedAnswer as exc:
        result = Result("unexpected", str(exc))
    except ServerClosed:
        result = Result("unexpected", f"closed instead of {conv.stage}")
    except ConnectionResetError:
        if kind in RESET_IS_A_CLOSE:
            result = Result("closed", "reset")
        else:
            result = Result("unexpected", f"reset instead of {conv.stage}")
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        result = Result("unexpected", f"{type(exc).__name__} during {conv.stage}")
    finally:
        writer.close()
    result.sent, result.received = bytes(conv.sent), bytes(conv.received)
    return result


async def client_loop(
    stop: asyncio.Event, tally: Tally, args: argparse.Namespace, port: int, rng: random.Random
) -> None:
    timeouts = Timeouts(args.header_timeout, args.body_timeout, args.keepalive_timeout)
    weights = [KINDS[kind][1] for kind in args.kinds]
    while not stop.is_set():
        kind = rng.choices(args.kinds, weights)[0]
        tally.add(kind, await converse(kind, port, timeouts))
        await asyncio.sleep(args.pause * rng.uniform(0.5, 1.5))


async def run_mix(
    seconds: float, tally: Tally, args: argparse.Namespace, port: int, on_tick: Any = None
) -> None:
    """Run the mix for ``seconds``, then let every conversation in flight reach its end."""
    stop = asyncio.Event()
    rng = random.Random(args.seed)
    loops = [
        asyncio.ensure_future(client_loop(stop, tally, args, port, random.Random(rng.random())))
        for _ in range(args.clients)
    ]
    ends = time.monotonic() + seconds
    while (left := ends - time.monotonic()) > 0:
        await asyncio.sleep(min(left, args.sample_every))
        if on_tick is not None:
            on_tick()
    stop.set()
    await asyncio.gather(*loops)


# --- the run -----------------------------------------------------------------------------


@dataclass
class ProcessFigures:
    role: str
    pid: int
    rss_start_kib: int
    rss_end_kib: int | None
    rss_max_kib: int
    rss_slope_kib_per_min: float
    rss_slope_second_half_kib_per_min: float
    fds_start: int
    fds_end: int | None
    fds_max: int
    fds_slope_per_min: float
    cpu_seconds: float | None


async def wait_for_workers(pid: int, workers: int, timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tree = procs.process_tree(pid)
        if len(tree) >= workers + 1:
            return tree
        await asyncio.sleep(0.2)
    raise procs.ServerStartError(f"{workers} workers not up after {timeout:.0f}s")


async def settle(pids: list[int], port: int, baseline: Sample | None, limit: float) -> float:
    """Wait until no connection is held and fds are back at the baseline; return how long."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        now = take_sample(pids, port, started)
        fds_back = baseline is None or all(
            now.fds.get(pid, 0) <= baseline.fds.get(pid, 0) for pid in pids
        )
        if now.held == 0 and fds_back:
            break
        await asyncio.sleep(0.5)
    return round(time.monotonic() - started, 1)


async def drain_under_load(
    server: procs.RunningServer, tally: Tally, args: argparse.Namespace, limit: float = 20.0
) -> float:
    """SIGTERM the supervisor while clients keep connecting; return how long it took to exit.

    Every connection made meanwhile must be answered or refused before its request is read:
    a reset or a silent close after the request went out is an unexpected outcome.
    """
    timeouts = Timeouts(args.header_timeout, args.body_timeout, args.keepalive_timeout)
    stop = asyncio.Event()

    async def client() -> None:
        while not stop.is_set():
            tally.add("during-drain", await converse("during-drain", server.port, timeouts))
            await asyncio.sleep(args.pause)

    loops = [asyncio.ensure_future(client()) for _ in range(min(16, args.clients))]
    await asyncio.sleep(1.0)
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    while server.process.poll() is None and time.monotonic() - started < limit:
        await asyncio.sleep(0.1)
    took = time.monotonic() - started
    await asyncio.sleep(0.5)  # a few refused connections, to see the listeners are gone
    stop.set()
    await asyncio.gather(*loops)
    return round(took, 1)


async def read_app_stats(port: int, workers: int) -> dict[int, dict[str, int]]:
    """Each worker's /stats; new connections until every worker has answered one."""
    found: dict[int, dict[str, int]] = {}
    for _ in range(20 * workers):
        if len(found) >= workers:
            break
        with contextlib.suppress(OSError, asyncio.TimeoutError, ValueError, UnexpectedAnswer):
            reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 5.0)
            conv = Conversation(reader, writer)
            try:
                conv.send(b"GET /stats HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
                answer = await asyncio.wait_for(conv.read_answer(), 5.0)
            finally:
                writer.close()
            stats = json.loads(answer.body)
            found[int(stats.pop("pid"))] = stats
    return found


def figures(
    pids: dict[int, str], baseline: Sample, run: list[Sample], end: Sample
) -> list[ProcessFigures]:
    rows = []
    for pid, role in pids.items():
        rss_points = [(s.at, s.rss_kib[pid]) for s in run if pid in s.rss_kib]
        # Allocators and caches grow early in a run; a leak keeps growing in the second half.
        second_half = rss_points[len(rss_points) // 2 :]
        fd_points = [(s.at, s.fds[pid]) for s in run if pid in s.fds]
        rows.append(
            ProcessFigures(
                role=role,
                pid=pid,
                rss_start_kib=baseline.rss_kib[pid],
                rss_end_kib=end.rss_kib.get(pid),
                rss_max_kib=max(v for _, v in [(0, baseline.rss_kib[pid]), *rss_points]),
                rss_slope_kib_per_min=round(slope_per_minute(rss_points), 1),
                rss_slope_second_half_kib_per_min=round(slope_per_minute(second_half), 1),
                fds_start=baseline.fds[pid],
                fds_end=end.fds.get(pid),
                fds_max=max(v for _, v in [(0, baseline.fds[pid]), *fd_points]),
                fds_slope_per_min=round(slope_per_minute(fd_points), 2),
                cpu_seconds=cpu_seconds(pid),
            )
        )
    return rows


def versions(bastion_from: Path | None) -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("uvloop", "httptools"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    if bastion_from is not None:
        found["bastion-commit"] = None  # an export; its commit is whatever the caller says
        return found
    done = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    found["bastion-commit"] = done.stdout.strip() or None
    return found


def server_command(args: argparse.Namespace, port: int) -> list[str]:
    return [
        sys.executable, "-m", "bastion", "run", APPS[args.interface],
        "--interface", args.interface, "--workers", str(args.workers),
        "--bind", f"{HOST}:{port}",
        "--header-timeout", str(args.header_timeout),
        "--body-timeout", str(args.body_timeout),
        "--keepalive-timeout", str(args.keepalive_timeout),
        "--graceful-timeout", "5",
        *shlex.split(args.server_args),
    ]  # fmt: skip


def server_env(args: argparse.Namespace) -> dict[str, str]:
    env = venv.server_env(REPO_ROOT)
    if args.bastion_from is not None:
        env["PYTHONPATH"] = f"{args.bastion_from.resolve()}{os.pathsep}{env['PYTHONPATH']}"
    return env


def log_errors(text: str) -> dict[str, int]:
    """Error lines of the server's log (ERROR records, tracebacks' last lines), counted.

    The time and pid prefix is dropped so that one error repeated counts as one line.
    """
    lines = text.splitlines()
    found: Counter[str] = Counter()
    for i, line in enumerate(lines):
        is_record = " ERROR " in line
        ends_traceback = bool(re.match(r"^\w[\w.]*(Error|Exception)\b", line)) and (
            i > 0 and lines[i - 1][:1] == " "
        )
        if is_record or ends_traceback:
            found[re.sub(r"^\S+ \S+ \[\d+\] ", "", line)] += 1
    return dict(found.most_common())


async def soak(args: argparse.Namespace, server: procs.RunningServer) -> dict[str, Any]:
    tree = await wait_for_workers(server.pid, args.workers)
    roles = {pid: ("supervisor" if pid == server.pid else "worker") for pid in tree}
    pids = list(roles)
    tally = Tally()
    client_cpu_start = resource.getrusage(resource.RUSAGE_SELF)

    print(f"warm-up: {args.warmup:g}s of the mix", flush=True)
    await run_mix(args.warmup, tally, args, server.port)
    settled_before = await settle(pids, server.port, None, args.settle)
    baseline = take_sample(pids, server.port, time.monotonic())
    origin = time.monotonic()
    run: list[Sample] = [baseline]
    max_close_wait = 0

    def on_tick() -> None:
        nonlocal max_close_wait
        sample = take_sample(pids, server.port, origin)
        run.append(sample)
        max_close_wait = max(max_close_wait, sample.sockets.get("CLOSE_WAIT", 0))
        rss = sum(sample.rss_kib.values()) / 1024
        print(
            f"  {sample.at:6.0f}s  RSS {rss:6.1f} MiB  fds {sum(sample.fds.values()):4d}  "
            f"sockets {dict(sample.sockets)}  unexpected {tally.unexpected()}",
            flush=True,
        )

    print(f"measuring: {args.duration:g}s, {args.clients} clients", flush=True)
    await run_mix(args.duration, tally, args, server.port, on_tick)
    settled_after = await settle(pids, server.port, baseline, args.settle)
    end = take_sample(pids, server.port, origin)
    stats = await read_app_stats(server.port, args.workers)
    after_stats = take_sample(pids, server.port, origin)
    client_cpu = resource.getrusage(resource.RUSAGE_SELF)
    replaced = sorted(set(procs.process_tree(server.pid)) - set(pids))
    rows = figures(roles, baseline, run, end)
    drain_s = None if args.no_drain else await drain_under_load(server, tally, args)
    return {
        "versions": versions(args.bastion_from),
        "command": shlex.join(server_command(args, server.port)),
        "bastion_from": str(args.bastion_from) if args.bastion_from else None,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "clients": args.clients,
        "interface": args.interface,
        "settle_before_baseline_s": settled_before,
        "settle_at_end_s": settled_after,
        "processes": [asdict(row) for row in rows],
        "sockets_at_baseline": baseline.sockets,
        "sockets_at_end": end.sockets,
        "sockets_after_stats": after_stats.sockets,
        "held_connections_at_end": end.held,
        "max_close_wait_during_run": max_close_wait,
        "workers_replaced": replaced,
        "drain_s": drain_s,
        "outcomes": {kind: dict(counts) for kind, counts in sorted(tally.outcomes.items())},
        "details": {kind: dict(counts) for kind, counts in sorted(tally.details.items())},
        "findings": {
            kind: {reason: asdict(f) for reason, f in sorted(found.items())}
            for kind, found in sorted(tally.findings.items())
        },
        "unexpected": tally.unexpected(),
        "app_stats": {str(pid): s for pid, s in stats.items()},
        "client_cpu_s": round(
            client_cpu.ru_utime + client_cpu.ru_stime
            - client_cpu_start.ru_utime - client_cpu_start.ru_stime,
            1,
        ),
        "samples": [asdict(s) for s in run],
    }  # fmt: skip


def verdict(result: dict[str, Any]) -> list[str]:
    """Why the run failed; empty if it passed."""
    problems = []
    for row in result["processes"]:
        if row["fds_end"] is None:
            problems.append(f"{row['role']} {row['pid']} exited")
        elif row["fds_end"] > row["fds_start"]:
            problems.append(
                f"{row['role']} {row['pid']} fds {row['fds_start']} -> {row['fds_end']}"
            )
    if result["held_connections_at_end"]:
        problems.append(f"{result['held_connections_at_end']} connections still held at the end")
    if result["workers_replaced"]:
        problems.append(f"workers replaced: {result['workers_replaced']}")
    if result["unexpected"]:
        problems.append(f"{result['unexpected']} unexpected outcomes")
    timed_out = sum(s.get("wait_timed_out", 0) for s in result["app_stats"].values())
    if timed_out:
        problems.append(f"{timed_out} /wait handlers never learned that their client left")
    return problems


def mib(kib: int | None) -> str:
    return "gone" if kib is None else f"{kib / 1024:.1f}"


def render(result: dict[str, Any], problems: list[str]) -> str:
    v = result["versions"]
    out = [
        "",
        f"server : {result['command']}",
        f"run    : {result['duration_s']:g}s measured after {result['warmup_s']:g}s warm-up, "
        f"{result['clients']} concurrent clients; Python {v['python']}, uvloop {v['uvloop']}, "
        f"httptools {v['httptools']}, bastion {result['bastion_from'] or v['bastion-commit']}",
        "",
        f"{'process':<18} {'RSS MiB start -> end (max)':<28} {'KiB/min (2nd half)':>18}  "
        f"{'fds start -> end (max)':<22} {'cpu s':>6}",
    ]
    for row in result["processes"]:
        rss = (
            f"{mib(row['rss_start_kib'])} -> {mib(row['rss_end_kib'])} ({mib(row['rss_max_kib'])})"
        )
        fds = f"{row['fds_start']} -> {row['fds_end']} ({row['fds_max']})"
        slope = (
            f"{row['rss_slope_kib_per_min']:+.0f} ({row['rss_slope_second_half_kib_per_min']:+.0f})"
        )
        cpu = f"{row['cpu_seconds']:.0f}" if row["cpu_seconds"] is not None else "-"
        out.append(
            f"{row['role'] + ' ' + str(row['pid']):<18} {rss:<28} {slope:>18}  {fds:<22} {cpu:>6}"
        )
    out += [
        f"client CPU: {result['client_cpu_s']:.0f}s",
        "",
        f"server sockets at baseline: {result['sockets_at_baseline'] or 'none'}; "
        f"after {result['settle_at_end_s']:g}s settle: {result['sockets_at_end'] or 'none'}; "
        f"held (ESTABLISHED/CLOSE-WAIT) at the end: {result['held_connections_at_end']}; "
        f"most CLOSE-WAIT in one sample: {result['max_close_wait_during_run']}",
        "shutdown under load: "
        + (
            "skipped"
            if result["drain_s"] is None
            else f"supervisor exited {result['drain_s']:g}s after SIGTERM (see during-drain)"
        ),
        "app /wait endpoints: "
        + "; ".join(f"worker {pid}: {stats}" for pid, stats in result["app_stats"].items()),
        "",
        f"{'client kind':<22} {'answered':>9} {'closed':>7} {'unexpected':>10}",
    ]  # fmt: skip
    for kind, counts in result["outcomes"].items():
        out.append(
            f"{kind:<22} {counts.get('answered', 0):>9} {counts.get('closed', 0):>7} "
            f"{counts.get('unexpected', 0):>10}"
        )
    if result["findings"]:
        out += ["", "unexpected outcomes (first example of each):"]
    for kind, found in result["findings"].items():
        for reason, finding in found.items():
            out += [
                f"  {kind} x{finding['count']}: {reason}",
                f"      sent    : {finding['sent']}",
                f"      received: {finding['received']}",
            ]
    out += ["", "PASS" if not problems else "FAIL: " + "; ".join(problems)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    procs.sigterm_as_interrupt()
    port = quiet_port()
    bound = args.warmup + args.duration + 4 * args.settle + 120
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        log_path = args.server_log or Path(tmp) / "server.log"
        argv_server = server_command(args, port)
        print(f"server: {shlex.join(argv_server)}", flush=True)
        result, status = procs.serve_and_run(
            argv_server,
            port,
            # `python -m` puts its working directory first on sys.path.
            args.bastion_from or REPO_ROOT,
            server_env(args),
            log_path,
            lambda server: soak(args, server),
            bound,
            core=None,
        )
        if result is None:
            return status
        result["server_log_errors"] = log_errors(log_path.read_text(errors="replace"))
    problems = verdict(result)
    result["problems"] = problems
    print(render(result, problems))
    if result["server_log_errors"]:
        print("server log errors (count: line):")
        for line, count in list(result["server_log_errors"].items())[:8]:
            print(f"  {count:6d}: {line[:150]}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
        print(f"wrote {args.json}")
    return 1 if problems else 0
