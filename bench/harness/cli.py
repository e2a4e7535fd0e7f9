"""Command line of the wrk benchmark harness; ``bench/run.py`` is the entry point.

Each server runs pinned to core 0 and wrk to core 1, so the two never compete for a CPU
(except in scenarios whose servers need both cores, which pin nothing). Every server gets a
fresh loopback port, a correctness check, a warm-up and then the measured run; it is
stopped afterwards whatever happened (errors and Ctrl-C included).
"""

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import contention, procs, report, venv, wrk
from bench.harness.specs import HOST, SCENARIOS, SERVERS, LaunchContext, Scenario, ServerSpec

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = BENCH_DIR.parent
USAGE = """\
    python bench/run.py [--scenario hello] [--duration 10] [--connections 50]
                        [--only name1,name2] [--json out.json]
"""

WARMUP_CONNECTIONS_CAP = 50
BUSY_RETRY_PAUSE_S = 15.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", default="hello", choices=sorted(SCENARIOS))
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured wrk")
    parser.add_argument(
        "--connections", type=int, help="wrk connections (default: the scenario's, mostly 50)"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="run every server this many times, report median"
    )
    parser.add_argument("--only", default="", help="comma-separated server names")
    parser.add_argument("--json", type=Path, help="also write raw results here")
    parser.add_argument("--start-timeout", type=float, default=20.0)
    parser.add_argument(
        "--no-install", action="store_true", help="use bench/.venv as it is, install nothing"
    )
    parser.add_argument(
        "--busy-retries",
        type=int,
        default=2,
        help="re-run a row this many times when other processes took CPU during it",
    )
    parser.add_argument(
        "--render", type=Path, help="print the table of a saved --json file and exit"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="seconds to wait, before each server, for other processes to go idle",
    )
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--list", action="store_true", help="list scenarios and servers")
    return parser.parse_args(argv)


def selected_servers(scenario: Scenario, only: str) -> list[str]:
    """Scenario order, or the ``--only`` list as given (any known server, so a server can
    be tried in a scenario it is not listed in); unknown names are an error, not a no-op."""
    if not only:
        return list(scenario.servers)
    wanted = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in SERVERS]
    if unknown:
        raise SystemExit(f"unknown server(s): {', '.join(unknown)}; see --list")
    return wanted


def print_listing() -> None:
    print("scenarios:")
    for scenario in SCENARIOS.values():
        print(f"  {scenario.name:<12} {scenario.description}")
        print(f"  {'':<12} servers: {', '.join(scenario.servers)}")
    print("servers:")
    for spec in SERVERS.values():
        print(f"  {spec.name:<17} {spec.description}")


def server_core(scenario: Scenario) -> str | None:
    return procs.SERVER_CORE if scenario.pinned else None


def client_core(scenario: Scenario) -> str | None:
    return procs.CLIENT_CORE if scenario.pinned else None


def connections(scenario: Scenario, args: argparse.Namespace) -> int:
    return int(args.connections) if args.connections is not None else scenario.connections


def wrk_argv(scenario: Scenario, url: str, duration: float, connections: int) -> list[str]:
    # Relative to the repo root (wrk's cwd), so the printed command can be copied as is.
    script = Path(BENCH_DIR.name) / scenario.wrk_script if scenario.wrk_script else None
    return wrk.build_command(
        url, duration, connections, script, scenario.wrk_script_args, client_core(scenario)
    )


def scenario_url(scenario: Scenario, port: int) -> str:
    return f"{scenario.scheme}://{HOST}:{port}{scenario.path}"


def measure(
    row: report.Row,
    scenario: Scenario,
    spec: ServerSpec,
    server: procs.RunningServer,
    args: argparse.Namespace,
) -> None:
    """Check the response, warm up, then run the measured wrk; fills ``row`` in place."""
    port = server.port
    problem = procs.check_response(
        port,
        scenario.path,
        scenario.body_matches,
        tls=scenario.scheme == "https",
        keepalive=spec.keepalive,
    )
    if problem:
        row.status, row.message = "bad response", problem
        return
    url = scenario_url(scenario, port)
    conns = connections(scenario, args)
    if args.warmup > 0:
        warm = min(conns, WARMUP_CONNECTIONS_CAP)
        wrk.run(wrk_argv(scenario, url, args.warmup, warm), args.warmup, cwd=REPO_ROOT)
    row.wrk_command = wrk_argv(scenario, url, args.duration, conns)
    before = contention.snapshot(server.pid)
    row.wrk_output = wrk.run(row.wrk_command, args.duration, cwd=REPO_ROOT)
    after = contention.snapshot(server.pid)
    row.foreign_cpu_pct = contention.foreign_cpu_pct(before, after)
    row.result = wrk.parse(row.wrk_output)
    row.server_cpu_us = contention.server_cpu_us(before, after, row.result.requests)


def bench_one(
    name: str, scenario: Scenario, env: venv.Venv, args: argparse.Namespace, assets: Path
) -> report.Row:
    """Run one server through one scenario; never raises for server-side trouble."""
    spec = SERVERS[name]
    row = report.Row(server=name, description=spec.description)
    port = procs.free_port()
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        workdir = Path(tmp)
        ctx = LaunchContext(port, env.python, env.bin_dir, REPO_ROOT, workdir, assets)
        command = spec.command(ctx)
        row.command = procs.pinned(command, server_core(scenario))
        server: procs.RunningServer | None = None
        try:
            with procs.running_server(
                command,
                port,
                cwd=REPO_ROOT,
                env=venv.server_env(REPO_ROOT),
                log_path=workdir / "server.log",
                start_timeout=args.start_timeout,
                core=server_core(scenario),
            ) as server:
                measure(row, scenario, spec, server, args)
        except procs.ServerStartError as exc:
            row.status = "failed to start"
            row.message = _with_log(str(exc), workdir / "server.log")
        except (wrk.WrkError, OSError) as exc:
            row.status, row.message = "error", str(exc).strip().splitlines()[0]
        if server is not None and server.process.returncode not in (None, 0, -15):
            row.message = (row.message + f" (server exit code {server.process.returncode})").strip()
    return row


def _with_log(reason: str, log_path: Path) -> str:
    try:
        lines = log_path.read_text(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    # The last line is where a traceback names the exception, so it is the one shown.
    last = lines[-1].strip() if lines else ""
    return f"{reason}; log: {last}" if last else reason


def check_tools() -> None:
    missing = [tool for tool in ("wrk", "taskset") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"missing required tool(s): {', '.join(missing)}")


def print_header(
    scenario: Scenario, versions: dict[str, str | None], args: argparse.Namespace
) -> None:
    """Everything needed to reproduce the table, printed above it."""
    print(f"# scenario {scenario.name}: {scenario.description}")
    print("# " + ", ".join(f"{k} {v}" for k, v in versions.items() if v))
    url = scenario_url(scenario, 0).replace(":0", ":PORT")
    shown = " ".join(wrk_argv(scenario, url, args.duration, connections(scenario, args)))
    if scenario.pinned:
        print(f"# server pinned: taskset -c {procs.SERVER_CORE} SERVER; wrk: {shown}")
    else:
        print(f"# server and wrk unpinned, sharing every core; wrk: {shown}")
    for note in scenario.notes:
        print(f"# {note}")
    # Other work on the machine skews every row; the load averages make that visible.
    print("# load average: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


def run_all(
    names: list[str],
    scenario: Scenario,
    env: venv.Venv,
    args: argparse.Namespace,
    assets: Path,
) -> list[report.Row]:
    """Run the servers round-robin ``--rounds`` times and keep each one's median row.

    Interleaving spreads slow drifts of the machine over all servers instead of charging
    them to whichever ran during the drift. Ctrl-C ends early but keeps finished rows.
    """
    samples: dict[str, list[report.Row]] = {name: [] for name in names}
    try:
        for _ in range(args.rounds):
            for name in names:
                if any(row.status == "failed to start" for row in samples[name]):
                    continue  # it will not start next round either
                samples[name].append(bench_with_retries(name, scenario, env, args, assets))
    except KeyboardInterrupt:
        print("interrupted; servers stopped, partial results follow", file=sys.stderr)
    return [report.median_row(rows) for rows in samples.values() if rows]


def bench_with_retries(
    name: str, scenario: Scenario, env: venv.Venv, args: argparse.Namespace, assets: Path
) -> report.Row:
    """Re-run a row that other processes disturbed; the last attempt stands, flagged."""
    print(f"... {name}", file=sys.stderr, flush=True)
    contention.wait_until_quiet(args.quiet_wait)
    row = bench_one(name, scenario, env, args, assets)
    for _ in range(args.busy_retries):
        if not row.disturbed:
            break
        print(
            f"... {name} again in {BUSY_RETRY_PAUSE_S:.0f}s: other processes used "
            f"{row.foreign_cpu_pct:.0f}% of a core",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(BUSY_RETRY_PAUSE_S)
        contention.wait_until_quiet(args.quiet_wait)
        row = bench_one(name, scenario, env, args, assets)
    return row


def json_meta(
    scenario: Scenario, args: argparse.Namespace, versions: dict[str, str | None], elapsed: float
) -> dict[str, object]:
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "scenario": scenario.name,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "connections": connections(scenario, args),
        "pinned": scenario.pinned,
        "rounds": args.rounds,
        "elapsed_s": round(elapsed, 1),
        "loadavg_after": os.getloadavg(),
        "versions": versions,
    }


def prepare_assets(scenario: Scenario, assets: Path) -> None:
    """Create what every server of the run shares (files to serve, a certificate)."""
    if scenario.prepare is None:
        return
    try:
        scenario.prepare(assets)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"cannot prepare scenario {scenario.name}: {exc}") from exc


def render(path: Path, markdown: bool) -> int:
    meta, rows = report.read_json(path)
    scenario = SCENARIOS[meta["scenario"]]
    print(report.table(rows, scenario.baselines, scenario.latency_valid, markdown))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit status 1 when any row failed or saw errors, so scripts can notice."""
    args = parse_args(argv)
    if args.list:
        print_listing()
        return 0
    if args.render:
        return render(args.render, args.markdown)
    check_tools()
    # SIGTERM takes the same path as Ctrl-C, so servers are stopped by the finally blocks.
    procs.sigterm_as_interrupt()
    scenario = SCENARIOS[args.scenario]
    names = selected_servers(scenario, args.only)
    env, notes = venv.ensure(BENCH_DIR / ".venv", REPO_ROOT, install=not args.no_install)
    for note in notes:
        print(f"# {note}")
    versions = venv.versions(env, REPO_ROOT)
    print_header(scenario, versions, args)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-assets-") as tmp:
        prepare_assets(scenario, Path(tmp))
        rows = run_all(names, scenario, env, args, Path(tmp))
    print()
    print(report.table(rows, scenario.baselines, scenario.latency_valid, args.markdown))
    if args.json:
        report.write_json(
            args.json, json_meta(scenario, args, versions, time.monotonic() - started), rows
        )
    return 1 if any(row.flagged for row in rows) else 0
