"""A supervisor job that reloads when a file's contents change: what SIGHUP does, unasked.

``bastion balance --config lb.toml`` watches its file this way, so an edit takes effect
within about a second. It reads the file once a second (a config file is small; reading it
is what sees an edit that kept the size and the modification time) and, when the contents
differ from those last loaded, sends SIGHUP to the supervisor, which reloads exactly as when
an operator sends it: in place when the plan can take it, with new workers otherwise, and
not at all (one log line) when the new file is refused. A file being written is read again
at the next poll, so a half-written file that was refused is followed by the finished one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

logger = logging.getLogger("bastion.error")

POLL = 1.0


class FileWatch:
    """Watches ``path``; :attr:`loaded` is what the running configuration was read from,
    set by whoever reads it (see :meth:`read`)."""

    def __init__(self, path: str, poll: float = POLL) -> None:
        self.path = path
        self.poll = poll
        self.loaded = self.read()
        self._asked: bytes | None = self.loaded

    def read(self) -> bytes | None:
        """The file's contents now (None when it cannot be read)."""
        try:
            with open(self.path, "rb") as file:
                return file.read()
        except OSError:
            return None

    async def run(self, broadcast: Any) -> None:
        while True:
            await asyncio.sleep(self.poll)
            current = self.read()
            # Asked once per new contents: a refused file is not retried until it changes.
            if current != self.loaded and current != self._asked:
                self._asked = current
                logger.info("%s changed: reloading", self.path)
                os.kill(os.getpid(), signal.SIGHUP)

    def state(self) -> list[dict[str, Any]]:
        return []
