"""What every connection of one server shares, compiled: connections read it on every request.

A Python object's attributes are looked up by name each time compiled code reads them; a
compiled class's are read in place. The deadlines a connection starts on every request are
copied out of the configuration for the same reason (it does not change once serving).
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import TYPE_CHECKING

from bastion.engine.config import ServerConfig
from bastion.engine.handler import Handler
from bastion.engine.outbox import Outbox
from bastion.engine.pool import ThreadPool
from bastion.engine.stats import Stats
from bastion.engine.steps import FirstSteps
from bastion.http import format_date

if TYPE_CHECKING:
    from bastion.engine.connection import HTTPConnection


class ServerState:
    """What every connection of one server shares; read on the hot path, so kept flat."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, handler: Handler, config: ServerConfig
    ) -> None:
        self.loop = loop
        self.handler = handler
        self.config = config
        self.header_timeout: float = config.header_timeout
        self.body_timeout: float = config.body_timeout
        self.keepalive_timeout: float = config.keepalive_timeout
        self.max_pipelined: int = config.max_pipelined
        self.stats = Stats()
        self.connections: set[HTTPConnection] = set()
        self.draining = False
        self.sockets: list[socket.socket] = []
        self.now: float = loop.time()
        self._second = 0
        self.date_line = b""
        self.server_lines = b""
        self.outbox = Outbox(loop)
        self.pool = ThreadPool(loop, config.threads, config.queue_size, outbox=self.outbox)
        # The first steps of the requests' coroutines, run on this loop (before 3.12).
        self.first_steps = FirstSteps()
        # What layers above the engine keep per server (the WebSocket counters), each under a
        # key of its own: a compiled object takes no attributes it does not declare, nor
        # weak references.
        self.attached: dict[object, object] = {}
        self.tick_clock()

    def tick_clock(self) -> None:
        """Refresh the coarse clock and, once a second, the cached Date/Server header lines."""
        self.now = self.loop.time()
        wall = time.time()
        second = int(wall)
        if second != self._second:
            self._second = second
            self.date_line = format_date(wall)
            server = (
                f"server: {self.config.server_name}\r\n".encode("latin-1")
                if self.config.server_header
                else b""
            )
            self.server_lines = server + self.date_line
