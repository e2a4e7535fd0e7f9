"""What to run: one ``ServerSpec`` per server row and one ``Scenario`` per workload.

Adding a server means adding one entry to ``SERVERS``; adding a workload means adding one
entry to ``SCENARIOS`` that lists server names. Command builders get a ``LaunchContext``
so they never need to know where the venv or the temporary directory lives.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HELLO_BODY = b"Hello, world!"
HOST = "127.0.0.1"


@dataclass(frozen=True)
class LaunchContext:
    """Everything a command builder may need to produce an argv for one run."""

    port: int
    python: Path  # interpreter of the benchmark venv
    bin_dir: Path  # scripts directory of the benchmark venv
    repo_root: Path
    workdir: Path  # private temporary directory, removed after the run

    @property
    def bind(self) -> str:
        return f"{HOST}:{self.port}"


CommandBuilder = Callable[[LaunchContext], list[str]]


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server; it must listen on ``HOST:ctx.port`` and serve the app."""

    name: str
    description: str
    command: CommandBuilder


@dataclass(frozen=True)
class Scenario:
    """A workload: which servers to run, what wrk sends, and whom to compare against."""

    name: str
    description: str
    servers: tuple[str, ...]
    baselines: tuple[str, ...] = ("uvicorn",)
    path: str = "/"
    wrk_script: str | None = None  # path relative to bench/
    wrk_script_args: tuple[str, ...] = ()
    expect_body: bytes = HELLO_BODY
    # wrk times a pipelined batch, not a request, and its percentiles then come out
    # inconsistent (often 0us), so such scenarios print n/a instead of misleading numbers.
    latency_valid: bool = True
    notes: tuple[str, ...] = field(default=())


def _bastion(module: str, *extra: str) -> CommandBuilder:
    def build(ctx: LaunchContext) -> list[str]:
        return [str(ctx.python), "-m", "bastion", "run", module, "--bind", ctx.bind, *extra]

    return build


def _python_module(module: str, *extra: str) -> CommandBuilder:
    """For apps in ``bench/apps`` that take the port as their first argument."""

    def build(ctx: LaunchContext) -> list[str]:
        return [str(ctx.python), "-m", module, str(ctx.port), *extra]

    return build


def _uvicorn(ctx: LaunchContext) -> list[str]:
    return [
        str(ctx.python), "-m", "uvicorn", "bench.apps.asgi_hello:app",
        "--host", HOST, "--port", str(ctx.port),
        "--loop", "uvloop", "--http", "httptools",
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


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


def _gunicorn(ctx: LaunchContext) -> list[str]:
    return [
        str(ctx.bin_dir / "gunicorn"), "--worker-class", "gthread",
        "--workers", "1", "--threads", "8", "--bind", ctx.bind,
        "--log-level", "warning", "bench.apps.wsgi_hello:app",
    ]  # fmt: skip


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
    default_type text/plain;
    server {{
        listen {bind};
        location / {{
            return 200 "Hello, world!";
        }}
    }}
}}
"""


def _nginx(ctx: LaunchContext) -> list[str]:
    """Writes a private config so the system nginx setup is neither needed nor touched."""
    conf = ctx.workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(workdir=ctx.workdir, bind=ctx.bind))
    error_log = ctx.workdir / "error.log"
    return ["nginx", "-p", str(ctx.workdir), "-e", str(error_log), "-c", str(conf)]


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
            _uvicorn,
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
            _nginx,
        ),
        ServerSpec(
            "bare",
            "bare uvloop + httptools Protocol, canned response (Python ceiling)",
            _python_module("bench.apps.bare_protocol"),
        ),
        ServerSpec(
            "gunicorn-gthread",
            "gunicorn, gthread worker class, 1 worker, 8 threads, raw WSGI app",
            _gunicorn,
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
        # "static" (serving a file from disk) slots in here: add the file-serving specs to
        # SERVERS and a Scenario whose path and expect_body name the generated file.
    )
}
