"""``rfile`` and ``wfile`` for ``http.server`` handlers running on a worker thread.

``rfile`` yields exactly the request body (de-chunked), never a byte of the next request, and
waits for the network without holding the event loop. ``wfile`` takes whatever the handler
writes — ``send_response``/``send_header``/``end_headers`` output and raw bytes alike — and
parses it as an HTTP response with llhttp, so the engine knows where the response ends, frames
it for keep-alive, and can refuse a handler that writes a broken head or more than one
response. Writes are buffered and pushed to the loop on ``flush()``, every 64 KiB, and when
the handler returns; a small response therefore leaves in one packet.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import httptools

from bastion.compat.tunnel import Tunnel
from bastion.engine.exchange import Exchange, ThreadWriter
from bastion.http import encode_headers, reason_phrase, status_line

logger = logging.getLogger("bastion.error")

_PUSH_SIZE = 64 * 1024
# Framing and hop-by-hop fields are the engine's to write; it writes them from what it learns
# here (length, chunking, whether the connection stays open).
_ENGINE_FIELDS = frozenset({"content-length", "transfer-encoding", "connection"})


def _send_interim(exchange: Exchange, status: int, head: bytes) -> None:
    # RFC 9110 §15.2: no 1xx to an HTTP/1.0 client, and none once the final response began.
    if exchange.started or exchange.finished or exchange.head.version != "1.1":
        return
    if status == 100:
        # handle_expect_100's 100 Continue; the engine would otherwise send its own when the
        # handler first reads the body. Either way there is one.
        if exchange.continue_sent:
            return
        exchange.continue_sent = True
    exchange.conn.write(head)


def _switch_on_loop(exchange: Exchange, head: bytes, tunnel: Tunnel) -> None:
    try:
        exchange.switch_protocols(head, tunnel)
    except Exception:
        # The request ended meanwhile (its client left): the handler reads EOF.
        tunnel.connection_lost(None)


class RequestBodyReader(io.BufferedIOBase):
    """The request body as a binary file; EOF where the body ends."""

    def __init__(self, exchange: Exchange, timeout: float) -> None:
        self._exchange = exchange
        self.timeout = timeout
        # After a protocol switch a quiet peer is normal (a WebSocket between messages): no
        # deadline unless the handler sets one (settimeout); the engine's shutdown ends it.
        self.tunnel_timeout: float | None = None
        self.writer: ResponseWriter | None = None
        self._buffer = b""
        self._eof = False

    def readable(self) -> bool:
        return True

    def _fill(self) -> bool:
        """Append the next chunk to the buffer; False at the end of the body."""
        writer = self.writer
        if writer is not None:
            # What the handler wrote goes out before it waits for an answer to it (a 101,
            # a 100 Continue): the client may be waiting for exactly that.
            writer.flush()
            tunnel = writer.tunnel
            if tunnel is not None:
                received = tunnel.receive(_PUSH_SIZE, self.tunnel_timeout)
                self._buffer += received
                return bool(received)
        if self._eof:
            return False
        # The body stream is only made when a handler reads: most GETs never do.
        chunk = self._exchange.body.read_blocking(self.timeout)
        if not chunk:
            self._eof = True
            return False
        self._buffer += chunk
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill():
                pass
            data, self._buffer = self._buffer, b""
            return data
        while len(self._buffer) < size and self._fill():
            pass
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def read1(self, size: int = -1) -> bytes:
        if not self._buffer:
            self._fill()
        if size < 0:
            size = len(self._buffer)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None else size
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0 and (limit < 0 or end < limit):
                cut = end + 1
                break
            if 0 <= limit <= len(self._buffer):
                cut = limit
                break
            if not self._fill():
                cut = len(self._buffer)
                break
        line, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return line

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


class HandlerOutputError(Exception):
    """What the handler wrote is not one well-formed HTTP response."""


class ResponseWriter(io.BufferedIOBase):
    """``wfile``: parses the handler's output and hands it to the engine."""

    def __init__(self, exchange: Exchange) -> None:
        self._exchange = exchange
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[str, str]] = []
        self._reason = b""
        self._status = 0
        self._content_length: int | None = None
        self._chunked = False
        self._head_ready = False
        self._complete = False
        self._body: list[bytes] = []
        self._started = False
        self._writer: ThreadWriter | None = None
        self._failed = False
        self.bytes_written = 0
        self.close_connection = False
        self._keep_alive = False
        self._switch_head = b""
        self.tunnel: Tunnel | None = None

    # the file API ---------------------------------------------------------------------------

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("write to closed file")
        if self.tunnel is not None:
            self.tunnel.send(bytes(data), self._exchange.conn.write_timeout)
            return len(data)
        chunk = bytes(data)
        if chunk:
            self._pending.append(chunk)
            self._pending_size += len(chunk)
            self.bytes_written += len(chunk)
            if self._pending_size >= _PUSH_SIZE:
                self._push(final=False)
        return len(chunk)

    def flush(self) -> None:
        if self._pending:
            self._push(final=False)

    def close(self) -> None:
        # Handlers sometimes close wfile; the response is finished by the adapter, not here.
        pass

    # parsing the handler's output -------------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head_ready:
            return  # a trailer: not forwarded
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status == 101:
            self._switch_head = self._head_bytes(status)
            return
        if status < 200:
            self._interim(status)
            return
        if self._status:
            raise HandlerOutputError("the handler wrote a second response")
        self._status = status
        kept = []
        for name, value in self._headers:
            lowered = name.lower()
            if lowered == "content-length":
                self._content_length = int(value)
            elif lowered == "transfer-encoding":
                self._chunked = "chunked" in value.lower()
            elif lowered == "connection":
                # As the standard library's send_header: the handler's word decides.
                if "close" in value.lower():
                    self.close_connection = True
                elif "keep-alive" in value.lower():
                    self._keep_alive = True
            elif lowered in ("server", "date"):
                self._exchange.add_server_lines = False
            if lowered not in _ENGINE_FIELDS:
                kept.append((name, value))
        self._headers = kept
        self._head_ready = True

    def _interim(self, status: int) -> None:
        """An interim response (``send_response_only(1xx)``) goes out as written, ahead of the
        final one; on the loop, so it keeps its place among the writes."""
        exchange = self._exchange
        exchange.call_threadsafe(_send_interim, exchange, status, self._head_bytes(status))

    def _head_bytes(self, status: int) -> bytes:
        """A response head as the handler wrote it (reason and fields), checked again."""
        head = b"".join(
            (
                status_line(status, self._reason.decode("latin-1")),
                encode_headers(self._headers),
                b"\r\n",
            )
        )
        self._headers = []
        self._reason = b""
        return head

    def on_body(self, data: bytes) -> None:
        self._body.append(data)

    def on_message_complete(self) -> None:
        if self._status:
            self._complete = True

    def on_message_begin(self) -> None:
        if self._complete:
            raise HandlerOutputError("the handler wrote past the end of its response")

    def _push(self, final: bool) -> None:
        if self._failed:
            self._pending.clear()
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_size = 0
        if data:
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserUpgrade as upgrade:
                self._switch(data[int(upgrade.args[0]) :])
                return
            except (httptools.HttpParserError, HandlerOutputError, ValueError) as exc:
                cause = exc.__context__ if isinstance(exc.__context__, HandlerOutputError) else exc
                self._fail(f"invalid response from handler: {cause}")
                return
        if not self._head_ready:
            if final:
                what = "an incomplete response head" if self.bytes_written else "no response"
                self._fail(f"handler wrote {what}")
            return
        self._forward(final)

    def _switch(self, after: bytes) -> None:
        """The handler answered 101: the connection becomes its rfile and wfile."""
        exchange = self._exchange
        if not self._switch_head or not exchange.head.upgrade or exchange.head.version != "1.1":
            self._fail("handler switched protocols for a request that did not ask to")
            return
        self._started = True
        tunnel = self.tunnel = Tunnel(exchange)
        exchange.call_threadsafe(_switch_on_loop, exchange, self._switch_head, tunnel)
        tunnel.send(after, exchange.conn.write_timeout)

    def _forward(self, final: bool) -> None:
        exchange = self._exchange
        body, self._body = self._body, []
        if self.close_connection:
            exchange.keep_alive = False
        elif self._keep_alive:
            exchange.keep_alive = True
        if not self._started:
            self._started = True
            if final and self._complete and exchange.head.method != "HEAD":
                # The whole response is here: head and body leave in one write.
                exchange.respond_threadsafe(
                    self._status, self._headers, b"".join(body), self._reason_text()
                )
                return
            close_delimited = self._content_length is None and not self._chunked
            if close_delimited:
                exchange.keep_alive = False
            exchange.start_threadsafe(
                self._status,
                self._headers,
                self._content_length,
                close_delimited=close_delimited,
                reason=self._reason_text(),
            )
            self._writer = ThreadWriter(exchange)
        writer = self._writer
        assert writer is not None
        for chunk in body:
            writer.write(chunk)
        if self._complete or (final and not self._chunked):
            exchange.end_threadsafe()
        elif final:
            exchange.call_threadsafe(exchange.abort, "handler ended inside a chunked body")

    def _reason_text(self) -> str | None:
        """The handler's own reason phrase, when it is not the standard one."""
        reason = self._reason.decode("latin-1")
        return reason if reason != reason_phrase(self._status) else None

    def _fail(self, why: str) -> None:
        self._failed = True
        exchange = self._exchange
        if self._started:
            exchange.call_threadsafe(exchange.abort, why)
        else:
            self._started = True
            exchange.call_threadsafe(exchange.fail, HandlerOutputError(why))

    def finish(self, close_connection: bool) -> None:
        """The handler returned: send what is left and end the response."""
        if self.tunnel is not None:
            self.tunnel.close()
            return
        if close_connection:
            self.close_connection = True
        self._push(final=True)

    def fail(self, error: BaseException) -> None:
        """The handler raised: 500 if nothing was sent yet, else cut the connection."""
        if self._failed:
            return
        self._failed = True
        self._pending.clear()
        if self.tunnel is not None:
            self.tunnel.close()
            return
        exchange = self._exchange
        if self._started:
            exchange.call_threadsafe(exchange.abort, f"handler raised {type(error).__name__}")
        else:
            self._started = True
            exchange.call_threadsafe(exchange.fail, error)
