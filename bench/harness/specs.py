"""What to run: one ``ServerSpec`` per server row and one ``Scenario`` per workload.

Adding a server means adding one entry to ``SERVERS``; adding a workload means adding one
entry to ``SCENARIOS`` that lists server names. Command builders get a ``LaunchContext``
so they never need to know where the venv or the temporary directory lives.
"""

import json
import random
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.apps import json_payload, tls_cert

HELLO_BODY = b"Hello, world!"
HOST = "127.0.0.1"
# Scenarios that prepare files (static content, a certificate) put them under here.
STATIC_DIR = "www"
CERT_FILE, KEY_FILE = "cert.pem", "key.pem"  # the names bench/apps/tls_cert.py writes


@dataclass(frozen=True)
class LaunchContext:
    """Everything a command builder may need to produce an argv for one run."""

    port: int
    python: Path  # interpreter of the benchmark venv
    bin_dir: Path  # scripts directory of the benchmark venv
    repo_root: Path
    workdir: Path  # private temporary directory, removed after the run
    # Files the scenario prepared once for every server of the run (see ``Scenario.prepare``);
    # without them (e.g. one server started on its own) the private directory stands in.
    assets: Path | None = None

    @property
    def bind(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def asset_dir(self) -> Path:
        return self.assets if self.assets is not None else self.workdir

    @property
    def static_dir(self) -> Path:
        return self.asset_dir / STATIC_DIR

    @property
    def tls_files(self) -> tuple[Path, Path]:
        return self.asset_dir / CERT_FILE, self.asset_dir / KEY_FILE


CommandBuilder = Callable[[LaunchContext], list[str]]


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server; it must listen on ``HOST:ctx.port`` and serve the app."""

    name: str
    description: str
    command: CommandBuilder
    # False for a server that closes the connection after every response (HTTP/1.0): the
    # answer check then sends a single request, and wrk reconnects for every request.
    keepalive: bool = True


@dataclass(frozen=True)
class Scenario:
    """A workload: which servers to run, what wrk sends, and whom to compare against."""

    name: str
    description: str
    servers: tuple[str, ...]
    baselines: tuple[str, ...] = ("uvicorn",)
    path: str = "/"
    scheme: str = "http"  # "https": wrk and the answer check speak TLS, unverified
    wrk_script: str | None = None  # path relative to bench/
    wrk_script_args: tuple[str, ...] = ()
    expect_body: bytes = HELLO_BODY
    # When set, the body must parse to this JSON value instead of matching ``expect_body``:
    # frameworks differ in key order, spacing and a final newline, not in the document.
    expect_json: Any = None
    # wrk times a pipelined batch, not a request, and its percentiles then come out
    # inconsistent (often 0us), so such scenarios print n/a instead of misleading numbers.
    latency_valid: bool = True
    # False for servers that need both cores: neither the server nor wrk is pinned, so
    # wrk competes with the server for CPU.
    pinned: bool = True
    connections: int = 50  # wrk connections, unless --connections says otherwise
    # Called once per run, before any server starts, with a temporary directory that
    # servers then find as ``LaunchContext.assets`` (files to serve, a certificate).
    prepare: Callable[[Path], None] | None = None
    notes: tuple[str, ...] = field(default=())

    def body_matches(self, body: bytes) -> bool:
        if self.expect_json is None:
            return body == self.expect_body
        try:
            return bool(json.loads(body) == self.expect_json)
        except ValueError:
            return False


def _file_content(size: int) -> bytes:
    """Incompressible, and the same for every server and every run."""
    return random.Random(size).randbytes(size)


STATIC_FILES = {"1k.bin": _file_content(1024), "1m.bin": _file_content(1024 * 1024)}
# What bench/apps/cpu_bound.py answers: its loop's result and a newline.
CPU_BOUND_BODY = b"%d\n" % sum(i * i % 7 for i in range(17_000))


def _write_static_files(assets: Path) -> None:
    root = assets / STATIC_DIR
    root.mkdir(parents=True, exist_ok=True)
    for name, content in STATIC_FILES.items():
        (root / name).write_bytes(content)
    # nginx started as root reads files as an unprivileged worker user.
    for path in (assets, root):
        path.chmod(0o755)


def _make_certificate(assets: Path) -> None:
    tls_cert.make(assets)


def _tls_args(ctx: LaunchContext, cert_flag: str, key_flag: str) -> list[str]:
    cert, key = ctx.tls_files
    return [cert_flag, str(cert), key_flag, str(key)]


def _bastion(module: str, *extra: str, tls: bool = False) -> CommandBuilder:
    def build(ctx: LaunchContext) -> list[str]:
        argv = [str(ctx.python), "-m", "bastion", "run", module, "--bind", ctx.bind, *extra]
        return argv + _tls_args(ctx, "--tls-cert", "--tls-key") if tls else argv

    return build


def _bastion_serve(ctx: LaunchContext) -> list[str]:
    return [
        str(ctx.python), "-m", "bastion", "serve", str(ctx.static_dir),
        "--bind", ctx.bind, "-q",
    ]  # fmt: skip


def _bastion_serve_logging(ctx: LaunchContext) -> list[str]:
    """``bastion serve DIR 2>FILE``: its default line per request, on stderr sent to a file."""
    redirect = f'exec "$0" "$@" 2>{ctx.workdir / "access.log"}'
    return [
        "sh", "-c", redirect,
        str(ctx.python), "-m", "bastion", "serve", str(ctx.static_dir), "--bind", ctx.bind,
    ]  # fmt: skip


def _bastion_access_log(*extra: str) -> CommandBuilder:
    """Native hello with ``--access-log`` to a file in the run's private directory."""

    def build(ctx: LaunchContext) -> list[str]:
        argv = _bastion("bench.apps.native_async:app")(ctx)
        return [*argv, "--access-log", "--access-log-file", str(ctx.workdir / "access.log"), *extra]

    return build


def _bastion_monitored(scrape: bool) -> CommandBuilder:
    """Native hello with the admin listener on (a unix socket in the run's directory), and
    optionally ``/metrics`` scraped once a second, as Prometheus would."""

    def build(ctx: LaunchContext) -> list[str]:
        sock = ctx.workdir / "admin.sock"
        argv = _bastion("bench.apps.native_async:app", "--admin-bind", f"unix:{sock}")(ctx)
        if not scrape:
            return argv
        command = " ".join(shlex.quote(part) for part in argv)
        scraper = (
            f"while sleep 1; do curl -s -o /dev/null --unix-socket {shlex.quote(str(sock))} "
            "http://admin/metrics; done"
        )
        return ["sh", "-c", f"{scraper} & exec {command}"]

    return build


def _bastion_access_logger(ctx: LaunchContext) -> list[str]:
    """The same, through the ``bastion.access`` logger and a logging ``FileHandler``."""
    config = ctx.workdir / "logging.json"
    handler = {"class": "logging.FileHandler", "filename": str(ctx.workdir / "access.log")}
    access = {"handlers": ["file"], "level": "INFO", "propagate": False}
    config.write_text(
        json.dumps({"handlers": {"file": handler}, "loggers": {"bastion.access": access}})
    )
    return _bastion_access_log("--log-config", str(config))(ctx)


def _python_module(module: str, *extra: str) -> CommandBuilder:
    """For apps in ``bench/apps`` that take the port as their first argument."""

    def build(ctx: LaunchContext) -> list[str]:
        return [str(ctx.python), "-m", module, str(ctx.port), *extra]

    return build


def _http_server(*extra: str) -> CommandBuilder:
    """``python -m http.server`` as people run it; its line per request goes to /dev/null."""

    def build(ctx: LaunchContext) -> list[str]:
        return [
            "sh", "-c", 'exec "$0" "$@" 2>/dev/null',
            str(ctx.python), "-m", "http.server", "--bind", HOST,
            "--directory", str(ctx.static_dir), *extra, str(ctx.port),
        ]  # fmt: skip

    return build


def _uvicorn(app: str = "bench.apps.asgi_hello:app", tls: bool = False) -> CommandBuilder:
    def build(ctx: LaunchContext) -> list[str]:
        argv = [
            str(ctx.python), "-m", "uvicorn", app,
            "--host", HOST, "--port", str(ctx.port),
            "--loop", "uvloop", "--http", "httptools",
            "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        return argv + _tls_args(ctx, "--ssl-certfile", "--ssl-keyfile") if tls else argv

    return build


def _granian(interface: str, app: str) -> CommandBuilder:
    def build(ctx: LaunchContext) -> list[str]:
        return [
            str(ctx.bin_dir / "granian"), "--interface", interface,
            "--host", HOST, "--port", str(ctx.port),
            "--workers", "1", "--runtime-threads", "1", "--http", "1",
            "--loop", "uvloop", "--no-ws", "--no-access-log", "--log-level", "warning",
            app,
        ]  # fmt: skip

    return build


def _gunicorn(app: str = "bench.apps.wsgi_hello:app") -> CommandBuilder:
    def build(ctx: LaunchContext) -> list[str]:
        return [
            str(ctx.bin_dir / "gunicorn"), "--worker-class", "gthread",
            "--workers", "1", "--threads", "8", "--bind", ctx.bind,
            "--log-level", "warning", app,
        ]  # fmt: skip

    return build


def _waitress(ctx: LaunchContext) -> list[str]:
    return [
        str(ctx.bin_dir / "waitress-serve"), f"--listen={ctx.bind}", "--threads=8",
        "bench.apps.wsgi_hello:app",
    ]  # fmt: skip


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 32768;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{
    worker_connections 16384;
}}
http {{
    access_log off;
    client_body_temp_path {workdir}/client_body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    default_type {default_type};
    {http_extra}
    server {{
        listen {bind};
        location / {{
            {location}
        }}
    }}
}}
"""
NGINX_HELLO = 'return 200 "Hello, world!";'
# ``{static_dir}`` is filled in per run; the files carry no suffix nginx would map to a type.
NGINX_STATIC = "root {static_dir};"
NGINX_FILE_IO = "sendfile on; tcp_nopush on;"
# nginx's default access log (the combined format, buffered off), to a file.
NGINX_ACCESS_LOG = " access_log {workdir}/access.log;"


def _nginx(location: str, default_type: str = "text/plain", http_extra: str = "") -> CommandBuilder:
    """Writes a private config so the system nginx setup is neither needed nor touched."""

    def build(ctx: LaunchContext) -> list[str]:
        conf = ctx.workdir / "nginx.conf"
        text = NGINX_CONF.format(
            workdir=ctx.workdir,
            bind=ctx.bind,
            default_type=default_type,
            http_extra=http_extra,
            location=location.format(static_dir=ctx.static_dir, workdir=ctx.workdir),
        )
        conf.write_text(text)
        error_log = ctx.workdir / "error.log"
        return ["nginx", "-p", str(ctx.workdir), "-e", str(error_log), "-c", str(conf)]

    return build


SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in (
        ServerSpec(
            "bastion-async",
            "Bastion native API, async def handler",
            _bastion("bench.apps.native_async:app"),
        ),
        ServerSpec(
            "bastion-sync",
            "Bastion native API, plain def handler",
            _bastion("bench.apps.native_sync:app"),
        ),
        ServerSpec(
            "uvicorn",
            "uvicorn, uvloop + httptools, raw ASGI app, 1 process",
            _uvicorn(),
        ),
        ServerSpec(
            "granian-asgi",
            "granian, ASGI interface, 1 worker, 1 runtime thread",
            _granian("asgi", "bench.apps.asgi_hello:app"),
        ),
        ServerSpec(
            "stdlib",
            "http.server.ThreadingHTTPServer with BaseHTTPRequestHandler",
            _python_module("bench.apps.stdlib_hello"),
        ),
        ServerSpec(
            "nginx",
            "nginx, 1 worker, return 200 from config",
            _nginx(NGINX_HELLO),
        ),
        ServerSpec(
            "bare",
            "bare uvloop + httptools Protocol, canned response (Python ceiling)",
            _python_module("bench.apps.bare_protocol"),
        ),
        ServerSpec(
            "gunicorn-gthread",
            "gunicorn, gthread worker class, 1 worker, 8 threads, raw WSGI app",
            _gunicorn(),
        ),
        ServerSpec(
            "waitress",
            "waitress, 8 threads, raw WSGI app",
            _waitress,
        ),
        ServerSpec(
            "granian-wsgi",
            "granian, WSGI interface, 1 worker, 1 runtime thread",
            _granian("wsgi", "bench.apps.wsgi_hello:app"),
        ),
        ServerSpec(
            "bastion-compat",
            "bastion.compat.ThreadingHTTPServer with the same BaseHTTPRequestHandler",
            _python_module("bench.apps.stdlib_hello", "--impl", "bastion"),
        ),
        ServerSpec(
            "bastion-handler",
            "bastion run on the same BaseHTTPRequestHandler class",
            _bastion("bench.apps.stdlib_hello:HelloHandler", "--interface", "http.server"),
        ),
        ServerSpec(
            "bastion-asgi",
            "bastion run on the raw ASGI app",
            _bastion("bench.apps.asgi_hello:app", "--interface", "asgi"),
        ),
        ServerSpec(
            "bastion-wsgi",
            "bastion run on the raw WSGI app",
            _bastion("bench.apps.wsgi_hello:app", "--interface", "wsgi"),
        ),
        ServerSpec(
            "bastion-serve",
            "bastion serve DIR -q (bastion.static: small files cached, large ones by sendfile)",
            _bastion_serve,
        ),
        ServerSpec(
            "bastion-serve-log",
            "bastion serve DIR 2>FILE: its default http.server line per request, to a file",
            _bastion_serve_logging,
        ),
        ServerSpec(
            "nginx-static-log",
            "nginx-static with its default access log (combined) to a file",
            _nginx(NGINX_STATIC + NGINX_ACCESS_LOG, "application/octet-stream", NGINX_FILE_IO),
        ),
        ServerSpec(
            "bastion-async-log",
            "bastion-async with --access-log --access-log-file FILE (common format)",
            _bastion_access_log(),
        ),
        ServerSpec(
            "bastion-async-metrics",
            "bastion-async with the admin listener on (metrics counted, shipped once a second)",
            _bastion_monitored(scrape=False),
        ),
        ServerSpec(
            "bastion-async-scraped",
            "bastion-async-metrics with /metrics scraped once a second (curl)",
            _bastion_monitored(scrape=True),
        ),
        ServerSpec(
            "bastion-async-logger",
            "bastion-async with the access log through logging: --log-config, a FileHandler",
            _bastion_access_logger,
        ),
        ServerSpec(
            "http.server",
            "python -m http.server, its default HTTP/1.0: one connection per request",
            _http_server(),
            keepalive=False,
        ),
        ServerSpec(
            "http.server-1.1",
            "python -m http.server --protocol HTTP/1.1: keep-alive",
            _http_server("--protocol", "HTTP/1.1"),
        ),
        ServerSpec(
            "nginx-static",
            "nginx, 1 worker, root DIR, sendfile on, tcp_nopush on",
            _nginx(NGINX_STATIC, "application/octet-stream", NGINX_FILE_IO),
        ),
        ServerSpec(
            "bastion-tls",
            "Bastion native API, async def handler, over TLS",
            _bastion("bench.apps.native_async:app", "--log-level", "warning", tls=True),
        ),
        ServerSpec(
            "uvicorn-tls",
            "uvicorn, uvloop + httptools, raw ASGI app, over TLS",
            _uvicorn(tls=True),
        ),
        ServerSpec(
            "bastion-workers-1",
            "bastion run, CPU-bound native app, 1 worker process",
            _bastion("bench.apps.cpu_bound:app", "--workers", "1", "--log-level", "warning"),
        ),
        ServerSpec(
            "bastion-workers-2",
            "bastion run, CPU-bound native app, 2 worker processes",
            _bastion("bench.apps.cpu_bound:app", "--workers", "2", "--log-level", "warning"),
        ),
        ServerSpec(
            "bastion-flask",
            "bastion run --interface wsgi on the Flask app",
            _bastion("bench.apps.flask_json:app", "--interface", "wsgi", "--log-level", "warning"),
        ),
        ServerSpec(
            "gunicorn-flask",
            "gunicorn, gthread worker class, 1 worker, 8 threads, the Flask app",
            _gunicorn("bench.apps.flask_json:app"),
        ),
        ServerSpec(
            "bastion-fastapi",
            "bastion run --interface asgi on the FastAPI app",
            _bastion(
                "bench.apps.fastapi_json:app", "--interface", "asgi", "--log-level", "warning"
            ),
        ),
        ServerSpec(
            "uvicorn-fastapi",
            "uvicorn, uvloop + httptools, the FastAPI app, 1 process",
            _uvicorn("bench.apps.fastapi_json:app"),
        ),
    )
}

HELLO_SERVERS = (
    "bastion-async",
    "bastion-sync",
    "uvicorn",
    "granian-asgi",
    "stdlib",
    "nginx",
    "bare",
)
STATIC_SERVERS = ("bastion-serve", "http.server", "http.server-1.1", "nginx-static")
STATIC_NOTES = (
    "http.server answers HTTP/1.0 by default and closes every connection; wrk reconnects.",
)

SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            "hello",
            "GET / -> 200 text/plain 'Hello, world!', keep-alive",
            servers=HELLO_SERVERS,
            baselines=("uvicorn",),
        ),
        Scenario(
            "pipelined",
            "hello, with 16 requests pipelined in every socket write",
            servers=("bastion-async", "bastion-sync", "bare", "uvicorn", "granian-asgi", "nginx"),
            baselines=("uvicorn", "bare"),
            wrk_script="scripts/pipeline.lua",
            wrk_script_args=("16",),
            latency_valid=False,
            notes=(
                "wrk counts every pipelined response, so req/s is per request.",
                "wrk latency under pipelining is per batch and unreliable: shown as n/a.",
            ),
        ),
        Scenario(
            "asgi",
            "hello through the same raw ASGI app on ASGI servers",
            servers=("bastion-asgi", "uvicorn", "granian-asgi"),
            baselines=("uvicorn",),
        ),
        Scenario(
            "wsgi",
            "hello through a raw WSGI app on WSGI servers",
            servers=("bastion-wsgi", "gunicorn-gthread", "waitress", "granian-wsgi"),
            baselines=("gunicorn-gthread",),
        ),
        Scenario(
            "compat",
            "the classic http.server handler on the stdlib server vs Bastion",
            servers=("stdlib", "bastion-compat", "bastion-handler"),
            baselines=("stdlib",),
        ),
        Scenario(
            "static-1k",
            "GET /1k.bin -> 200, a 1 KiB file from a directory, keep-alive",
            servers=STATIC_SERVERS,
            baselines=("nginx-static", "http.server"),
            path="/1k.bin",
            expect_body=STATIC_FILES["1k.bin"],
            prepare=_write_static_files,
            notes=STATIC_NOTES,
        ),
        Scenario(
            "static-1k-log",
            "static-1k with a line per request: bastion serve's default vs -q, nginx logging",
            servers=("bastion-serve", "bastion-serve-log", "nginx-static-log"),
            baselines=("bastion-serve", "nginx-static-log"),
            path="/1k.bin",
            expect_body=STATIC_FILES["1k.bin"],
            prepare=_write_static_files,
        ),
        Scenario(
            "metrics",
            "hello with monitoring off, on (admin listener), and on with a scrape a second",
            servers=("bastion-async", "bastion-async-metrics", "bastion-async-scraped"),
            baselines=("bastion-async",),
        ),
        Scenario(
            "access-log",
            "hello with the access log off, on to a file, and on through logging",
            servers=("bastion-async", "bastion-async-log", "bastion-async-logger"),
            baselines=("bastion-async",),
        ),
        Scenario(
            "static-1m",
            "GET /1m.bin -> 200, a 1 MiB file from a directory, keep-alive",
            servers=STATIC_SERVERS,
            baselines=("nginx-static", "http.server"),
            path="/1m.bin",
            expect_body=STATIC_FILES["1m.bin"],
            prepare=_write_static_files,
            notes=STATIC_NOTES,
        ),
        Scenario(
            "tls",
            "hello over HTTPS, the same self-signed certificate for every server",
            servers=("bastion-tls", "uvicorn-tls"),
            baselines=("uvicorn-tls",),
            scheme="https",
            prepare=_make_certificate,
        ),
        Scenario(
            "workers",
            "CPU-bound handler (~1 ms of Python per request), 1 vs 2 worker processes; "
            "nothing pinned: wrk shares the two cores with the workers",
            servers=("bastion-workers-1", "bastion-workers-2"),
            baselines=("bastion-workers-1",),
            expect_body=CPU_BOUND_BODY,
            pinned=False,
            connections=32,
            notes=("Unpinned: wrk's CPU time comes out of the same two cores the workers use.",),
        ),
        Scenario(
            "flask-json",
            f"GET {json_payload.PATH} -> a small JSON document from a Flask view (WSGI)",
            servers=("bastion-flask", "gunicorn-flask"),
            baselines=("gunicorn-flask",),
            path=json_payload.PATH,
            expect_json=json_payload.PAYLOAD,
        ),
        Scenario(
            "fastapi-json",
            f"GET {json_payload.PATH} -> a small JSON document from a FastAPI route (ASGI)",
            servers=("bastion-fastapi", "uvicorn-fastapi"),
            baselines=("uvicorn-fastapi",),
            path=json_payload.PATH,
            expect_json=json_payload.PAYLOAD,
        ),
    )
}
