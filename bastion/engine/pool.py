"""A bounded thread pool for blocking handlers, with hand-offs paid per batch, not per job.

The loop thread is the only one that submits and the only one that counts, so the bound needs
no lock: a job is counted from ``try_submit`` until its completion callback runs back on the
loop. When ``threads`` jobs run and ``queue_size`` more wait, ``try_submit`` says no at once and
the caller answers 503: overload becomes a fast refusal instead of an unbounded queue.

Waking a thread is what a hand-off costs: a futex wake, and on a busy core a context switch
to a thread that only finds the GIL taken and sleeps again. So a thread is woken only when no
thread is already on its way to the queue, and not before the loop has read all it can, so
that one thread takes the whole batch. Results come back the same way: a thread posts one
callback to the loop for whatever finished while the previous one had not run yet, and that
callback hands over every result waiting. Under load one wake-up each way serves a batch.

A job may block, and those queued behind it must not wait for it while a thread is idle.
A thread that takes a job with others waiting behind it makes sure that callback is posted
before it runs the job: the loop then wakes, waits for the GIL, and gets it as soon as the
job blocks (or at the interpreter's switch interval, if it computes), and its callback wakes
a thread for whatever is still queued. When nothing blocks, that callback is the one that
collects the batch's results: no thread is woken only to find the queue empty.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from bastion.engine.outbox import Outbox

logger = logging.getLogger("bastion.error")

Job = Callable[[], Any]
Done = Callable[[Any, BaseException | None], None]


class ThreadPool:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        threads: int,
        queue_size: int,
        name: str = "bastion-worker",
        outbox: Outbox | None = None,
    ) -> None:
        self._loop = loop
        # What the results' callbacks write leaves together once they have all run.
        self._outbox = outbox
        self._max_threads = threads
        self._capacity = threads + queue_size
        self._name = name
        self._jobs: deque[tuple[Job, Done]] = deque()
        self._threads: list[threading.Thread] = []
        # Under ``_lock``: parked threads (each waits on its own held lock) and how many
        # threads were woken or started and have not yet looked at the queue.
        self._lock = threading.Lock()
        self._idle: list[threading.Lock] = []
        self._waking = 0
        # Results on their way to the loop, and whether a callback to collect them is posted.
        self._results: deque[tuple[Done, Any, BaseException | None]] = deque()
        self._collect_posted = False
        # Whether a wake-up is posted for the end of the loop's current round (loop thread).
        self._wake_posted = False
        self.pending = 0
        self._closed = False

    @property
    def capacity(self) -> int:
        return self._capacity

    def try_submit(self, job: Job, done: Done) -> bool:
        """Run ``job`` on a worker, then ``done(result, error)`` on the loop; False when full."""
        if self.pending >= self._capacity or self._closed:
            return False
        self.pending += 1
        self._jobs.append((job, done))
        # Read after the append: a thread that stops waking after our read finds the job.
        if not self._waking and not self._wake_posted:
            # Not now: uvloop lets go of the GIL between two reads, and a thread woken here
            # would take it to run this one job. Once this round of reads is over, every job
            # it brought is queued and one thread takes them all.
            self._wake_posted = True
            self._loop.call_soon(self._wake_after_reads)
        return True

    def _wake_after_reads(self) -> None:
        self._wake_posted = False
        if not self._waking:
            self._wake_one()

    def _wake_one(self) -> None:
        with self._lock:
            if self._waking or not self._jobs:
                return
            if self._idle:
                self._waking += 1
                self._idle.pop().release()
            elif len(self._threads) < self._max_threads:
                self._waking += 1
                self._start_thread()

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        jobs = self._jobs
        lock = self._lock
        wake = threading.Lock()
        wake.acquire()
        with lock:
            self._waking -= 1
        while True:
            try:
                job, done = jobs.popleft()
            except IndexError:
                with lock:
                    # A job submitted after our look woke no one: take it instead of waiting.
                    missed = bool(jobs)
                    if not missed:
                        if self._closed:
                            return
                        self._idle.append(wake)
                if missed:
                    continue
                wake.acquire()
                with lock:
                    self._waking -= 1
                continue
            # Others wait behind this job, which may block: see the module's docstring.
            if jobs and not self._collect_posted and not self._post_collect():
                return
            error: BaseException | None
            try:
                result = job()
            except BaseException as exc:
                result, error = None, exc
            else:
                error = None
            if not self._post(done, result, error):
                return

    def _post(self, done: Done, result: Any, error: BaseException | None) -> bool:
        """Hand a result to the loop; False when the loop is closed (nobody awaits it)."""
        self._results.append((done, result, error))
        # Read after the append: ``_collect`` clears the flag before it takes the results.
        return self._collect_posted or self._post_collect()

    def _post_collect(self) -> bool:
        self._collect_posted = True
        try:
            self._loop.call_soon_threadsafe(self._collect)
        except RuntimeError:
            return False  # the loop is closed: the server is gone
        return True

    def _collect(self) -> None:
        self._collect_posted = False
        results = self._results
        outbox = self._outbox
        if outbox is not None:
            outbox.begin_batch()
        try:
            while results:
                done, result, error = results.popleft()
                self.pending -= 1
                try:
                    done(result, error)
                except Exception:
                    logger.exception("error in thread pool completion callback")
        finally:
            if outbox is not None:
                outbox.end_batch()
        # Read after the flag is cleared: a thread that took a job with others queued behind
        # it, and saw the flag set, counts on this look (see _work).
        if self._jobs and not self._waking:
            self._wake_one()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Let running and queued jobs finish (up to ``timeout`` in total), then stop the
        threads."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._waking += len(idle)
        for wake in idle:
            wake.release()
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
