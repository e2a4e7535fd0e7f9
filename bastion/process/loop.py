"""The supervisor's event loop: it runs only while the supervisor waits.

The supervisor is a plain loop that waits on pipes and forks. When something must happen
meanwhile (the admin listener and the workers' telemetry, :mod:`bastion.process.monitor`;
the plan's jobs, :mod:`bastion.process.channel`), that wait runs an asyncio event loop (the
standard library's, not uvloop: the supervisor forks while it exists, and a child must be
able to drop it). The loop never runs while the supervisor forks, so a child starts with no
running loop and no thread besides its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable


class SupervisorLoop:
    """An asyncio loop run by :meth:`wait`, in place of ``select``."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def wait(self, fds: Iterable[int], timeout: float) -> set[int]:
        """Like ``select`` on ``fds`` for reading, running the loop's work meanwhile."""
        loop = self.loop
        ready: set[int] = set()
        woken: asyncio.Future[None] = loop.create_future()

        def readable(fd: int) -> None:
            ready.add(fd)
            if not woken.done():
                woken.set_result(None)

        def expired() -> None:
            if not woken.done():
                woken.set_result(None)

        watched = list(fds)
        for fd in watched:
            loop.add_reader(fd, readable, fd)
        timer = loop.call_later(timeout, expired)
        try:
            loop.run_until_complete(woken)
        finally:
            timer.cancel()
            for fd in watched:
                loop.remove_reader(fd)
        return ready

    def child_fds(self) -> list[int]:
        """What a forked worker must close: the loop's selector and self-pipe, and every
        descriptor the loop watches (the supervisor's connections, not the worker's)."""
        fds: list[int] = []
        selector = getattr(self.loop, "_selector", None)
        if selector is not None:
            fds.append(selector.fileno())
            with contextlib.suppress(Exception):
                fds.extend(key.fd for key in selector.get_map().values())
        for name in ("_ssock", "_csock"):  # the loop's self-pipe
            sock = getattr(self.loop, name, None)
            if sock is not None:
                fds.append(sock.fileno())
        return [fd for fd in fds if fd >= 0]

    def close(self) -> None:
        loop = self.loop
        with contextlib.suppress(Exception):
            loop.run_until_complete(asyncio.sleep(0))
        loop.close()
