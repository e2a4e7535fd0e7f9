"""The supervisor: binds the listeners, forks the workers, keeps the right number alive.

It never imports the application. It waits on a signal wake-up pipe and one heartbeat pipe
per worker: with ``select``, or, when there is an admin listener or the plan has jobs, with
an asyncio loop that serves the listener (:mod:`bastion.process.monitor`) and runs the jobs
(:mod:`bastion.process.channel`) meanwhile. What it does, and when:

- a worker that dies unasked is replaced, at once the first time and with a doubling delay
  while it keeps dying young; after :data:`GIVE_UP_AFTER` such deaths in a row the supervisor
  stops everything and exits 1, loudly, rather than spin;
- a worker that misses its heartbeat for ``worker_timeout`` gets SIGUSR2 (it prints its
  stacks) and then SIGKILL, and is replaced;
- a worker that reached ``max_requests`` is replaced: the new one starts first, the old one
  drains once the new one is serving;
- SIGHUP (or a source change with ``reload``) starts a new generation of workers with fresh
  code and configuration; the old generation drains only once every new worker is serving,
  so no request fails. If a new worker cannot start, the reload is rolled back and the old
  workers keep serving. A plan whose ``adopt`` hook takes the next one (the balancer, when
  only its routes changed) keeps its workers instead;
- SIGTTIN / SIGTTOU add / remove a worker; SIGTERM / SIGINT drain gracefully (a second one
  stops at once), after ``shutdown_delay`` if there is one, with readiness failing from the
  signal on, on the admin listener and on the workers' probe paths alike (the workers are
  told at once, over their channel); SIGQUIT stops at once.

Only the supervisor acts on SIGHUP, SIGTTIN and SIGTTOU: a worker ignores them, so one sent
to the whole process group (a terminal hanging up, ``kill -HUP -PGID``) is a graceful reload,
not a dead worker.

If no worker of the first generation ever starts, the application is broken, not unlucky:
the supervisor exits at once (2 when it could not even be loaded).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import os
import random
import select
import signal
import socket
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

from bastion.engine.listeners import BindSpec, Listener, reuse_port_balances
from bastion.process.channel import STOPPING, Broadcaster, channel_pair
from bastion.process.loop import SupervisorLoop
from bastion.process.monitor import Monitor
from bastion.process.reloader import SourceWatcher
from bastion.process.workers import (
    EXIT_LOAD_ERROR,
    EXIT_START_ERROR,
    READY,
    RETIRE,
    ServePlan,
    heartbeat_interval,
    run_worker,
)

logger = logging.getLogger("bastion.server")

# Unasked deaths in a row (each within CRASH_WINDOW of the worker's start) before giving up.
GIVE_UP_AFTER = 8
CRASH_WINDOW = 10.0
MAX_BACKOFF = 5.0
# Beyond graceful_timeout, what a draining worker gets for its shutdown hooks before SIGKILL.
STOP_MARGIN = 5.0
# How long SIGQUIT ("now") and a stack dump get before SIGKILL.
QUIT_WAIT = 1.0
DUMP_WAIT = 0.5
RELOAD_POLL = 0.5

_FORWARDED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGCHLD,
)
# What a worker ignores, even sent to it alone: the supervisor handles them.
_SUPERVISOR_ONLY = (signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)


@dataclass(eq=False)
class WorkerProcess:
    pid: int
    slot: int
    generation: int
    beat_fd: int
    started: float
    last_beat: float
    max_requests: int
    ready: bool = False
    retiring: bool = False
    stopping: bool = False
    hung: bool = False
    kill_at: float = math.inf
    # Why the supervisor stopped it (for the exits metric); None while it was not asked to.
    stop_reason: str | None = None
    group: str = ""

    @property
    def active(self) -> bool:
        """Counts toward its slot: not asked to leave, not asking to."""
        return not self.stopping and not self.retiring

    def name(self) -> str:
        prefix = f"{self.group} " if self.group else ""
        return f"{prefix}worker {self.slot} (pid {self.pid})"


class Supervisor:
    """Runs ``plan`` in worker processes until told to stop; see the module docstring.

    ``reload_plan`` builds the next plan on SIGHUP (it raises ``ValueError``/``OSError`` with a
    message when the new configuration is unusable, and the current one stays). ``inherited``
    are already-listening sockets (systemd socket activation) served by every generation.
    ``on_ready`` gets the listening URLs once the first generation is serving.

    Several supervisors can share one process as the worker groups of a stack
    (:mod:`bastion.process.stack`), which then owns the signals, the wait and the reaping:
    ``name`` labels the group's workers, ``loop`` and ``monitor`` are shared, and
    ``foreign_fds`` lists what the other groups hold, for a forked worker to close.
    """

    def __init__(
        self,
        plan: ServePlan,
        *,
        reload_plan: Callable[[], ServePlan] | None = None,
        inherited: Sequence[socket.socket] = (),
        on_ready: Callable[[list[str]], None] | None = None,
        name: str = "",
        loop: SupervisorLoop | None = None,
        monitor: Monitor | None = None,
        foreign_fds: Callable[[], Iterable[int]] | None = None,
    ) -> None:
        self.name = name
        self._foreign_fds = foreign_fds
        self.plan = plan
        self._reload_plan = reload_plan
        self._on_ready = on_ready
        self.count = plan.workers.workers
        self.generation = 0
        self._next_generation = 1
        self._stable: int | None = None  # the last generation that had every worker serving
        self._plans: dict[int, ServePlan] = {0: plan}
        self.workers: dict[int, WorkerProcess] = {}
        self.listeners: dict[str, Listener] = {}
        self._inherited: list[str] = []
        for sock in inherited:
            listener = Listener(BindSpec("fd", fd=sock.fileno()), 0, False, sock=sock)
            self.listeners[listener.key] = listener
            self._inherited.append(listener.key)
        self._failures: dict[int, int] = {}
        self._next_spawn: dict[int, float] = {}
        self._parked = False  # reload mode: the code is broken, wait for the next change
        self._announced = False
        self.stopping = False
        self._quitting = False
        self.exit_code = 0
        self._signals: deque[int] = deque()
        self._wake_r = self._wake_w = -1
        self._watcher: SourceWatcher | None = None
        self._next_watch = 0.0
        self._pid = os.getpid()
        # Set on SIGTERM with shutdown_delay: serve on (readiness failing) until then.
        self._stop_at: float | None = None
        self.monitor: Monitor | None = monitor
        self._loop: SupervisorLoop | None = loop
        self.broadcaster: Broadcaster | None = None
        if monitor is None and plan.monitor.admin_bind is not None:
            beat = heartbeat_interval(plan.workers.worker_timeout)
            deadline = max(plan.monitor.beat_deadline, 3 * beat)
            self.monitor = Monitor(plan.monitor, beat_deadline=deadline, loop=self._event_loop())

    # public ---------------------------------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        return [self.listeners[key].url(self.plan.scheme) for key in self._keys(self.plan)]

    @property
    def serving(self) -> bool:
        """Every worker of the first generation has been serving (``on_ready`` was called)."""
        return self._announced

    @property
    def admin_urls(self) -> list[str]:
        return self.monitor.urls if self.monitor is not None else []

    def bind(self) -> None:
        """Open the listeners of the first plan and the admin listener; raises ``OSError``
        when one cannot be."""
        self._open_listeners(self.plan)
        if self.monitor is not None and self.monitor.server is None:
            try:
                self.monitor.start()
            except OSError as exc:
                for listener in self.listeners.values():
                    listener.close()
                self.listeners.clear()
                raise OSError(exc.errno, f"admin listener: {exc.strerror or exc}") from None

    def run(self) -> int:
        """Supervise until stopped; returns the exit code for the process."""
        if not self.listeners:
            self.bind()
        self._install_signals()
        self.start()
        try:
            while not (self.stopping and not self.workers):
                self._tick()
        finally:
            self._restore_signals()
            self.close()
            if self.monitor is not None:
                self.monitor.close()
            if self._loop is not None:
                self._loop.close()
        logger.log(logging.INFO if self._announced else logging.DEBUG, "supervisor stopped")
        return self.exit_code

    def start(self) -> None:
        """Start the plan's jobs and source watching; workers follow from :meth:`upkeep`."""
        if self.plan.workers.reload:
            self._watcher = SourceWatcher(self.plan.watch)
        self._start_jobs(self.plan)

    def close(self) -> None:
        """Release the listeners and the jobs (the loop and the monitor are the caller's)."""
        for listener in self.listeners.values():
            listener.close()
        self.listeners.clear()
        if self.broadcaster is not None:
            self.broadcaster.close()

    @property
    def finished(self) -> bool:
        return self.stopping and not self.workers

    # the loop -------------------------------------------------------------------------------

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = SupervisorLoop()
        return self._loop.loop

    def _start_jobs(self, plan: ServePlan) -> None:
        """Run ``plan``'s jobs (and only them) from now on."""
        if _has_channel(plan) and self.broadcaster is None:
            self.broadcaster = Broadcaster(self._event_loop())
        if self.broadcaster is not None:
            self.broadcaster.start(plan.jobs)
        if self.monitor is not None:
            self.monitor.serve_jobs(plan.jobs, owner=self)

    def _tick(self) -> None:
        fds = [self._wake_r, *self.beat_fds()]
        timeout = max(0.0, min(1.0, self.next_deadline() - time.monotonic()))
        readable: Collection[int]
        if self._loop is not None:
            # The admin listener is served and the jobs run while the supervisor waits.
            readable = self._loop.wait(fds, timeout)
        else:
            try:
                readable, _, _ = select.select(fds, [], [], timeout)
            except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for safety
                readable = []
        now = time.monotonic()
        if self._wake_r in readable:
            drain(self._wake_r)
        self.read_beats(readable, now)
        while self._signals:
            self.handle_signal(self._signals.popleft(), now)
        self._reap(now)
        self.upkeep(now)

    def beat_fds(self) -> list[int]:
        return [w.beat_fd for w in self.workers.values()]

    def read_beats(self, readable: Collection[int], now: float) -> None:
        for worker in list(self.workers.values()):
            if worker.beat_fd in readable:
                self._read_beats(worker, now)

    def upkeep(self, now: float) -> None:
        """What follows a wait, once signals and exits are handled: deadlines, spawning,
        reloads, the channel."""
        if self._stop_at is not None and now >= self._stop_at and not self.stopping:
            logger.info("%sshutdown delay over: draining", self._label)
            self._stop_all(now, graceful=True)
        self._enforce_deadlines(now)
        if not self.stopping:
            self._reconcile(now)
            self._watch(now)
        if self.broadcaster is not None:
            # What a busy worker could not take at once is sent again.
            self.broadcaster.flush()

    def next_deadline(self) -> float:
        deadline = time.monotonic() + 1.0
        timeout = self.plan.workers.worker_timeout
        for worker in self.workers.values():
            deadline = min(
                deadline, worker.kill_at if worker.stopping else worker.last_beat + timeout
            )
        for when in self._next_spawn.values():
            deadline = min(deadline, when)
        if self._watcher is not None:
            deadline = min(deadline, self._next_watch)
        if self._stop_at is not None:
            deadline = min(deadline, self._stop_at)
        return deadline

    def _read_beats(self, worker: WorkerProcess, now: float) -> None:
        try:
            data = os.read(worker.beat_fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            return  # the worker closed its end; it is exiting and will be reaped
        worker.last_beat = now
        monitor = self.monitor
        if monitor is not None:
            monitor.worker_beat(worker.pid)
        # Any byte is a heartbeat; READY and RETIRE also change the worker's state.
        if READY in data and not worker.ready:
            worker.ready = True
            logger.info("%s is serving", worker.name())
            if monitor is not None and not worker.stopping:
                monitor.worker_ready(worker.pid)
        if RETIRE in data and not worker.retiring and not worker.stopping:
            worker.retiring = True
            logger.info("%s reached its max_requests: replacing it", worker.name())

    # signals --------------------------------------------------------------------------------

    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = install_signals(self._signals)

    def _restore_signals(self) -> None:
        restore_signals(self._wake_r, self._wake_w)

    @property
    def _label(self) -> str:
        return f"{self.name}: " if self.name else ""

    def handle_signal(self, signum: int, now: float) -> None:
        name = signal.Signals(signum).name
        if signum in (signal.SIGTERM, signal.SIGINT):
            if self.stopping:
                logger.warning("%ssecond %s: stopping now", self._label, name)
                self._stop_all(now, graceful=False)
            elif self._stop_at is not None:
                logger.info("%ssecond %s: draining now", self._label, name)
                self._stop_all(now, graceful=True)
            else:
                if self.monitor is not None:
                    self.monitor.draining()
                if self.broadcaster is not None:
                    # The workers' probe paths fail readiness from now on, as the admin
                    # listener's does, though the workers serve on through a shutdown delay.
                    self.broadcaster.notify(STOPPING)
                delay = self.plan.monitor.shutdown_delay
                if delay > 0:
                    # Load balancers (a Kubernetes Service) stop sending new requests only
                    # once they see readiness fail; until then, keep serving them.
                    logger.info(
                        "%s%s received: readiness fails now, draining in %.1fs",
                        self._label,
                        name,
                        delay,
                    )
                    self._stop_at = now + delay
                else:
                    logger.info("%s%s received: shutting down gracefully", self._label, name)
                    self._stop_all(now, graceful=True)
        elif signum == signal.SIGQUIT:
            logger.info("%sSIGQUIT received: stopping now", self._label)
            self._stop_all(now, graceful=False)
        elif self.stopping:
            return
        elif signum == signal.SIGHUP:
            self._reload("SIGHUP received")
        elif signum == signal.SIGTTIN:
            self.count += 1
            logger.info("%sSIGTTIN: now %d workers", self._label, self.count)
        elif signum == signal.SIGTTOU:
            if self.count > 1:
                self.count -= 1
                logger.info("%sSIGTTOU: now %d workers", self._label, self.count)
            else:
                logger.info("%sSIGTTOU: already down to one worker", self._label)

    # starting and stopping workers --------------------------------------------------------

    def _keys(self, plan: ServePlan) -> list[str]:
        return [str(spec) for spec in plan.binds] + self._inherited

    def _open_listeners(self, plan: ServePlan) -> None:
        reuse = plan.workers.reuse_port and reuse_port_balances()
        opened: list[Listener] = []
        try:
            for spec in plan.binds:
                if str(spec) in self.listeners:
                    continue
                listener = Listener(spec, plan.server.backlog, reuse)
                listener.open()
                opened.append(listener)
                self.listeners[listener.key] = listener
        except OSError:
            for listener in opened:
                listener.close()
                del self.listeners[listener.key]
            raise

    def _spawn(self, slot: int, now: float) -> None:
        plan = self.plan
        sockets = [self.listeners[key].socket_for(slot) for key in self._keys(plan)]
        limit = plan.workers.max_requests
        if limit:
            limit += random.randint(0, plan.workers.max_requests_jitter)
        beat_r, beat_w = os.pipe()
        channel = channel_pair() if _has_channel(plan) and self.broadcaster is not None else None
        # The loop never runs during a fork (see bastion.process.loop).
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED_SIGNALS)
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            os.close(beat_r)
            os.close(beat_w)
            for sock in channel or ():
                sock.close()
            logger.exception("cannot fork a worker")
            self._next_spawn[slot] = now + 1.0
            return
        if pid == 0:
            self._become_worker(plan, slot, sockets, beat_r, beat_w, limit, blocked, channel)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(beat_w)
        os.set_blocking(beat_r, False)
        if channel is not None and self.broadcaster is not None:
            channel[1].close()
            # Before anything else is broadcast: the worker learns the state, then the news.
            self.broadcaster.attach(pid, channel[0])
        worker = WorkerProcess(
            pid=pid,
            slot=slot,
            generation=self.generation,
            beat_fd=beat_r,
            started=now,
            last_beat=now,
            max_requests=limit,
            group=self.name,
        )
        self.workers[pid] = worker
        if self.monitor is not None:
            self.monitor.worker_started(pid, slot, self.generation, self.name)
        self._next_spawn.pop(slot, None)
        logger.debug("started %s (generation %d)", worker.name(), self.generation)

    def _become_worker(
        self,
        plan: ServePlan,
        slot: int,
        sockets: list[socket.socket],
        beat_r: int,
        beat_w: int,
        max_requests: int,
        blocked: set[int | signal.Signals],
        channel: tuple[socket.socket, socket.socket] | None,
    ) -> None:
        """In the forked child: shed the supervisor's state, run the worker, never return."""
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for signum in _FORWARDED_SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            # Sent to the whole process group (Ctrl-C, a terminal hanging up, kill -HUP
            # -PGID), these are the supervisor's to act on: it drains or replaces the workers.
            for signum in _SUPERVISOR_ONLY:
                signal.signal(signum, signal.SIG_IGN)
            # SIGTERM stays blocked until the worker serves (run_worker unblocks it): a worker
            # stopped while loading would otherwise die with connections in its accept queue.
            signal.pthread_sigmask(signal.SIG_SETMASK, {*blocked, signal.SIGTERM})
            mine = {sock.fileno() for sock in sockets}
            monitor = self.monitor
            broadcaster = self.broadcaster
            for fd in (
                beat_r,
                self._wake_r,
                self._wake_w,
                *(w.beat_fd for w in self.workers.values()),
                *(monitor.child_fds() if monitor is not None else ()),
                *(self._loop.child_fds() if self._loop is not None else ()),
                *(broadcaster.child_fds() if broadcaster is not None else ()),
                *((channel[0].fileno(),) if channel is not None else ()),
                *(self._foreign_fds() if self._foreign_fds is not None else ()),
            ):
                with contextlib.suppress(OSError):
                    os.close(fd)
            for listener in self.listeners.values():
                for sock in listener.sockets:
                    if sock.fileno() not in mine:
                        sock.close()
            code = run_worker(
                plan,
                sockets,
                beat_w,
                max_requests,
                self._pid,
                slot=slot,
                telemetry=monitor.sender if monitor is not None else None,
                channel=channel[1] if channel is not None else None,
            )
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def _stop(self, worker: WorkerProcess, now: float, why: str, reason: str) -> None:
        logger.info("stopping %s: %s", worker.name(), why)
        self._mark_stopping(worker, reason)
        worker.kill_at = now + self._plans[worker.generation].workers.graceful_timeout + STOP_MARGIN
        # Before the signal: a socket that only this worker still needs must be closed by the
        # worker itself, after it has taken what waits in the queue (see _release_listeners).
        self._release_listeners()
        self._kill(worker, signal.SIGTERM)

    def stop(self, now: float, graceful: bool) -> None:
        self._stop_all(now, graceful)

    def held_fds(self) -> list[int]:
        """What a worker of another group sharing this process must close."""
        fds = self.beat_fds()
        for listener in self.listeners.values():
            fds.extend(sock.fileno() for sock in listener.sockets)
        if self.broadcaster is not None:
            fds.extend(self.broadcaster.child_fds())
        return fds

    def _stop_all(self, now: float, graceful: bool) -> None:
        self.stopping = True
        self._quitting = self._quitting or not graceful
        # The workers must hold the last references to the listening sockets: each empties
        # its accept queue before closing, so the kernel stops listening only once nothing
        # is left in it. Were the supervisor to keep them open until the workers are gone,
        # the kernel would go on completing handshakes that nobody accepts, and reset them
        # all when it finally closed. Closing here also tells the kernel to ignore new
        # connection attempts on them (Listener.close), so the workers' own closes cut no
        # handshake short.
        for listener in self.listeners.values():
            listener.close()
        self.listeners.clear()
        if self.monitor is not None:
            self.monitor.draining()
        for worker in self.workers.values():
            if graceful:
                if not worker.stopping:
                    self._mark_stopping(worker, "shutdown")
                    worker.kill_at = (
                        now + self._plans[worker.generation].workers.graceful_timeout + STOP_MARGIN
                    )
                    self._kill(worker, signal.SIGTERM)
            else:
                self._mark_stopping(worker, "shutdown")
                worker.kill_at = min(worker.kill_at, now + QUIT_WAIT)
                self._kill(worker, signal.SIGQUIT)

    def _mark_stopping(self, worker: WorkerProcess, reason: str) -> None:
        worker.stopping = True
        if worker.stop_reason is None:
            worker.stop_reason = reason
        if self.monitor is not None:
            self.monitor.worker_stopping(worker.pid)

    def _kill(self, worker: WorkerProcess, signum: int) -> None:
        try:
            os.kill(worker.pid, signum)
        except OSError as exc:
            if exc.errno != errno.ESRCH:
                raise

    # watching -------------------------------------------------------------------------------

    def _reap(self, now: float) -> None:
        reap(lambda pid, status: self.reaped(pid, status, now))

    def reaped(self, pid: int, status: int, now: float) -> bool:
        """A child exited with ``status``; False if it was not one of this supervisor's."""
        worker = self.workers.pop(pid, None)
        if worker is None:
            return False
        with contextlib.suppress(OSError):
            os.close(worker.beat_fd)
        if self.broadcaster is not None:
            self.broadcaster.detach(pid)
        code = os.waitstatus_to_exitcode(status)
        if self.monitor is not None:
            self.monitor.worker_exited(pid, _exit_reason(worker, code))
        self._exited(worker, code, now)
        return True

    def _exited(self, worker: WorkerProcess, code: int, now: float) -> None:
        how = f"was killed by {_signal_name(-code)}" if code < 0 else f"exited with code {code}"
        if worker.stopping and not worker.hung:
            logger.info("%s %s", worker.name(), "stopped" if code == 0 else how)
            return
        if self.stopping:
            return
        # One that could not load or start the application has said why: this is no news.
        explained = not worker.ready and code in (EXIT_LOAD_ERROR, EXIT_START_ERROR)
        level = logging.DEBUG if explained else logging.ERROR
        logger.log(level, "%s %s%s", worker.name(), how, "" if worker.ready else " before serving")
        booting = not worker.ready and worker.generation == self.generation
        if booting and self._boot_failed(worker, code):
            return
        if worker.generation != self.generation or worker.slot >= self.count:
            return
        failures = self._failures.get(worker.slot, 0)
        failures = failures + 1 if now - worker.started < CRASH_WINDOW else 1
        self._failures[worker.slot] = failures
        if failures >= GIVE_UP_AFTER:
            logger.critical(
                "workers keep dying (%d times in a row, each within %.0fs of starting): giving up",
                failures,
                CRASH_WINDOW,
            )
            self.exit_code = 1
            self._stop_all(now, graceful=True)
            return
        delay = 0.0 if failures <= 1 else min(MAX_BACKOFF, 0.1 * 2 ** (failures - 2))
        if delay:
            logger.warning("%srestarting worker %d in %.1fs", self._label, worker.slot, delay)
        self._next_spawn[worker.slot] = now + delay

    def _boot_failed(self, worker: WorkerProcess, code: int) -> bool:
        """A worker of the current generation died before serving; True when handled here."""
        if self._stable is not None and self._stable != self.generation:
            self._roll_back()
            return True
        if self.plan.workers.reload:
            if not self._parked:
                logger.error(
                    "%sthe application cannot start: waiting for a change to reload", self._label
                )
            self._parked = True
            return True
        if not self._announced:
            logger.critical("the application failed to start: stopping")
            self.exit_code = 2 if code in (EXIT_LOAD_ERROR, EXIT_START_ERROR) else 1
            self._stop_all(time.monotonic(), graceful=True)
            return True
        return False

    def _roll_back(self) -> None:
        failed = self.generation
        assert self._stable is not None
        logger.error(
            "%sreload failed: a new worker could not start; the previous workers keep serving",
            self._label,
        )
        self.generation = self._stable
        self.plan = self._plans[self._stable]
        self._start_jobs(self.plan)
        self.count = self.plan.workers.workers
        self._failures.clear()
        self._next_spawn.clear()
        now = time.monotonic()
        for worker in list(self.workers.values()):
            if worker.generation > self._stable and not worker.stopping:
                self._stop(worker, now, f"generation {failed} was rolled back", "rolled-back")

    def _enforce_deadlines(self, now: float) -> None:
        timeout = self.plan.workers.worker_timeout
        for worker in self.workers.values():
            if worker.stopping:
                if now >= worker.kill_at:
                    if not worker.hung:
                        logger.warning("%s did not stop in time: killing it", worker.name())
                    self._kill(worker, signal.SIGKILL)
                    worker.kill_at = math.inf
            elif now - worker.last_beat > timeout:
                doing = "answered no heartbeat" if worker.ready else "did not start"
                logger.error(
                    "%s %s for %.1fs (worker_timeout): killing it", worker.name(), doing, timeout
                )
                worker.hung = True
                worker.stop_reason = "heartbeat-timeout"
                self._mark_stopping(worker, "heartbeat-timeout")
                worker.kill_at = now + DUMP_WAIT
                self._kill(worker, signal.SIGUSR2)

    def _reconcile(self, now: float) -> None:
        generation = self.generation
        all_serving = True
        for slot in range(self.count):
            active = [
                w
                for w in self.workers.values()
                if w.generation == generation and w.slot == slot and w.active
            ]
            if not active:
                all_serving = False
                if not self._parked and now >= self._next_spawn.get(slot, 0.0):
                    self._spawn(slot, now)
            elif not any(w.ready for w in active):
                all_serving = False
        if all_serving and self.count:
            # Before the previous generation is stopped, so that the listeners only it used
            # are released as it goes (see _stop).
            if self._stable != generation:
                if self._stable is not None:
                    logger.info(
                        "%sreload complete: generation %d is serving", self._label, generation
                    )
                self._stable = generation
            if not self._announced:
                self._announced = True
                if self._on_ready is not None:
                    self._on_ready(self.urls)
        for worker in list(self.workers.values()):
            if worker.stopping:
                continue
            if worker.generation == generation:
                if worker.slot >= self.count:
                    self._stop(worker, now, "SIGTTOU", "scale-down")
                elif worker.retiring and self._slot_serving(worker.slot):
                    self._stop(worker, now, "replaced after max_requests", "max-requests")
            elif worker.generation < generation and all_serving:
                self._stop(worker, now, f"replaced by generation {generation}", "reload")
        self._release_listeners()

    def _slot_serving(self, slot: int) -> bool:
        return any(
            w.generation == self.generation and w.slot == slot and w.active and w.ready
            for w in self.workers.values()
        )

    def _release_listeners(self) -> None:
        """Close sockets no serving worker can need any more (old binds, slots beyond the count).

        A stopping worker does not keep a socket open here: it holds its own reference, and
        being the last to close it is what lets it accept the connections still queued.
        """
        live = {w.generation for w in self.workers.values()}
        for generation in list(self._plans):
            if generation not in live and generation not in (self.generation, self._stable):
                del self._plans[generation]
        needed: dict[str, int] = dict.fromkeys(self._keys(self.plan), self.count)
        for worker in self.workers.values():
            if worker.stopping:
                continue
            for key in self._keys(self._plans[worker.generation]):
                needed[key] = max(needed.get(key, 0), worker.slot + 1)
        if self._stable is not None:
            for key in self._keys(self._plans[self._stable]):
                needed.setdefault(key, 1)
        for key, listener in list(self.listeners.items()):
            if key in needed:
                listener.trim(needed[key])
            elif key not in self._inherited:
                listener.close()
                del self.listeners[key]

    # reloading ------------------------------------------------------------------------------

    def _reload(self, why: str) -> None:
        try:
            plan = self._reload_plan() if self._reload_plan is not None else self.plan
            if self._adopted(plan):
                logger.info("%s%s: applied to the running workers", self._label, why)
                return
            self._open_listeners(plan)
        except (ValueError, OSError) as exc:
            logger.error("%sreload failed: %s; the current workers keep serving", self._label, exc)
            return
        generation = self._next_generation
        self._next_generation += 1
        self.generation = generation
        self._plans[generation] = plan
        self.plan = plan
        self._start_jobs(plan)
        self.count = plan.workers.workers
        self._failures.clear()
        self._next_spawn.clear()
        self._parked = False
        logger.info(
            "%s%s: starting generation %d (%d workers)", self._label, why, generation, self.count
        )
        if self._watcher is not None:
            self._watcher = SourceWatcher(plan.watch)

    def _adopted(self, plan: ServePlan) -> bool:
        """Whether the current plan took ``plan`` into its running workers (``adopt``)."""
        adopt = self.plan.adopt
        if adopt is None or plan is self.plan:
            return False
        if self._loop is None:
            return adopt(plan)

        # On the loop, as the jobs it changes run there.
        async def on_loop() -> bool:
            return adopt(plan)

        return self._loop.loop.run_until_complete(on_loop())

    def _watch(self, now: float) -> None:
        if self._watcher is None or now < self._next_watch:
            return
        self._next_watch = now + RELOAD_POLL
        changed = self._watcher.changed()
        if changed is not None:
            self._reload(f"{os.path.relpath(changed)} changed")


def install_signals(queue: deque[int]) -> tuple[int, int]:
    """Queue the signals a supervisor handles, for its loop to take in turn, and wake it
    through the returned pipe ``(read end, write end)``. SIGCHLD only wakes it."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)

    def on_signal(signum: int, frame: object) -> None:
        if signum != signal.SIGCHLD:
            queue.append(signum)

    for signum in _FORWARDED_SIGNALS:
        signal.signal(signum, on_signal)
    return wake_r, wake_w


def drain(wake_r: int) -> None:
    with contextlib.suppress(BlockingIOError):
        while os.read(wake_r, 512):
            pass


def reap(reaped: Callable[[int, int], object]) -> None:
    """Hand each child that has exited, and its wait status, to ``reaped``."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        reaped(pid, status)


def restore_signals(wake_r: int, wake_w: int) -> None:
    signal.set_wakeup_fd(-1)
    for signum in _FORWARDED_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for fd in (wake_r, wake_w):
        with contextlib.suppress(OSError):
            os.close(fd)


def _has_channel(plan: ServePlan) -> bool:
    """Whether ``plan``'s workers get a channel from the supervisor: for its jobs' messages,
    and for the stop notice their probe paths (``health_path_prefix``) need."""
    return bool(plan.jobs) or bool(plan.monitor.health_path_prefix)


def _exit_reason(worker: WorkerProcess, code: int) -> str:
    """Why a worker is gone, as the exits metric counts it."""
    if worker.stop_reason is not None:
        return worker.stop_reason
    if not worker.ready:
        return "failed-to-start"
    return "crash" if code != 0 else "exited"


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
