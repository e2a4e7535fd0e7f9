"""A bounded thread pool for blocking handlers.

The loop thread is the only one that submits and the only one that counts, so the bound needs
no lock: a job is counted from ``try_submit`` until its completion callback runs back on the
loop. When ``threads`` jobs run and ``queue_size`` more wait, ``try_submit`` says no at once and
the caller answers 503: overload becomes a fast refusal instead of an unbounded queue.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

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
    ) -> None:
        self._loop = loop
        self._max_threads = threads
        self._capacity = threads + queue_size
        self._name = name
        self._jobs: queue.SimpleQueue[tuple[Job, Done] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
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
        if self.pending > len(self._threads) and len(self._threads) < self._max_threads:
            self._start_thread()
        self._jobs.put((job, done))
        return True

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
        )
        thread.start()
        self._threads.append(thread)

    def _work(self) -> None:
        jobs = self._jobs
        call_back = self._loop.call_soon_threadsafe
        finish = self._finish
        while True:
            item = jobs.get()
            if item is None:
                return
            job, done = item
            error: BaseException | None
            try:
                result = job()
            except BaseException as exc:
                result, error = None, exc
            else:
                error = None
            try:
                call_back(finish, done, result, error)
            except RuntimeError:
                return  # the loop is closed: the server is gone, nobody awaits the answer

    def _finish(self, done: Done, result: Any, error: BaseException | None) -> None:
        self.pending -= 1
        try:
            done(result, error)
        except Exception:
            logger.exception("error in thread pool completion callback")

    def shutdown(self, timeout: float = 5.0) -> None:
        """Let running jobs finish (up to ``timeout`` in total), then stop the threads."""
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join(timeout)
