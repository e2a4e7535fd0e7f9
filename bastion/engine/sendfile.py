"""File bodies without copies: ``os.sendfile`` from the file straight into the client's socket.

uvloop does not implement ``loop.sendfile`` and the standard loop's version pauses reading and
takes the transport over for the duration, so the engine does it itself, for both loops:

- While the transport's own write buffer is empty (everything written before has reached the
  kernel), ``os.sendfile`` runs on the socket's descriptor: the socket is non-blocking, so each
  call takes what fits in the send buffer and returns. Partial writes continue from where they
  stopped; ``EAGAIN`` waits for the socket to become writable again. A response head still
  waiting to be written is put into the socket corked (Linux ``TCP_CORK``) so that it leaves
  in one packet with the first bytes of the file.
- That wait watches a duplicate of the socket's descriptor (the loop refuses to watch a
  descriptor that a transport owns). It is bounded by the connection's write timeout, and the
  connection wakes it when it closes, so a client that stops reading is cut off like any other
  slow reader and the duplicate never keeps a dead connection open.
- Where ``sendfile`` cannot be used (TLS, a transport still holding unsent bytes, a file system
  without ``sendfile`` support) the file is read in blocks of ``BLOCK`` bytes on the engine's
  thread pool and written through the transport, waiting on its flow control between blocks.

No more than one block of a file is ever held in memory, however large the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from typing import TYPE_CHECKING, Any

from bastion.engine.errors import ClientDisconnected

if TYPE_CHECKING:
    from bastion.engine.connection import HTTPConnection

BLOCK = 256 * 1024
# The most one sendfile call is asked for, and how much goes out before other connections on
# the loop get a turn (a fast reader on loopback could otherwise be fed a whole large file
# without the loop ever looking up).
_CALL_LIMIT = 4 * 1024 * 1024
_TURN = 8 * 1024 * 1024
# sendfile refuses these when the file (or the socket) does not support it: copy instead.
_UNSUPPORTED = frozenset(
    {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EOVERFLOW, errno.ESPIPE}
)
_CORK: int | None = getattr(socket, "TCP_CORK", None)
_GONE = frozenset({errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN, errno.EBADF})


class FileTruncated(OSError):
    """The file ended before the bytes promised for it were sent (it shrank while serving)."""


def supports_sendfile(conn: HTTPConnection) -> bool:
    """Whether the zero-copy path is open for this connection: plain TCP or a unix socket."""
    return _socket(conn)[0] >= 0


def _socket(conn: HTTPConnection) -> tuple[int, Any]:
    """The connection's socket descriptor and socket object; -1 where sendfile cannot go."""
    transport = conn.transport
    if transport is None or conn.scheme != "http" or not hasattr(os, "sendfile"):
        return -1, None
    if transport.get_extra_info("ssl_object") is not None:
        return -1, None
    sock = transport.get_extra_info("socket")
    if sock is None:
        return -1, None
    try:
        return int(sock.fileno()), sock
    except (OSError, ValueError):
        return -1, None


def _cork(sock: Any, on: bool) -> bool:
    """TCP_CORK (Linux): hold the response head back so it leaves with the first file bytes."""
    if _CORK is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _CORK, 1 if on else 0)
    except OSError:
        return False
    return True


async def send_file(conn: HTTPConnection, fd: int, offset: int, count: int) -> None:
    """Write ``count`` bytes of the open file ``fd``, from ``offset``, to the connection.

    Raises :class:`ClientDisconnected` when the client goes away (or stops reading for the
    write timeout) and :class:`FileTruncated` when the file ends early; in both cases the
    response is broken and the caller must abort it.
    """
    if conn.closed:
        raise ClientDisconnected("client disconnected")
    transport = conn.transport
    sock_fd, sock = _socket(conn)
    # Writes held back for coalescing (the response head, typically) must leave first; when
    # the file follows at once, they wait in the corked socket and leave in its first packet.
    corked = False
    pending = conn._out
    if pending:
        if sock_fd >= 0 and transport is not None and not transport.get_write_buffer_size():
            corked = _cork(sock, True)
        conn._flush_batch(pending)
    end = offset + count
    watch_fd = -1
    since_turn = 0
    try:
        while offset < end:
            if conn.closed:
                raise ClientDisconnected("client disconnected")
            if sock_fd < 0 or transport is None or transport.get_write_buffer_size():
                offset += await _send_block(conn, fd, offset, min(end - offset, BLOCK))
                continue
            sent = _sendfile(sock_fd, fd, offset, min(end - offset, _CALL_LIMIT))
            if corked:  # the head has company now (or never will): let it go
                corked = not _cork(sock, False)
            if sent is None:
                sock_fd = -1  # copy the rest through the transport
                continue
            if sent == 0:
                raise FileTruncated(f"file ended {end - offset} bytes early")
            if sent > 0:
                offset += sent
                since_turn += sent
                if since_turn >= _TURN and offset < end:
                    since_turn = 0
                    await asyncio.sleep(0)
                continue
            if watch_fd < 0:
                watch_fd = os.dup(sock_fd)
            since_turn = 0
            await _wait_writable(conn, watch_fd)
    finally:
        if corked:
            _cork(sock, False)
        if watch_fd >= 0:
            os.close(watch_fd)


def _sendfile(sock_fd: int, fd: int, offset: int, count: int) -> int | None:
    """Bytes sent; -1 when the socket is full; None when sendfile cannot serve this file."""
    try:
        return os.sendfile(sock_fd, fd, offset, count)
    except BlockingIOError:
        return -1
    except OSError as exc:
        if exc.errno in _GONE:
            raise ClientDisconnected("client disconnected") from exc
        if exc.errno in _UNSUPPORTED:
            return None
        raise


async def _wait_writable(conn: HTTPConnection, watch_fd: int) -> None:
    """Wait until the socket takes more bytes, the connection closes, or the write deadline."""
    loop = conn.loop
    waiter: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not waiter.done():
            waiter.set_result(None)

    loop.add_writer(watch_fd, wake)
    # connection_lost (including an abort by the write-deadline sweep) runs these callbacks.
    callbacks = conn._writable_callbacks
    callbacks.append(wake)
    conn.write_deadline = conn.state.now + conn.write_timeout
    try:
        await waiter
    finally:
        loop.remove_writer(watch_fd)
        if not conn.write_paused:
            conn.write_deadline = 0.0
        with contextlib.suppress(ValueError):
            callbacks.remove(wake)
    if conn.closed:
        raise ClientDisconnected("client disconnected")


async def _send_block(conn: HTTPConnection, fd: int, offset: int, size: int) -> int:
    """The copying path: read one block off the loop, write it, respect flow control."""
    block = await _read(conn, fd, offset, size)
    if not block:
        raise FileTruncated(f"file ended {size} bytes early")
    if conn.closed:
        raise ClientDisconnected("client disconnected")
    conn.write(block)
    await conn.drain()
    return len(block)


async def _read(conn: HTTPConnection, fd: int, offset: int, size: int) -> bytes:
    loop = conn.loop
    result: asyncio.Future[bytes] = loop.create_future()

    def done(data: Any, error: BaseException | None) -> None:
        if result.done():
            return
        if error is not None:
            result.set_exception(error)
        else:
            result.set_result(data)

    if not conn.state.pool.try_submit(lambda: os.pread(fd, size, offset), done):
        # Every thread is busy: one bounded read here beats failing a response half sent.
        return os.pread(fd, size, offset)
    return await result


__all__ = ["BLOCK", "FileTruncated", "send_file", "supports_sendfile"]
