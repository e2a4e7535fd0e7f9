"""One line per request, in ``http.server``'s format, written without stalling the loop.

Lines are collected as requests finish and written together once per turn of the event loop,
so a burst of requests costs one ``write`` to the terminal, not one each.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from bastion.engine.exchange import Exchange

_MONTHS = (None, "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class AccessLog:
    """A request observer (``Stats.request_observers``) printing ``http.server``-style lines."""

    def __init__(self, stream: TextIO, loop: asyncio.AbstractEventLoop) -> None:
        self._stream = stream
        self._loop = loop
        self._lines: list[str] = []
        self._second = -1
        self._stamp = ""

    def _now(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._second = second
            t = time.localtime(second)
            self._stamp = (
                f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon]}/{t.tm_year:04d} "
                f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
            )
        return self._stamp

    def __call__(self, exchange: Exchange, duration: float) -> None:
        head = exchange.head
        client = exchange.client
        target = head.target.decode("latin-1").encode("unicode_escape").decode("ascii")
        size = exchange.bytes_sent if exchange.status not in (204, 304) else 0
        line = (
            f"{client[0] if client else '-'} - - [{self._now()}] "
            f'"{head.method} {target} HTTP/{head.version}" {exchange.status} '
            f"{size if size else '-'}\n"
        )
        if not self._lines:
            self._loop.call_soon(self.flush)
        self._lines.append(line)

    def flush(self) -> None:
        lines, self._lines = self._lines, []
        if lines:
            try:
                self._stream.write("".join(lines))
                self._stream.flush()
            except (OSError, ValueError):
                pass  # a closed terminal must not take the server down
