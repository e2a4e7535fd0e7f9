"""What a WSGI application costs per request on its own, with no server at all.

Calls ``app(environ, start_response)`` in a loop with a fresh environ each time (what a
server hands over for a keep-alive ``GET``), reads the body and closes it, and prints the CPU
microseconds per call: the floor under any server's figure for that application. Set beside a
server's ``cpu us/req`` from ``bench/run.py`` it says how much of a request is the server's.

    python bench/app_cost.py [bench.apps.flask_json:app] [--path /json] [--calls 20000]
                             [--rounds 5]

Run it pinned like the servers (``taskset -c 0``) and in the same hour as the run it is
compared with: this machine's speed drifts by 10-15% between hours.
"""

from __future__ import annotations

import argparse
import importlib
import io
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _environ(path: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "40000",
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    if not status.startswith("200"):
        raise SystemExit(f"the application answered {status}, not 200")
    return lambda data: None


def time_calls(app: WSGIApp, path: str, calls: int) -> float:
    """CPU microseconds per call of ``app`` for a GET of ``path``."""
    started = time.process_time()
    for _ in range(calls):
        body = app(_environ(path), _start_response)
        b"".join(body)
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return (time.process_time() - started) / calls * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("app", nargs="?", default="bench.apps.flask_json:app")
    parser.add_argument("--path", default="/json")
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    module, _, name = args.app.partition(":")
    app: WSGIApp = getattr(importlib.import_module(module), name or "app")
    time_calls(app, args.path, max(args.calls // 10, 1))  # warm-up
    figures = [time_calls(app, args.path, args.calls) for _ in range(args.rounds)]
    print(
        f"{args.app} GET {args.path}: best {min(figures):.1f} us, "
        f"median {statistics.median(figures):.1f} us of CPU per call ({args.rounds} rounds)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
