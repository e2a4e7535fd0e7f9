"""The request body as a bounded stream, readable from the loop or from a pool thread.

The connection feeds chunks in on the loop thread as the parser produces them; a handler reads
them either with ``await read()`` on the loop or ``read_blocking()`` on a worker thread. When
more than ``high_water`` bytes are buffered the connection stops reading the socket, and it
resumes once the reader has taken the buffer below ``low_water`` — so a slow consumer of a
large upload holds a bounded amount of memory, and the client is slowed by TCP itself.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from typing import Final

from bastion._compiled import awaiting

HIGH_WATER: Final = 256 * 1024
LOW_WATER: Final = 64 * 1024


class BodyStream:
    __slots__ = (
        "_loop",
        "_chunks",
        "_size",
        "_done",
        "_error",
        "_waiter",
        "_cond",
        "_lock",
        "_on_low_water",
        "_on_first_read",
        "_paused",
        "received",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_low_water: Callable[[], None],
        on_first_read: Callable[[], None] | None,
    ) -> None:
        self._loop = loop
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._cond: threading.Condition | None = None
        self._lock = threading.Lock()
        self._on_low_water = on_low_water
        self._on_first_read = on_first_read
        self._paused = False
        self.received = 0

    @property
    def done(self) -> bool:
        """True once the whole body has arrived (it may still be buffered, unread)."""
        return self._done

    # loop side: the connection ------------------------------------------------------------

    def feed(self, data: bytes) -> bool:
        """Buffer ``data``; return True if the caller should pause reading the socket."""
        with self._lock:
            self._chunks.append(data)
            self._size += len(data)
            self.received += len(data)
            self._paused = self._size > HIGH_WATER
            self._wake()
            return self._paused

    def finish(self) -> None:
        with self._lock:
            self._done = True
            self._wake()

    def abort(self, error: BaseException) -> None:
        with self._lock:
            if not self._done:
                self._error = error
                self._done = True
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if self._cond is not None:
            self._cond.notify_all()

    # reader side ----------------------------------------------------------------------------

    def _take(self) -> bytes | None:
        """Next chunk, b"" at the end, None when nothing is buffered yet. Lock held."""
        if self._chunks:
            chunk = self._chunks.popleft()
            self._size -= len(chunk)
            return chunk
        if self._error is not None:
            raise self._error
        if self._done:
            return b""
        return None

    def _first_read(self) -> None:
        notify = self._on_first_read
        if notify is not None:
            self._on_first_read = None
            notify()

    def _after_take(self, on_loop: bool) -> None:
        if self._paused and self._size <= LOW_WATER:
            self._paused = False
            if on_loop:
                self._on_low_water()
            else:
                self._loop.call_soon_threadsafe(self._on_low_water)

    async def read(self) -> bytes:
        """The next chunk of the body; b"" once it has all been read."""
        self._first_read()
        while True:
            with self._lock:
                chunk = self._take()
                if chunk is None:
                    waiter = self._waiter = self._loop.create_future()
            if chunk is not None:
                self._after_take(on_loop=True)
                return chunk
            await awaiting(waiter)

    def read_blocking(self, timeout: float | None = None) -> bytes:
        """Like :meth:`read`, from a worker thread; TimeoutError if nothing comes in time."""
        if self._on_first_read is not None:
            notify, self._on_first_read = self._on_first_read, None
            self._loop.call_soon_threadsafe(notify)
        with self._lock:
            if self._cond is None:
                self._cond = threading.Condition(self._lock)
            while True:
                chunk = self._take()
                if chunk is not None:
                    break
                if not self._cond.wait(timeout):
                    raise TimeoutError("timed out waiting for the request body")
        self._after_take(on_loop=False)
        return chunk

    async def read_all(self) -> bytes:
        parts = []
        while chunk := await self.read():
            parts.append(chunk)
        return b"".join(parts)

    def read_all_blocking(self, timeout: float | None = None) -> bytes:
        parts = []
        while chunk := self.read_blocking(timeout):
            parts.append(chunk)
        return b"".join(parts)
