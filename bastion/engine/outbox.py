"""What the connections write in one turn of the event loop leaves together, at its end.

A response written the moment it is ready wakes a client that waits on the same machine (a
local proxy, a load generator, a sidecar) once per response, and on a virtual machine each
wake-up is an interrupt to another core that costs the writer more than the write. When
one turn of the loop answers many connections, holding their bytes until the turn has
served every connection that was ready and then writing them back to back lets the peer
find many responses at one wake-up. The system calls are the same, one ``send`` per
connection per turn; what goes is the wake-ups (docs/benchmarks.md has the figures).

The thread pool hands its results out as one batch (:meth:`Outbox.begin_batch`), so what
they write leaves when the last is handed out, with no callback of its own. Other senders
than the engine's connections hold their writes here too (:meth:`Outbox.later`): the
balancer's requests to its upstreams leave together in the same way.

A long turn (a handler that blocks the loop, or a flood of ready connections) lets what it
holds go early: a held response waits for at most about ``HOLD_TIME`` of other work, or
behind at most ``HOLD_COUNT`` other connections. Bytes go straight to the socket, whatever
was held, when a write is large (backpressure must apply at once), before a connection
closes, before a file is sent or a tunnel half-closed, and when a stream waits for room in
the transport (what it wrote must count against the backpressure it waits on).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from bastion.engine.connection import HTTPConnection

HOLD_TIME: Final = 0.0005
HOLD_COUNT: Final = 64
# What one sender holds at most: a larger write goes out at once, with what is held before it,
# so that the transport applies backpressure while its writer still runs.
HOLD_BYTES: Final = 16 * 1024
# The clock is read on every eighth hold, not on each: a response then waits for at most
# HOLD_TIME plus seven other handlers.
_CLOCK_EVERY: Final = 7
_CLOCK: Final = perf_counter

logger = logging.getLogger("bastion.error")


class Outbox:
    """The connections holding writes in this turn; released together by one callback."""

    __slots__ = ("_loop", "_held", "_sends", "_opened", "_batch", "_due")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._held: list[HTTPConnection] = []
        self._sends: list[Callable[[], None]] = []
        self._opened = 0.0
        self._batch = False
        # A release is scheduled for the end of this turn (an early one leaves it scheduled).
        self._due = False

    def hold(self, conn: HTTPConnection) -> None:
        """``conn`` has begun holding writes: release them when this turn's work is done."""
        held = self._held
        held.append(conn)
        count = len(held)
        if count == 1:
            self._opened = _CLOCK()
            self._schedule()
        elif count & _CLOCK_EVERY == 0 and (
            count >= HOLD_COUNT or _CLOCK() - self._opened > HOLD_TIME
        ):
            self.release()

    def later(self, send: Callable[[], None]) -> None:
        """Call ``send`` when this turn's held writes are released; it writes what its owner
        held back (which goes out at once, instead, if anything else is written after it)."""
        self._sends.append(send)
        self._schedule()

    def _schedule(self) -> None:
        if not self._due and not self._batch:
            self._due = True
            self._loop.call_soon(self._release_due)

    def _release_due(self) -> None:
        self._due = False
        self.release()

    def release(self) -> None:
        sends = self._sends
        if sends:
            # First: a proxy's upstream requests have the longer way to go.
            self._sends = []
            for send in sends:
                try:
                    send()
                except Exception:
                    logger.exception("cannot send a held request")
        held = self._held
        if held:
            self._held = []
            for conn in held:
                try:
                    conn.release_writes()
                except Exception:
                    # One connection's failure must not leave the others' responses held.
                    logger.exception("cannot send a held response")
                    conn.abort()

    def begin_batch(self) -> None:
        """Work done in one callback until :meth:`end_batch` (the thread pool handing out its
        results) writes together, and needs no callback of its own to release it."""
        self._batch = True

    def end_batch(self) -> None:
        self._batch = False
        self.release()
