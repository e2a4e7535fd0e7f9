"""Reverse proxies side by side: what one core of proxy delivers, and its CPU per request.

    python bench/proxy.py [--duration 10] [--rounds 3] [--connections 50] [--markdown]
                          [--only nginx-direct,nginx-proxy,bastion-balancer,aiohttp-proxy]
                          [--baseline DIR]

One upstream, nginx (1 worker, ``return 200 "Hello, world!"``), runs on core 1 with wrk for
the whole run. Each proxy in turn runs alone on core 0 in front of it, keep-alive on both
sides; ``nginx-direct`` is wrk against the upstream itself, the ceiling of the client core.
Rows are interleaved over rounds; each row shows the median round's figures and the range.
CPU per request is the proxy process tree's user + system time over the measured wrk run
(from /proc/PID/stat), divided by the requests wrk counted.

``--baseline DIR`` adds a ``bastion-baseline`` row: the same balancer app run from another
checkout of the repository (``git worktree add DIR COMMIT``), interleaved with the others, so a
change is measured against what it changes in the same run.

aiohttp, for the ``aiohttp-proxy`` row, is a benchmark-only dependency: it is installed into
the benchmark's virtualenv (bench/.venv, made by bench/run.py) when missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

if __name__ == "__main__":
    # Runs as a script, so make the repo root importable for the ``bench`` package.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import procs, venv, wrk
from bench.harness.specs import HELLO_BODY, HOST, NGINX_CONF, NGINX_HELLO

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
PROXY_CORE = procs.SERVER_CORE
UPSTREAM_CORE = procs.CLIENT_CORE
CLK_TCK = os.sysconf("SC_CLK_TCK")
WARMUP_S = 2.0

NGINX_PROXY_UPSTREAM = "upstream backend {{ server {upstream}; keepalive 32; }}"
NGINX_PROXY_LOCATION = (
    'proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";'
)


@dataclass(frozen=True)
class Context:
    port: int
    upstream: str  # host:port of the upstream nginx
    python: Path
    workdir: Path
    # With --pool N: N more ports of the same upstream nginx, each a server to the balancer.
    pool: tuple[str, ...] = ()
    strategy: str = "round-robin"


@dataclass(frozen=True)
class Proxy:
    name: str
    description: str
    command: Callable[[Context], list[str]] | None  # None: wrk goes to the upstream itself
    # The checkout the row's Python code is imported from (None: this one).
    repo: Path | None = None


def _nginx_conf(workdir: Path, bind: str, location: str, http_extra: str = "") -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            workdir=workdir,
            bind=bind,
            default_type="text/plain",
            http_extra=http_extra,
            location=location,
        )
    )
    return conf


def _nginx_argv(workdir: Path, conf: Path) -> list[str]:
    return ["nginx", "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(conf)]


def _nginx_proxy(ctx: Context) -> list[str]:
    conf = _nginx_conf(
        ctx.workdir,
        f"{HOST}:{ctx.port}",
        NGINX_PROXY_LOCATION,
        NGINX_PROXY_UPSTREAM.format(upstream=ctx.upstream),
    )
    return _nginx_argv(ctx.workdir, conf)


def _python_app(module: str) -> Callable[[Context], list[str]]:
    def build(ctx: Context) -> list[str]:
        return [
            str(ctx.python), "-m", module,
            "--bind", f"{HOST}:{ctx.port}", "--upstream", f"http://{ctx.upstream}",
        ]  # fmt: skip

    return build


def _balancer_pool(size: int | None) -> Callable[[Context], list[str]]:
    """The balancer over ``size`` servers of the pool (None: all of them)."""

    def build(ctx: Context) -> list[str]:
        servers = ctx.pool[:size] if size is not None else ctx.pool
        argv = [str(ctx.python), "-m", "bench.apps.balancer_proxy", "--bind", f"{HOST}:{ctx.port}"]
        for server in servers:
            argv += ["--upstream", f"http://{server}"]
        return [*argv, "--strategy", ctx.strategy]

    return build


POOL_ROWS = {
    "bastion-pool-2": Proxy(
        "bastion-pool-2", "the balancer over 2 ports of the upstream (--pool)", _balancer_pool(2)
    ),
    "bastion-pool-n": Proxy(
        "bastion-pool-n",
        "the balancer over every port of the upstream (--pool N): a strategy's cost at size",
        _balancer_pool(None),
    ),
}

PROXIES = {
    proxy.name: proxy
    for proxy in (
        Proxy("nginx-direct", "wrk to the upstream nginx itself: the ceiling", None),
        Proxy(
            "nginx-proxy",
            "nginx 1 worker, proxy_pass to an upstream block with keepalive 32",
            _nginx_proxy,
        ),
        Proxy(
            "bastion-balancer",
            "bastion.balancer.proxy.Balancer on bastion.engine.run, 1 process, uvloop",
            _python_app("bench.apps.balancer_proxy"),
        ),
        Proxy(
            "aiohttp-proxy",
            "aiohttp web server + ClientSession with a keep-alive connector, uvloop",
            _python_app("bench.apps.aiohttp_proxy"),
        ),
    )
}


@dataclass
class Round:
    rps: float
    requests: int
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    cpu_us: float  # the proxy's (or, for nginx-direct, the upstream's) CPU per request
    foreign_pct: float  # CPU of processes other than the upstream, proxy and wrk, % of a core


@dataclass
class Row:
    name: str
    rounds: list[Round] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def median(self) -> Round | None:
        if not self.rounds:
            return None
        ordered = sorted(self.rounds, key=lambda r: r.rps)
        return ordered[(len(ordered) - 1) // 2]


def _ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        # utime and stime are fields 14 and 15, counted after the ")" closing the name.
        rest = stat.rsplit(")", 1)[1].split()
        total += int(rest[11]) + int(rest[12])
    return total


def _machine_ticks() -> int:
    user, nice, system = (int(v) for v in Path("/proc/stat").read_text().split()[1:4])
    return user + nice + system


def _children_ticks() -> float:
    usage = os.times()
    return (usage.children_user + usage.children_system) * CLK_TCK


@contextmanager
def _started(
    argv: list[str], port: int, workdir: Path, core: str, repo: Path | None = None
) -> Iterator[procs.RunningServer]:
    root = repo or REPO_ROOT
    env = venv.server_env(root)
    with procs.running_server(argv, port, root, env, workdir / "server.log", core=core) as server:
        problem = procs.check_response(port, "/", lambda body: body == HELLO_BODY)
        if problem:
            raise procs.ServerStartError(f"answer check: {problem}")
        yield server


def measure(
    url: str, measured_pids: list[int], other_pids: list[int], args: argparse.Namespace
) -> Round:
    warm = wrk.build_command(url, WARMUP_S, args.connections, core=UPSTREAM_CORE)
    wrk.run(warm, WARMUP_S)
    argv = wrk.build_command(url, args.duration, args.connections, core=UPSTREAM_CORE)
    before = (_ticks(measured_pids), _ticks(other_pids), _children_ticks(), _machine_ticks())
    started = time.monotonic()
    text = wrk.run(argv, args.duration)
    elapsed = time.monotonic() - started
    after = (_ticks(measured_pids), _ticks(other_pids), _children_ticks(), _machine_ticks())
    result = wrk.parse(text)
    measured = after[0] - before[0]
    ours = measured + (after[1] - before[1]) + (after[2] - before[2])
    foreign = max(0.0, (after[3] - before[3]) - ours)
    return Round(
        rps=result.requests_per_sec,
        requests=result.requests,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        errors=result.errors,
        cpu_us=measured / CLK_TCK * 1e6 / max(1, result.requests),
        foreign_pct=100.0 * foreign / CLK_TCK / elapsed,
    )


def run_row(
    proxy: Proxy, upstream: procs.RunningServer, ctx_base: Context, args: argparse.Namespace
) -> Round:
    upstream_pids = procs.process_tree(upstream.pid)
    if proxy.command is None:
        url = f"http://{ctx_base.upstream}/"
        return measure(url, upstream_pids, [], args)
    port = procs.free_port()
    workdir = Path(tempfile.mkdtemp(prefix=f"{proxy.name}-", dir=ctx_base.workdir))
    ctx = dataclasses.replace(ctx_base, port=port, workdir=workdir)
    with _started(proxy.command(ctx), port, workdir, PROXY_CORE, proxy.repo) as server:
        return measure(
            f"http://{HOST}:{port}/", procs.process_tree(server.pid), upstream_pids, args
        )


def _ensure_aiohttp(python: Path) -> None:
    found = subprocess.run([str(python), "-c", "import aiohttp"], capture_output=True, check=False)
    if found.returncode != 0:
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "aiohttp"], check=True, timeout=600
        )


def _fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f}us" if value < 1 else f"{value:.2f}ms"


def render(rows: list[Row], markdown: bool) -> str:
    by_name = {row.name: row.median() for row in rows}
    bases = [name for name in ("nginx-proxy", "aiohttp-proxy") if by_name.get(name)]
    header = ["proxy", "req/s", "range", "p50", "p99", "CPU us/req", "errors"]
    header += [f"vs {name}" for name in bases] + ["note"]
    lines = []
    for row in rows:
        chosen = row.median()
        if chosen is None:
            lines.append([row.name, "-", "-", "-", "-", "-", "-", *["-"] * len(bases),
                          "; ".join(row.problems)])  # fmt: skip
            continue
        rps = [r.rps for r in row.rounds]
        ratios = []
        for name in bases:
            base = by_name[name]
            ratios.append(f"{chosen.rps / base.rps:.2f}x" if base else "-")
        notes = list(row.problems)
        busy = max(r.foreign_pct for r in row.rounds)
        if busy > 10:
            notes.append(f"others used up to {busy:.0f}% of a core")
        if chosen.errors:
            notes.append(f"{chosen.errors} errors")
        lines.append([
            row.name, f"{chosen.rps:,.0f}", f"{min(rps) / 1000:.1f}k-{max(rps) / 1000:.1f}k",
            _fmt_ms(chosen.p50_ms), _fmt_ms(chosen.p99_ms), f"{chosen.cpu_us:.1f}",
            str(chosen.errors), *ratios, "; ".join(notes),
        ])  # fmt: skip
    if markdown:
        rule = ["---"] + ["---:"] * (len(header) - 2) + ["---"]
        return "\n".join("| " + " | ".join(cells) + " |" for cells in [header, rule, *lines])
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [header, *lines]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--only", help="comma-separated rows (default: all)")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", type=Path, help="write every round here")
    parser.add_argument(
        "--pool",
        type=int,
        default=0,
        help="also run the balancer over 2 and over N ports of the upstream (rows "
        "bastion-pool-2 and bastion-pool-n): what a larger pool costs",
    )
    parser.add_argument("--strategy", default="round-robin", help="for the pool rows")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout of this repository: adds the row bastion-baseline, the "
        "balancer run from it",
    )
    args = parser.parse_args(argv)
    if args.pool:
        PROXIES.update(POOL_ROWS)
    if args.baseline:
        baseline = args.baseline.resolve()
        PROXIES["bastion-baseline"] = Proxy(
            "bastion-baseline",
            f"the bastion-balancer row run from {baseline}",
            _python_app("bench.apps.balancer_proxy"),
            repo=baseline,
        )
    names = args.only.split(",") if args.only else list(PROXIES)
    unknown = [name for name in names if name not in PROXIES]
    if unknown:
        parser.error(f"unknown rows {unknown}; known: {', '.join(PROXIES)}")
    procs.sigterm_as_interrupt()
    env, notes = venv.ensure(BENCH_DIR / ".venv", REPO_ROOT)
    for note in notes:
        print(note, file=sys.stderr)
    if "aiohttp-proxy" in names:
        _ensure_aiohttp(env.python)
    versions = venv.versions(env, REPO_ROOT)
    found = subprocess.run(
        [str(env.python), "-c", "import aiohttp; print(aiohttp.__version__)"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    versions["aiohttp"] = found.stdout.strip() or None
    rows = [Row(name) for name in names]
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-proxy-")))
        up_port = procs.free_port()
        up_dir = root / "upstream"
        pool = tuple(f"{HOST}:{procs.free_port()}" for _ in range(args.pool))
        # One server block listening on every port: "listen A; listen B; ...".
        binds = ";\n        listen ".join((f"{HOST}:{up_port}", *pool))
        conf = _nginx_conf(up_dir, binds, NGINX_HELLO)
        # nginx started as root runs its worker as an unprivileged user; it must read nothing
        # here, but its temp paths must be creatable.
        root.chmod(0o755)
        try:
            upstream = stack.enter_context(
                _started(_nginx_argv(up_dir, conf), up_port, up_dir, UPSTREAM_CORE)
            )
        except procs.ServerStartError as exc:
            print(f"upstream nginx failed to start: {exc}", file=sys.stderr)
            return 1
        base = Context(0, f"{HOST}:{up_port}", env.python, root, pool, args.strategy)
        try:
            for number in range(1, args.rounds + 1):
                for row in rows:
                    proxy = PROXIES[row.name]
                    try:
                        result = run_row(proxy, upstream, base, args)
                    except (procs.ServerStartError, wrk.WrkError) as exc:
                        row.problems.append(f"round {number}: {exc}")
                        print(f"{row.name}: round {number} failed: {exc}", file=sys.stderr)
                        continue
                    row.rounds.append(result)
                    print(
                        f"round {number} {row.name}: {result.rps:,.0f} req/s, "
                        f"{result.cpu_us:.1f} us CPU/request, others {result.foreign_pct:.0f}%",
                        file=sys.stderr,
                    )
        except KeyboardInterrupt:
            print("interrupted; servers stopped", file=sys.stderr)
            return 130
    print(render(rows, args.markdown))
    print()
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v))
    if args.json:
        payload = {
            "versions": versions,
            "args": {k: v for k, v in vars(args).items() if k != "json"},
            "rows": [
                {"name": row.name, "rounds": [vars(r) for r in row.rounds],
                 "problems": row.problems}
                for row in rows
            ],
        }  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    medians = [row.median() for row in rows]
    return 0 if all(medians) and not any(row.problems for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
