"""After a handler's ``101 Switching Protocols``: its ``rfile`` and ``wfile`` are the connection.

That is how WebSocket servers are written on ``http.server``: answer the upgrade with
``send_response(101)``, then read frames from ``rfile`` and write frames to ``wfile`` until
done. Here the event loop keeps the socket (its write timeout, its count of connections, its
graceful shutdown); :class:`Tunnel` is the peer the engine hands the switched connection to
(``Exchange.switch_protocols``), and carries bytes between it and the handler's thread with
backpressure both ways: reading stops while the handler has more than ``limit`` bytes unread,
and the handler waits while more than ``limit`` bytes are on their way to a slow client.
"""

from __future__ import annotations

import threading

from bastion.engine.errors import ClientDisconnected
from bastion.engine.exchange import Exchange


class Tunnel:
    """The switched connection, seen from a handler thread as blocking reads and writes."""

    def __init__(self, exchange: Exchange, limit: int = 256 * 1024) -> None:
        self._exchange = exchange
        self._conn = exchange.conn
        self._loop = exchange.conn.loop
        self._limit = limit
        self._lock = threading.Condition()
        self._received = bytearray()
        self._eof = False
        self._reading_paused = False
        self._in_flight = 0
        self._closed = False

    # the engine's side (on the loop) --------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        with self._lock:
            self._received += data
            if len(self._received) > self._limit and not self._reading_paused:
                self._reading_paused = True
                self._conn.pause_reading()
            self._lock.notify_all()

    def eof_received(self) -> None:
        with self._lock:
            self._eof = True
            self._lock.notify_all()

    def connection_lost(self, exc: Exception | None) -> None:
        with self._lock:
            self._eof = self._closed = True
            self._lock.notify_all()

    # the handler's side (on its thread) -----------------------------------------------------

    def receive(self, size: int, timeout: float | None) -> bytes:
        """Up to ``size`` bytes, waiting for at least one; b"" once the client is done."""
        with self._lock:
            if not self._lock.wait_for(lambda: self._received or self._eof, timeout):
                raise TimeoutError("nothing received on the switched connection in time")
            data = bytes(self._received[:size])
            del self._received[:size]
            if self._reading_paused and len(self._received) <= self._limit // 2:
                self._reading_paused = False
                self._loop.call_soon_threadsafe(self._conn.resume_reading)
            return data

    def send(self, data: bytes, timeout: float | None) -> None:
        if not data:
            return
        with self._lock:
            if not self._lock.wait_for(
                lambda: self._in_flight <= self._limit or self._closed, timeout
            ):
                raise TimeoutError("client stopped reading the switched connection")
            if self._closed:
                raise ClientDisconnected("client disconnected")
            self._in_flight += len(data)
        self._loop.call_soon_threadsafe(self._write_on_loop, data)

    def close(self) -> None:
        """The handler is done: close once what it wrote has been sent."""
        self._loop.call_soon_threadsafe(self._conn.close)

    def _write_on_loop(self, data: bytes) -> None:
        self._conn.write(data)
        self._conn.when_writable(lambda: self._sent(len(data)))

    def _sent(self, size: int) -> None:
        with self._lock:
            self._in_flight -= size
            self._lock.notify_all()
