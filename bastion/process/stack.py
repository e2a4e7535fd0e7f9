"""Several worker groups under one supervisor process: what ``bastion up`` runs.

Each group (a service, or the balancer in front of them) is a :class:`Supervisor` over its
own plan, with its own listeners, worker count, generations and restarts. This process owns
what they share: the signals, the wait (one asyncio loop, serving the admin listener and
running every group's jobs), the reaping of children, and the workers' output, which reaches
the terminal a line at a time behind the group's name.

- **Order.** A group that ``needs`` others forks no worker before each of them is serving
  (every worker of its first generation has loaded its application, run its startup and
  is accepting), so the balancer never routes to a service that is still starting.
- **Restarts** are the group's own: a worker that dies is replaced by its supervisor, and the
  listening sockets stay open in this process meanwhile, so connections to that service
  wait in the kernel's accept queue instead of being refused.
- **Stopping.** SIGTERM / SIGINT drain the groups nothing needs first (the balancer stops
  taking connections and finishes the requests in flight, which the services still
  answer), then each group once every group that needs it is gone; a second one stops
  everything at once, as does SIGQUIT. A group that gives up on its own (an application
  that cannot start, or keeps dying) stops the whole stack, with its exit code.
- **SIGHUP** re-reads the configuration (``reload``) and starts a new generation in every
  group; each group's old workers drain once its new ones serve, as with ``bastion run``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bastion.engine.handler import Handler
from bastion.observe.config import MonitorConfig
from bastion.process.loop import SupervisorLoop
from bastion.process.monitor import Monitor
from bastion.process.supervisor import (
    Supervisor,
    drain,
    install_signals,
    reap,
    restore_signals,
)
from bastion.process.workers import ServePlan, heartbeat_interval

logger = logging.getLogger("bastion.server")

# Bright enough on dark and light terminals; red is left for errors.
_COLOURS = (36, 33, 35, 32, 34, 96, 93, 95, 92, 94)
# A line longer than this is passed on in pieces rather than held.
_MAX_LINE = 64 * 1024
_PIPE_SIZE = 1 << 20


@dataclass
class Group:
    """One worker group: ``plan`` served by its own supervisor, after the groups it ``needs``."""

    name: str
    plan: ServePlan
    needs: tuple[str, ...] = ()
    supervisor: Supervisor = field(init=False, repr=False)


class Output:
    """One group's stdout or stderr: a pipe every worker of the group writes to, copied a line
    at a time to ``target`` behind ``prefix``, on the supervisor's loop."""

    def __init__(self, loop: SupervisorLoop, prefix: bytes, target: int) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        # A busy terminal or a burst of access-log lines should not stall a worker's write.
        with contextlib.suppress(OSError, AttributeError):
            fcntl.fcntl(self.write_fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)  # type: ignore[attr-defined]
        self.prefix = prefix
        self.target = target
        self._partial = b""
        self._loop = loop.loop
        self._loop.add_reader(self.read_fd, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self.read_fd, 1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            self._loop.remove_reader(self.read_fd)
            return
        *lines, self._partial = (self._partial + data).split(b"\n")
        if len(self._partial) > _MAX_LINE:
            lines.append(self._partial)
            self._partial = b""
        if lines:
            self._write(b"".join(self.prefix + line + b"\n" for line in lines))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.target, view) :]
            except InterruptedError:
                continue
            except OSError:  # the terminal is gone; the workers must not notice
                return

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self.read_fd)
        with contextlib.suppress(OSError):
            while True:
                data = os.read(self.read_fd, 1 << 16)
                if not data:
                    break
                self._partial += data
        if self._partial:
            self._write(self.prefix + self._partial + b"\n")
            self._partial = b""
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def prefixes(names: Sequence[str], colour: bool) -> dict[str, bytes]:
    """``name | `` for each group, the names padded to one width, coloured on a terminal."""
    width = max((len(name) for name in names), default=0)
    shown: dict[str, bytes] = {}
    for number, name in enumerate(names):
        text = f"{name:<{width}} | "
        if colour:
            text = f"\033[{_COLOURS[number % len(_COLOURS)]}m{text}\033[0m"
        shown[name] = text.encode()
    return shown


def wants_colour(fd: int) -> bool:
    """Colour on a terminal, unless NO_COLOR (no-color.org) says otherwise."""
    return os.isatty(fd) and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


class Stack:
    """Runs ``groups`` (in dependency order: a group after those it needs) in this process
    until told to stop; see the module docstring.

    ``monitor`` configures the one admin listener. ``reload`` builds every group's next plan
    on SIGHUP, by name (raises ``ValueError``/``OSError`` with a message when the new
    configuration is unusable; the current one stays). ``on_ready`` is called once, with
    each group's URLs, when every group is serving.
    """

    def __init__(
        self,
        groups: Sequence[Group],
        monitor: MonitorConfig,
        *,
        reload: Callable[[], dict[str, ServePlan]] | None = None,
        on_ready: Callable[[dict[str, list[str]]], None] | None = None,
        capture_output: bool = True,
    ) -> None:
        self.groups = list(groups)
        self._reload = reload
        self._on_ready = on_ready
        self._announced = False
        self._loop = SupervisorLoop()
        self.monitor: Monitor | None = None
        if monitor.admin_bind is not None:
            beat = max(heartbeat_interval(g.plan.workers.worker_timeout) for g in groups)
            deadline = max(monitor.beat_deadline, 3 * beat)
            self.monitor = Monitor(monitor, beat_deadline=deadline, loop=self._loop.loop)
        self._outputs: dict[str, tuple[Output, Output]] = {}
        if capture_output:
            names = [g.name for g in groups]
            out, err = prefixes(names, wants_colour(1)), prefixes(names, wants_colour(2))
            for name in names:
                self._outputs[name] = (
                    Output(self._loop, out[name], 1),
                    Output(self._loop, err[name], 2),
                )
        self._next: dict[str, ServePlan] = {}
        self._started: set[str] = set()
        self._dependents: dict[str, list[Group]] = {g.name: [] for g in groups}
        for group in groups:
            for need in group.needs:
                self._dependents[need].append(group)
            group.supervisor = Supervisor(
                self._in_group(group.name, group.plan),
                reload_plan=self._plan_for(group.name),
                on_ready=self._ready_callback(group.name),
                name=group.name,
                loop=self._loop,
                monitor=self.monitor,
                foreign_fds=self._fds_for(group.name),
            )
        self.stopping = False
        self._quitting = False
        self._signals: deque[int] = deque()
        self._wake_r = self._wake_w = -1

    # public ---------------------------------------------------------------------------------

    @property
    def admin_urls(self) -> list[str]:
        return self.monitor.urls if self.monitor is not None else []

    def bind(self) -> None:
        """Open the admin listener and every group's listeners; ``OSError`` naming the group
        when one cannot be (and none is left open)."""
        if self.monitor is not None:
            try:
                self.monitor.start()
            except OSError as exc:
                raise OSError(exc.errno, f"admin listener: {exc.strerror or exc}") from None
        opened: list[Supervisor] = []
        for group in self.groups:
            try:
                group.supervisor.bind()
            except OSError as exc:
                for supervisor in opened:
                    supervisor.close()
                raise OSError(exc.errno, f"{group.name}: {exc.strerror or exc}") from None
            opened.append(group.supervisor)

    def run(self) -> int:
        """Supervise every group until stopped; returns the exit code for the process."""
        self._install_signals()
        try:
            while not all(g.supervisor.finished for g in self.groups):
                self._tick()
        finally:
            self._restore_signals()
            for group in self.groups:
                group.supervisor.close()
            for pair in self._outputs.values():
                for output in pair:
                    output.close()
            if self.monitor is not None:
                self.monitor.close()
            self._loop.close()
        logger.info("every group stopped")
        return max((g.supervisor.exit_code for g in self.groups), default=0)

    # the loop -------------------------------------------------------------------------------

    def _tick(self) -> None:
        groups = self.groups
        fds = [self._wake_r, *(fd for g in groups for fd in g.supervisor.beat_fds())]
        deadline = min(g.supervisor.next_deadline() for g in groups)
        readable = self._loop.wait(fds, max(0.0, min(1.0, deadline - time.monotonic())))
        now = time.monotonic()
        if self._wake_r in readable:
            drain(self._wake_r)
        for group in groups:
            group.supervisor.read_beats(readable, now)
        while self._signals:
            self._handle_signal(self._signals.popleft(), now)
        self._reap(now)
        if not self.stopping:
            given_up = next((g for g in groups if g.supervisor.stopping), None)
            if given_up is not None:
                logger.error("%s stopped: stopping every group", given_up.name)
                self._stop(now, graceful=True)
        if self.stopping and not self._quitting:
            self._stop_released(now)
        for group in groups:
            if group.name not in self._started:
                if self.stopping or not all(self._serving(need) for need in group.needs):
                    continue
                self._started.add(group.name)
                if group.needs:
                    logger.info(
                        "%s: starting, now that %s serve", group.name, ", ".join(group.needs)
                    )
                group.supervisor.start()
            group.supervisor.upkeep(now)
        if not self._announced and all(self._serving(g.name) for g in groups):
            self._announced = True
            if self._on_ready is not None:
                self._on_ready({g.name: g.supervisor.urls for g in groups})

    def _serving(self, name: str) -> bool:
        return next(g for g in self.groups if g.name == name).supervisor.serving

    def _reap(self, now: float) -> None:
        reap(lambda pid, status: any(g.supervisor.reaped(pid, status, now) for g in self.groups))

    # stopping -------------------------------------------------------------------------------

    def _stop(self, now: float, graceful: bool, signum: int | None = None) -> None:
        """Stop the groups nothing needs (the rest follow, :meth:`_stop_released`)."""
        self.stopping = True
        self._quitting = self._quitting or not graceful
        if self.monitor is not None:
            self.monitor.draining()
        for group in self.groups:
            supervisor = group.supervisor
            if not graceful:
                supervisor.stop(now, graceful=False)
            elif not self._dependents[group.name] and not supervisor.stopping:
                if signum is not None:
                    # The group's own handling: a shutdown delay keeps it serving a while.
                    supervisor.handle_signal(signum, now)
                else:
                    supervisor.stop(now, graceful=True)

    def _stop_released(self, now: float) -> None:
        for group in self.groups:
            supervisor = group.supervisor
            if supervisor.stopping:
                continue
            if all(d.supervisor.finished for d in self._dependents[group.name]):
                supervisor.stop(now, graceful=True)

    # signals --------------------------------------------------------------------------------

    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = install_signals(self._signals)

    def _restore_signals(self) -> None:
        restore_signals(self._wake_r, self._wake_w)

    def _handle_signal(self, signum: int, now: float) -> None:
        name = signal.Signals(signum).name
        if signum in (signal.SIGTERM, signal.SIGINT):
            if self.stopping:
                logger.warning("second %s: stopping every group now", name)
                self._stop(now, graceful=False)
            else:
                logger.info("%s received: draining the front groups first", name)
                self._stop(now, graceful=True, signum=signum)
        elif signum == signal.SIGQUIT:
            logger.info("SIGQUIT received: stopping every group now")
            self._stop(now, graceful=False)
        elif self.stopping:
            return
        elif signum == signal.SIGHUP:
            self._reload_all()
        else:
            logger.info("%s: change a group's workers in the configuration and reload", name)

    def _reload_all(self) -> None:
        if self._reload is None:
            return
        try:
            plans = self._reload()
        except (ValueError, OSError) as exc:
            logger.error("reload failed: %s; every group keeps its workers", exc)
            return
        names = [g.name for g in self.groups]
        if sorted(plans) != sorted(names):
            logger.error(
                "reload failed: the groups changed (%s, was %s); restart to add or remove one",
                ", ".join(sorted(plans)),
                ", ".join(sorted(names)),
            )
            return
        self._next = {name: self._in_group(name, plan) for name, plan in plans.items()}
        now = time.monotonic()
        for group in self.groups:
            if group.name in self._started:
                group.supervisor.handle_signal(signal.SIGHUP, now)

    # what each group's supervisor is given ------------------------------------------------

    def _plan_for(self, name: str) -> Callable[[], ServePlan]:
        def plan() -> ServePlan:
            return self._next[name]

        return plan

    def _ready_callback(self, name: str) -> Callable[[list[str]], None]:
        def ready(urls: list[str]) -> None:
            # Debug: bastion up says where every group serves once all are ready.
            logger.debug("%s is serving on %s", name, ", ".join(urls))

        return ready

    def _fds_for(self, name: str) -> Callable[[], list[int]]:
        """What a worker of group ``name`` must close: the other groups' descriptors, the
        signal pipe, and every output pipe's read end and the other groups' write ends."""

        def fds() -> list[int]:
            found = [self._wake_r, self._wake_w]
            for group in self.groups:
                if group.name != name:
                    found.extend(group.supervisor.held_fds())
            for other, pair in self._outputs.items():
                for output in pair:
                    found.append(output.read_fd)
                    if other != name:
                        found.append(output.write_fd)
            return found

        return fds

    def _in_group(self, name: str, plan: ServePlan) -> ServePlan:
        """``plan`` with its workers' stdout and stderr sent to the group's output pipes."""
        pair = self._outputs.get(name)
        if pair is None:
            return plan
        out, err = pair[0].write_fd, pair[1].write_fd
        load = plan.load_handler

        def load_in_group() -> Handler:
            os.dup2(out, 1)
            os.dup2(err, 2)
            for fd in (out, err):
                with contextlib.suppress(OSError):
                    os.close(fd)
            # Line by line, as on a terminal, whatever the supervisor's stdout was.
            for stream in (sys.stdout, sys.stderr):
                reconfigure = getattr(stream, "reconfigure", None)
                if reconfigure is not None:
                    with contextlib.suppress(Exception):
                        reconfigure(line_buffering=True)
            return load()

        return dataclasses.replace(plan, load_handler=load_in_group)
