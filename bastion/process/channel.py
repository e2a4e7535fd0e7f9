"""Messages from the supervisor to its workers: the reverse of the workers' telemetry.

A plan may give the supervisor *jobs* (``ServePlan.jobs``): work that must be done once for
the whole server rather than once per worker, such as the balancer's active health checks.
They run on the supervisor's event loop (:mod:`bastion.process.loop`), whether or not there
is an admin listener, and tell the workers what they find with ``broadcast(message)``.

A message is a small dict of JSON values. Each worker has its own datagram socket pair with
the supervisor, made when it is forked; a worker that starts is first sent every job's
current state (``job.state()``), then every message broadcast after that, in order. In the
worker, each is handed, on its event loop, to the handler's optional
``supervisor_message(message)`` hook (wrappers let it show through); messages the worker
was sent before it started serving are handed over before the handler's ``startup``, so its
first request already sees them.

Sends never block the supervisor. What a worker has not read yet waits in the supervisor, a
datagram per loop iteration carrying every message broadcast in it; a worker so far behind
that :data:`MAX_BACKLOG` messages wait for it is sent the current state instead, which is
all a job's messages amount to.

The supervisor also has news of its own for the workers rather than their handler: a
*notice* (:meth:`Broadcaster.notify`), such as :data:`STOPPING` the moment it is told to stop,
so the probe paths on the main listener fail readiness while the shutdown delay keeps the
worker serving. A notice reaches every live worker and every worker forked after it, and is
handed to the worker's ``notice`` callback, never to the handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

logger = logging.getLogger("bastion.error")

Message = dict[str, Any]
Broadcast = Callable[[Message], None]

# A datagram is delivered whole or not at all; a message must fit in one.
MAX_DATAGRAM = 64 * 1024
MAX_BACKLOG = 10_000
_BUFFER = 1 << 20
# A job that fails is started again after this long, so a bug cannot spin the supervisor.
RESTART_DELAY = 1.0
# The key of the supervisor's own messages (notices), which the worker takes for itself.
NOTICE = "bastion-notice"
# The notice that the server is stopping (SIGTERM, SIGINT): readiness fails from now on.
STOPPING = "stopping"


class SupervisorJob(Protocol):
    """Work the supervisor runs for a plan, once for all the workers."""

    async def run(self, broadcast: Broadcast) -> None:
        """Work until cancelled, sending messages to every live worker with ``broadcast``.

        Called again after a reload that rolls back to this plan, so it must be able to
        run more than once. A socket it holds while a worker is forked is copied into that
        worker: close it in the child (``os.register_at_fork``) unless the loop watches it.
        """

    def state(self) -> list[Message]:
        """What a worker that starts now must be told first (the current state).

        A job may also answer on the admin listener: see :meth:`Monitor.serve_jobs
        <bastion.process.monitor.Monitor.serve_jobs>` (``admin_routes``).
        """


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """``(supervisor's end, worker's end)`` of one worker's channel."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for sock in (ours, theirs):
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
    return ours, theirs


def encode_message(message: Message) -> bytes:
    """One message as JSON; ValueError if it could never be sent."""
    data = json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
    if len(data) + 2 > MAX_DATAGRAM:
        raise ValueError(f"a supervisor message must fit in {MAX_DATAGRAM} bytes")
    return data


def decode(data: bytes) -> list[Message]:
    """The messages one datagram carries (none if it is not one of ours)."""
    try:
        messages = json.loads(data)
    except ValueError:
        return []
    if not isinstance(messages, list):
        return []
    return [message for message in messages if isinstance(message, dict)]


class Outbox:
    """The supervisor's end of one worker's channel, and what waits to go through it."""

    def __init__(self, sock: socket.socket, resync: Callable[[], list[bytes]]) -> None:
        self.sock = sock
        self._resync = resync
        self._queue: deque[bytes] = deque()
        self._size = 0

    @property
    def pending(self) -> int:
        return len(self._queue)

    def put(self, messages: Iterable[bytes]) -> None:
        self._queue.extend(messages)
        if len(self._queue) > MAX_BACKLOG:
            self._queue = deque(self._resync())

    def flush(self) -> None:
        """Send what waits, as few datagrams as it fits in, until the worker's queue is full."""
        queue = self._queue
        while queue:
            batch: list[bytes] = []
            size = 2
            while queue and size + len(queue[0]) + 1 <= MAX_DATAGRAM:
                item = queue.popleft()
                batch.append(item)
                size += len(item) + 1
            try:
                self.sock.send(b"[" + b",".join(batch) + b"]")
            except BlockingIOError:
                queue.extendleft(reversed(batch))
                return
            except OSError:  # the worker is gone; it is reaped and detached soon
                queue.clear()
                return

    def close(self) -> None:
        self._queue.clear()
        self.sock.close()


class Broadcaster:
    """Runs a plan's jobs on the supervisor's loop and carries their messages to workers."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.jobs: list[SupervisorJob] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._outboxes: dict[int, Outbox] = {}
        self._flush_soon: asyncio.Handle | None = None
        self._notices: list[str] = []

    def start(self, jobs: Sequence[SupervisorJob]) -> None:
        """Run ``jobs`` (a new plan's) in place of those running now."""
        self.stop()
        self.jobs = list(jobs)
        self._tasks = [self.loop.create_task(self._keep_running(job)) for job in self.jobs]

    def stop(self) -> None:
        """Cancel the jobs; the cancellation takes effect the next time the loop runs."""
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        self.jobs = []

    def close(self, timeout: float = 2.0) -> None:
        """Stop the jobs, let them finish on the loop, and close every worker's channel."""
        tasks = self._tasks
        self.stop()
        if tasks:
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(asyncio.wait(tasks, timeout=timeout))
        for outbox in self._outboxes.values():
            outbox.close()
        self._outboxes.clear()

    def attach(self, pid: int, sock: socket.socket) -> None:
        """A worker was forked with the other end of ``sock``: send it the current state."""
        outbox = Outbox(sock, self.state)
        outbox.put(self.state())
        outbox.flush()
        self._outboxes[pid] = outbox

    def detach(self, pid: int) -> None:
        outbox = self._outboxes.pop(pid, None)
        if outbox is not None:
            outbox.close()

    def child_fds(self) -> list[int]:
        """What a forked worker must close: the supervisor's end of every channel."""
        return [outbox.sock.fileno() for outbox in self._outboxes.values()]

    def state(self) -> list[bytes]:
        messages = [encode_message({NOTICE: notice}) for notice in self._notices]
        for job in self.jobs:
            try:
                messages.extend(encode_message(message) for message in job.state())
            except Exception:  # a job's bug must not stop a worker from starting
                logger.exception("cannot send a job's state to a new worker")
        return messages

    def broadcast(self, message: Message) -> None:
        """Send ``message`` to every live worker (raises ValueError if it is too large)."""
        self._send(encode_message(message))

    def notify(self, notice: str) -> None:
        """Tell every live worker, and every worker forked from now on, ``notice`` (once)."""
        if notice in self._notices:
            return
        self._notices.append(notice)
        self._send(encode_message({NOTICE: notice}))

    def _send(self, data: bytes) -> None:
        for outbox in self._outboxes.values():
            outbox.put((data,))
        # Everything broadcast in one pass of the loop leaves in one datagram.
        if self._flush_soon is None:
            self._flush_soon = self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send what waits for each worker; the supervisor also calls it on every tick, for
        workers whose queue was full."""
        if self._flush_soon is not None:
            self._flush_soon.cancel()
            self._flush_soon = None
        for outbox in self._outboxes.values():
            outbox.flush()

    async def _keep_running(self, job: SupervisorJob) -> None:
        while True:
            try:
                await job.run(self.broadcast)
                return
            except Exception:
                logger.exception("a supervisor job failed; starting it again")
            await asyncio.sleep(RESTART_DELAY)


class Inbox:
    """The worker's end of its channel: hands each message to ``deliver`` (the handler's
    ``supervisor_message``), or drops it when the handler has no such hook, and each of the
    supervisor's notices to ``notice``."""

    def __init__(
        self,
        sock: socket.socket,
        deliver: Callable[[Message], object] | None,
        notice: Callable[[str], object] | None = None,
    ) -> None:
        self.sock = sock
        self.deliver = deliver
        self.notice = notice
        sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> None:
        """Deliver every message waiting now."""
        while True:
            try:
                data = self.sock.recv(MAX_DATAGRAM)
            except OSError:  # nothing more waiting, or the supervisor is gone
                return
            if not data:
                return
            for message in decode(data):
                notice = message.get(NOTICE)
                if notice is not None:
                    if self.notice is not None and isinstance(notice, str):
                        self.notice(notice)
                    continue
                if self.deliver is None:
                    continue
                try:
                    self.deliver(message)
                except Exception:  # the handler's bug is a log line, not a dead worker
                    logger.exception("the handler failed on a message from the supervisor")
