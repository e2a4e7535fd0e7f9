"""``wsgi.input``, ``wsgi.errors`` and ``wsgi.file_wrapper``: the file-like objects of PEP 3333.

``wsgi.input`` reads the request body from the connection's :class:`BodyStream` with blocking
reads on the worker thread. Only what a call asks for is pulled in, and the stream keeps at most
one received chunk of its own, so a large upload read in pieces holds bounded memory: the
connection stops reading the socket while the buffer between it and the application is full.
The stream ends where the body ends (``Content-Length`` or the last chunk of a chunked body),
never past it, which is why ``wsgi.input_terminated`` is true.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from typing import IO, Any, Final

from bastion.engine.body import BodyStream

logger = logging.getLogger("bastion.error")


class WSGIInput:
    """The request body as a read-only binary file (``read``, ``readline``, iteration)."""

    __slots__ = ("_body", "_timeout", "_buf", "_pos", "_eof")

    def __init__(self, body: BodyStream, timeout: float | None) -> None:
        self._body = body
        self._timeout = timeout
        self._buf = b""  # the chunk being consumed; bytes before _pos are already read
        self._pos = 0
        self._eof = False

    def _next_chunk(self) -> bytes:
        """The next chunk from the connection; b"" at the end of the body.

        Raises ``TimeoutError`` when the client sends nothing for the body timeout and
        :class:`~bastion.engine.ClientDisconnected` when it goes away.
        """
        if self._eof:
            return b""
        chunk = self._body.read_blocking(self._timeout)
        if not chunk:
            self._eof = True
        return chunk

    def read(self, size: int | None = -1) -> bytes:
        """``size`` bytes (fewer only at the end of the body); all the rest when negative."""
        if size is None or size < 0:
            return self._read_all()
        buf, pos = self._buf, self._pos
        available = len(buf) - pos
        if available >= size:
            if pos == 0 and available == size:
                self._buf = b""
                return buf
            self._pos = pos + size
            return buf[pos : pos + size]
        parts = [buf[pos:]] if available else []
        needed = size - available
        self._buf, self._pos = b"", 0
        while needed > 0:
            chunk = self._next_chunk()
            if not chunk:
                break
            if len(chunk) > needed:
                parts.append(chunk[:needed])
                self._buf, self._pos = chunk, needed
                break
            parts.append(chunk)
            needed -= len(chunk)
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    def _read_all(self) -> bytes:
        parts = [self._buf[self._pos :]] if self._pos < len(self._buf) else []
        self._buf, self._pos = b"", 0
        while chunk := self._next_chunk():
            parts.append(chunk)
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    def readline(self, size: int | None = -1) -> bytes:
        """One line including its ``\\n`` (at most ``size`` bytes when ``size`` >= 0)."""
        if size is None:
            size = -1
        buf, pos = self._buf, self._pos
        available = len(buf) - pos
        limit = available if size < 0 else min(size, available)
        end = buf.find(b"\n", pos, pos + limit)
        if end >= 0:
            self._pos = end + 1
            return buf[pos : end + 1]
        if size >= 0 and available >= size:
            self._pos = pos + size
            return buf[pos : pos + size]
        parts = [buf[pos:]] if available else []
        got = available
        self._buf, self._pos = b"", 0
        while True:
            chunk = self._next_chunk()
            if not chunk:
                break
            room = len(chunk) if size < 0 else size - got
            end = chunk.find(b"\n", 0, room)
            if end >= 0:
                take = end + 1
            elif room < len(chunk):
                take = room
            else:
                parts.append(chunk)
                got += len(chunk)
                if size >= 0 and got >= size:
                    break
                continue
            parts.append(chunk[:take])
            self._buf, self._pos = chunk, take
            break
        return b"".join(parts)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        """The remaining lines; stops once ``hint`` bytes have been read when it is positive."""
        lines = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        """Nothing to release: the connection owns the socket."""


class EmptyInput:
    """``wsgi.input`` of a request without a body; stateless, so one instance serves all."""

    __slots__ = ()

    def read(self, size: int | None = -1) -> bytes:
        return b""

    def readline(self, size: int | None = -1) -> bytes:
        return b""

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        return []

    def __iter__(self) -> Iterator[bytes]:
        return iter(())

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        pass


EMPTY_INPUT: Final = EmptyInput()


class ErrorStream:
    """``wsgi.errors``: a text stream whose lines go to the ``bastion.error`` logger.

    Each thread assembles its own lines, so output written by two requests at once is not
    interleaved within a line; a line still incomplete when its request ends is flushed then.
    """

    def __init__(self, log: logging.Logger | None = None) -> None:
        self._log = log or logger
        self._local = threading.local()
        # Set once any thread holds an incomplete line: until then flush() has nothing to do.
        self._partial = False

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"wsgi.errors takes str, not {type(text).__name__}")
        pending: str = getattr(self._local, "pending", "") + text
        if "\n" in pending:
            *lines, pending = pending.split("\n")
            for line in lines:
                if line.strip():
                    self._log.error("%s", line.rstrip("\r"))
        self._local.pending = pending
        if pending:
            self._partial = True
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not self._partial:
            return
        pending = getattr(self._local, "pending", "")
        if pending:
            self._local.pending = ""
            if pending.strip():
                self._log.error("%s", pending.rstrip("\r"))

    def writable(self) -> bool:
        return True


ERRORS: Final = ErrorStream()


class FileWrapper:
    """``wsgi.file_wrapper``: an iterable over a file-like object, in ``blksize`` blocks.

    Returned unchanged from the application, a wrapper around a regular file is sent by the
    server in large blocks straight from the file (and gets a ``Content-Length`` from the file's
    size when the application set none); anything else is iterated like any response.
    """

    def __init__(self, filelike: IO[bytes] | Any, blksize: int = 8192) -> None:
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        data: bytes = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()
