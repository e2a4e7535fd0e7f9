"""One worker process: load the application, serve the inherited sockets, keep a heartbeat.

The supervisor forks workers; each loads the application itself (so a reload picks up new
code) and runs one event loop. A pipe back to the supervisor carries single bytes: ``R`` once
the worker is serving, ``.`` as a heartbeat (from the event loop, so a loop blocked by a
handler stops beating), and ``M`` once the worker has served its ``max_requests`` and asks to
be replaced. A worker whose supervisor disappears stops gracefully on its own. When the plan
has jobs or probe paths, a datagram socket carries messages the other way
(:mod:`bastion.process.channel`), among them the notice that the server is stopping, which
turns the probe paths' readiness off while the worker still serves (a shutdown delay).

Signals: SIGTERM drains gracefully (one that arrives while the application is still loading
takes effect once the worker serves), SIGQUIT exits at once, SIGUSR2 prints every thread's
stack (the supervisor asks for it before killing a worker that stopped answering). SIGINT,
SIGHUP, SIGTTIN and SIGTTOU are ignored: sent to the whole process group (a Ctrl-C, a terminal
hanging up), they are the supervisor's to act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from bastion.engine.config import ServerConfig, WorkerConfig
from bastion.engine.handler import Handler, StartupFailed
from bastion.engine.listeners import BindSpec
from bastion.engine.server import Server, freeze_startup_objects, new_event_loop
from bastion.observe.accesslog import access_log_observers
from bastion.observe.config import MonitorConfig
from bastion.observe.telemetry import WorkerTelemetry, for_worker
from bastion.process.channel import STOPPING, Inbox, SupervisorJob

logger = logging.getLogger("bastion.server")

READY = b"R"
BEAT = b"."
RETIRE = b"M"

# Exit codes a worker uses to say why it could not serve.
EXIT_LOAD_ERROR = 3  # the application could not be imported or is not servable
EXIT_START_ERROR = 4  # the server or the application's startup hook failed


class WorkerBootError(Exception):
    """The application cannot be loaded; the message says why, for the person starting it."""


@dataclass
class ServePlan:
    """What one generation of workers runs; the caller builds a new one on every reload.

    ``load_handler`` runs in each worker after the fork, so application code is imported
    fresh by every new worker and never by the supervisor. ``watch`` lists files and
    directories whose changes trigger a reload (``WorkerConfig.reload``). ``jobs`` run once,
    in the supervisor, while this plan is the current one; what they broadcast reaches the
    handler's ``supervisor_message(message)`` in every worker (:mod:`bastion.process.channel`).

    ``adopt``, when set, is offered the next plan on a reload (SIGHUP, a changed file): it
    returns True when it has taken what changed into the running workers (through its jobs),
    so no new generation is started, and False when only new workers can.
    """

    load_handler: Callable[[], Handler]
    server: ServerConfig = field(default_factory=ServerConfig)
    workers: WorkerConfig = field(default_factory=WorkerConfig)
    binds: list[BindSpec] = field(default_factory=list)
    ssl_context: ssl.SSLContext | None = None
    watch: list[str] = field(default_factory=list)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    jobs: list[SupervisorJob] = field(default_factory=list)
    adopt: Callable[[ServePlan], bool] | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"


class Heartbeat:
    """The write end of the pipe to the supervisor; never blocks, never raises."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)

    def send(self, message: bytes) -> None:
        # A full pipe means the supervisor is busy; a broken one, that it is gone.
        with contextlib.suppress(OSError):
            os.write(self.fd, message)


def heartbeat_interval(worker_timeout: float) -> float:
    return max(0.05, min(1.0, worker_timeout / 4))


def run_worker(
    plan: ServePlan,
    sockets: list[socket.socket],
    beat_fd: int,
    max_requests: int,
    parent_pid: int,
    *,
    slot: int = 0,
    telemetry: socket.socket | None = None,
    channel: socket.socket | None = None,
) -> int:
    """The body of a worker process; returns its exit code.

    With ``telemetry`` (a datagram socket to the supervisor), the worker counts its requests
    and ships a snapshot of its figures once a second (:mod:`bastion.observe.telemetry`).
    With ``channel``, it hands the supervisor's messages to the handler.
    """
    faulthandler.register(signal.SIGUSR2, all_threads=True)
    beat = Heartbeat(beat_fd)
    try:
        handler = plan.load_handler()
    except WorkerBootError as exc:
        print(f"bastion: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_LOAD_ERROR
    except BaseException:
        logger.exception("cannot load the application")
        return EXIT_LOAD_ERROR
    monitoring: WorkerTelemetry | None = None
    if telemetry is not None or plan.monitor.health_path_prefix:
        try:
            handler, monitoring = for_worker(handler, plan.monitor, slot)
        except (ImportError, AttributeError, ValueError) as exc:
            print(f"bastion: error: health check: {exc}", file=sys.stderr, flush=True)
            return EXIT_LOAD_ERROR
    inbox = None
    if channel is not None:
        inbox = Inbox(
            channel,
            getattr(handler, "supervisor_message", None),
            _on_notice(monitoring),
        )
    server = Server(
        handler,
        plan.server,
        sockets=sockets,
        ssl_context=plan.ssl_context,
        observers=access_log_observers(plan.server),
    )
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(
            _serve(
                server,
                beat,
                plan.workers.worker_timeout,
                max_requests,
                parent_pid,
                monitoring,
                telemetry,
                inbox,
            )
        )
    finally:
        loop.close()


async def _serve(
    server: Server,
    beat: Heartbeat,
    timeout: float,
    max_requests: int,
    parent_pid: int,
    monitoring: WorkerTelemetry | None = None,
    channel: socket.socket | None = None,
    inbox: Inbox | None = None,
) -> int:
    loop = asyncio.get_running_loop()
    if inbox is not None:
        # The state the supervisor sent at the fork, before the first request can come.
        inbox.drain()
    try:
        await server.start()
    except StartupFailed as exc:
        logger.error("%s", exc)
        return EXIT_START_ERROR
    except Exception:
        logger.exception("worker could not start serving")
        return EXIT_START_ERROR
    freeze_startup_objects()
    if inbox is not None:
        inbox.drain()
        loop.add_reader(inbox.fileno(), inbox.drain)
    loop.add_signal_handler(signal.SIGTERM, server.request_stop)
    loop.add_signal_handler(signal.SIGQUIT, _quit_now, server)
    # The supervisor forks workers with SIGTERM blocked: one that came while the application
    # was loading is delivered now, and drains what was queued instead of resetting it.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    beat.send(READY)
    beating = loop.create_task(
        _beat(server, beat, heartbeat_interval(timeout), max_requests, parent_pid)
    )
    reporting = None
    if monitoring is not None:
        assert server.state is not None
        monitoring.attach(server.state)
        if channel is not None:
            reporting = loop.create_task(monitoring.run(channel))
        elif len(monitoring.checks):
            reporting = loop.create_task(monitoring.check_forever())
    await server.serve_until_stopped()
    if inbox is not None:
        loop.remove_reader(inbox.fileno())
    beating.cancel()
    if reporting is not None:
        # After the drain, so the last snapshot counts every request this worker served.
        reporting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporting
    return 0


def _on_notice(monitoring: WorkerTelemetry | None) -> Callable[[str], None]:
    """What the worker does with the supervisor's notices."""

    def on_notice(notice: str) -> None:
        if notice == STOPPING and monitoring is not None:
            monitoring.server_stopping()

    return on_notice


def _quit_now(server: Server) -> None:
    server.abort()
    logging.shutdown()
    os._exit(0)


async def _beat(
    server: Server, beat: Heartbeat, interval: float, max_requests: int, parent_pid: int
) -> None:
    state = server.state
    assert state is not None
    asked_to_retire = False
    while True:
        await asyncio.sleep(interval)
        if os.getppid() != parent_pid:
            logger.error("the supervisor is gone: shutting down")
            server.request_stop()
            return
        if max_requests and not asked_to_retire and state.stats.requests >= max_requests:
            asked_to_retire = True
            logger.info("served %d requests: asking to be replaced", state.stats.requests)
            beat.send(RETIRE)
        else:
            beat.send(BEAT)
