"""``bastion top``: the admin listener's live figures in a terminal.

Polls ``/api/summary`` once a second with the standard library's HTTP client (so it starts
fast and needs nothing the server does not already have), and redraws one screen: totals,
the status mix, one line per worker, and the busiest and slowest routes. ``--once`` prints a
single frame and exits, for scripts. It works against a server that restarts workers: a
failed poll shows what went wrong and the next one tries again.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import socket
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from bastion.cli.parser import command_parser

_CLEAR = "\x1b[H\x1b[2J"


def add_top_command(commands: Any) -> None:
    parser = command_parser(
        commands,
        "top",
        "%(prog)s [--admin ADDRESS] [--token TOKEN] [--interval SECONDS] [--once]",
        help="live figures of a running server: bastion top --admin 127.0.0.1:9000",
        description="Show a running server's live figures (from its admin listener).",
    )
    parser.add_argument(
        "--admin",
        metavar="ADDRESS",
        help="the admin listener: http://host:port, host:port or unix:/path (default: "
        "BASTION_ADMIN_BIND, as bastion run reads it)",
    )
    parser.add_argument("--token", metavar="TOKEN", help="the admin token (or BASTION_ADMIN_TOKEN)")
    parser.add_argument(
        "--interval", type=float, default=1.0, metavar="SECONDS", help="refresh period"
    )
    parser.add_argument("--once", action="store_true", help="print one frame and exit")


class AdminClient:
    """GETs JSON from an admin listener over TCP or a unix socket."""

    def __init__(self, address: str, token: str | None, timeout: float = 2.0) -> None:
        self.token = token
        self.timeout = timeout
        self.unix_path: str | None = None
        if address.startswith("unix:"):
            self.unix_path = address[5:]
            self.host, self.port = "localhost", 80
        else:
            expected = f"--admin {address}: expected http://host:port, host:port or unix:/path"
            parts = urlsplit(address if "://" in address else f"http://{address}")
            try:
                port = parts.port
            except ValueError:
                raise ValueError(expected) from None
            if parts.scheme != "http" or not parts.hostname:
                raise ValueError(expected)
            self.host, self.port = parts.hostname, port or 80

    def get(self, path: str) -> Any:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        if self.unix_path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            sock.connect(self.unix_path)
            connection.sock = sock
        headers = {"accept": "application/json"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        if response.status != 200:
            raise ConnectionError(f"{path}: {response.status} {response.reason}")
        return json.loads(body)


def top_command(args: argparse.Namespace, environ: dict[str, str]) -> int:
    token = args.token or environ.get("BASTION_ADMIN_TOKEN")
    args.admin = args.admin or environ.get("BASTION_ADMIN_BIND")
    if not args.admin:
        print(
            "bastion top: error: which server? give --admin ADDRESS, the --admin-bind of the "
            "server to watch",
            file=sys.stderr,
        )
        return 2
    try:
        client = AdminClient(args.admin, token)
    except ValueError as exc:
        print(f"bastion top: error: {exc}", file=sys.stderr)
        return 2
    interval = max(0.2, args.interval)
    try:
        while True:
            started = time.monotonic()
            try:
                frame = render(client.get("/api/summary"), args.admin)
            except (OSError, ValueError) as exc:
                if args.once:
                    print(f"bastion: error: cannot reach {args.admin}: {exc}", file=sys.stderr)
                    return 1
                frame = f"bastion top - {args.admin}\n\nwaiting for the server: {exc}\n"
            if args.once:
                sys.stdout.write(frame)
                return 0
            sys.stdout.write(_CLEAR + frame)
            sys.stdout.flush()
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        return 0


def render(summary: dict[str, Any], address: str) -> str:
    """One screen of figures from an ``/api/summary`` answer."""
    width = shutil.get_terminal_size((100, 30)).columns
    now = summary.get("now")
    lines = [f"bastion top - {address} - {time.strftime('%H:%M:%S')}"]
    if not now:
        lines.append("")
        lines.append("no figures yet (the server has just started)")
        return "\n".join(lines) + "\n"
    status = "  ".join(f"{group} {count:g}" for group, count in sorted(now["status"].items()))
    lines += [
        "",
        f"requests/s {now['rps']:>8.0f}   latency p50 {_ms(now['p50'])}  p95 {_ms(now['p95'])}"
        f"  p99 {_ms(now['p99'])}",
        f"connections {now['connections']:>7}   in flight {now['in_flight']:>5}   pool busy "
        f"{now['busy']:>3}  queued {now['queued']:>3}   loop lag {_ms(now['loop_lag'])}",
        f"status     {status or '-'}",
        "",
        f"{'worker':>6} {'pid':>8} {'state':<9} {'req/s':>8} {'in flight':>9} {'conns':>6} "
        f"{'busy':>5} {'queued':>6} {'lag':>8} {'rss':>8} {'cpu':>6}",
    ]
    history = summary.get("history") or []
    before = {w["slot"]: w for w in (history[-2]["workers"] if len(history) > 1 else [])}
    span = (now["time"] - history[-2]["time"]) if len(history) > 1 else 1.0
    for worker in now["workers"]:
        previous = before.get(worker["slot"])
        rate = cpu = 0.0
        if previous is not None and previous["pid"] == worker["pid"] and span > 0:
            rate = (worker["requests"] - previous["requests"]) / span
            cpu = 100 * (worker["cpu"] - previous["cpu"]) / span
        lines.append(
            f"{worker['slot']:>6} {worker['pid']:>8} {worker['state']:<9} {rate:>8.0f} "
            f"{worker['in_flight']:>9} {worker['connections']:>6} {worker['busy']:>5} "
            f"{worker['queued']:>6} {_ms(worker['loop_lag'])} {_mib(worker['rss'])} "
            f"{cpu:>5.0f}%"
        )
    for title, rows, unit in (
        ("busiest routes (req/s)", now.get("busiest") or [], "{:.0f}"),
        ("slowest routes (mean)", now.get("slowest") or [], None),
    ):
        lines += ["", title]
        if not rows:
            lines.append("  -")
        for label, value in rows:
            shown = unit.format(value) if unit else _ms(value).strip()
            lines.append(f"  {shown:>9}  {label}"[:width])
    return "\n".join(line[:width] for line in lines) + "\n"


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "      -"
    return f"{seconds * 1000:>6.1f}ms"


def _mib(size: float) -> str:
    return f"{size / (1 << 20):>6.1f}Mi"
