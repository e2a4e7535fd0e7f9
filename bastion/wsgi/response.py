"""``start_response``, ``write()`` and the response iterable of one WSGI call, on a worker thread.

The head is held back until the first non-empty piece of the body (or the end of the response),
as PEP 3333 asks, so an application can still change its mind with ``exc_info``. What happens
next depends on what the application returned:

- a list or tuple (the body is fully known), or an iterable whose first piece fills the
  ``Content-Length`` it declared: the whole response leaves in one write, from the loop;
- a :class:`FileWrapper` around a regular file: sized by the file, sent with ``os.sendfile``
  by the loop over plain TCP (the engine's ``Exchange.send_file``), else read in large blocks;
- anything else: streamed piece by piece through a :class:`ThreadWriter`, which makes the
  thread wait while the client is slower than the application.

Framing belongs to the engine: a response shorter or longer than its ``Content-Length`` makes
:class:`Exchange` log an error and close the connection, never send a mis-framed message.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from bastion.engine.errors import ClientDisconnected
from bastion.engine.exchange import ThreadWriter
from bastion.http import encode_headers, reason_phrase
from bastion.wsgi.streams import FileWrapper

if TYPE_CHECKING:
    from bastion.engine.exchange import Exchange

logger = logging.getLogger("bastion.error")

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
HeaderList = list[tuple[str, str]]
# What the worker thread hands back to the loop: (kind, ...) with a shape per kind.
Action = tuple[Any, ...]

# (RESPOND, status, headers, body, close, header block or None): head and body in one write
RESPOND: Final = 0
HEAD_ONLY: Final = 1  # (HEAD_ONLY, status, headers, length, close): HEAD with a declared length
MISFRAMED: Final = 2  # (MISFRAMED, status, headers, length, close, body): let the engine refuse it
END: Final = 3  # (END,): the streamed body is complete
SKIP: Final = 4  # (SKIP,): the client left before the application was called

# Bodies of regular files up to this size are read whole and sent with their head.
_SMALL_FILE: Final = 256 * 1024
_FILE_BLOCK: Final = 256 * 1024
_MAX_LENGTH_DIGITS: Final = 18
_CACHE_LIMIT: Final = 512

# Header kinds, by the exact name the application used.
_PLAIN: Final = 0
_LENGTH: Final = 1
_CONNECTION: Final = 2
_HOP_BY_HOP: Final = 3
_HOP_BY_HOP_NAMES: Final = frozenset(
    {
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
_header_kinds: Final[dict[str, int]] = {}
# The application's header list, as a tuple -> what clean_headers makes of it and its encoded
# block. Most applications send the same few lists again and again; emptied when full, so
# lists that never repeat (a cookie per client) cannot crowd out those that do.
Prepared = tuple[HeaderList, int | None, bool, bytes | None]
_prepared: Final[dict[tuple[Any, ...], Prepared]] = {}
_warned: Final[set[str]] = set()
_statuses: Final[dict[str, int]] = {}


def _header_kind(name: str) -> int:
    kind = _header_kinds.get(name)
    if kind is not None:
        return kind
    if type(name) is not str:
        raise TypeError(f"header name {name!r} is not a str")
    lowered = name.lower()
    if lowered == "content-length":
        kind = _LENGTH
    elif lowered == "connection":
        kind = _CONNECTION
    elif lowered in _HOP_BY_HOP_NAMES:
        kind = _HOP_BY_HOP
    else:
        kind = _PLAIN
    if len(_header_kinds) < _CACHE_LIMIT:
        _header_kinds[name] = kind
    return kind


def parse_status(status: str) -> int:
    """The code of a PEP 3333 status string (``"200 OK"``)."""
    code = _statuses.get(status)
    if code is not None:
        return code
    if type(status) is not str:
        raise TypeError(f"status must be a str such as '200 OK', not {type(status).__name__}")
    digits = status[:3]
    if not (
        len(digits) == 3
        and digits.isascii()
        and digits.isdigit()
        and (len(status) == 3 or status[3] == " ")
    ):
        raise ValueError(f"invalid status {status!r}: expected a code and a reason, '200 OK'")
    code = int(digits)
    if not 200 <= code <= 599:
        raise ValueError(f"invalid status {status!r}: a final response needs a code 200-599")
    if len(_statuses) < _CACHE_LIMIT:
        _statuses[status] = code
    return code


def _parse_length(value: str) -> int:
    digits = value.strip(" \t")
    if not (digits.isascii() and digits.isdigit() and len(digits) <= _MAX_LENGTH_DIGITS):
        raise ValueError(f"invalid Content-Length {value!r} from the application")
    return int(digits)


def clean_headers(headers: Iterable[tuple[str, str]]) -> tuple[HeaderList, int | None, bool]:
    """Check the application's headers; take out framing and hop-by-hop ones.

    Returns the headers to send, the declared ``Content-Length`` and whether the application
    asked for ``Connection: close`` (honoured). Other hop-by-hop headers are forbidden to
    applications by PEP 3333; they are dropped with a warning (once per name).
    """
    kept: HeaderList = []
    length: int | None = None
    close = False
    for item in headers:
        name, value = item
        kind = _header_kind(name)
        if type(value) is not str:
            raise TypeError(f"value of header {name!r} is not a str: {value!r}")
        if kind == _PLAIN:
            kept.append(item)
        elif kind == _LENGTH:
            declared = _parse_length(value)
            if length is not None and declared != length:
                raise ValueError("conflicting Content-Length headers from the application")
            length = declared
        elif kind == _CONNECTION:
            if "close" in value.lower():
                close = True
        else:
            lowered = name.lower()
            if lowered not in _warned:
                _warned.add(lowered)
                logger.warning(
                    "WSGI application sent the hop-by-hop header %r; dropped (PEP 3333 leaves "
                    "those to the server)",
                    name,
                )
    return kept, length, close


def prepare_headers(headers: Iterable[tuple[str, str]]) -> Prepared:
    """:func:`clean_headers`, plus the kept headers encoded (None if encoding refused them:
    the engine refuses them again when the response is sent, and answers 500)."""
    try:
        key: tuple[Any, ...] | None = tuple(headers)
        prepared = _prepared.get(key)  # type: ignore[arg-type]
    except TypeError:
        key = prepared = None  # an unhashable item: clean_headers says what is wrong with it
    if prepared is not None:
        return prepared
    kept, length, close = clean_headers(headers)
    try:
        block: bytes | None = encode_headers(kept)
    except ValueError:
        block = None
    prepared = (kept, length, close, block)
    if key is not None and block is not None:
        if len(_prepared) >= _CACHE_LIMIT:
            _prepared.clear()
        _prepared[key] = prepared
    return prepared


def _to_bytes(chunk: Any) -> bytes:
    if isinstance(chunk, (bytes, bytearray, memoryview)):
        return bytes(chunk)
    raise TypeError(f"a WSGI body must be bytes, not {type(chunk).__name__}")


def _next_nonempty(iterator: Iterator[Any]) -> bytes | None:
    for chunk in iterator:
        if type(chunk) is not bytes:
            chunk = _to_bytes(chunk)
        if chunk:
            return chunk
    return None


class WSGICall:
    """The state of one application call: what ``start_response`` set, and what was sent."""

    __slots__ = (
        "exchange",
        "environ",
        "status",
        "headers",
        "length",
        "close",
        "block",
        "head_sent",
        "writer",
    )

    def __init__(self, exchange: Exchange, environ: dict[str, Any]) -> None:
        self.exchange = exchange
        self.environ = environ
        self.status = 0
        self.headers: HeaderList = []
        self.length: int | None = None
        self.close = False
        self.block: bytes | None = None
        self.head_sent = False
        self.writer: ThreadWriter | None = None

    # what the application calls -------------------------------------------------------------

    def start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: ExcInfo | None = None,
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # no reference cycle through the traceback
        elif self.status:
            raise RuntimeError("start_response() called a second time without exc_info")
        code = parse_status(status)
        self.headers, self.length, self.close, self.block = prepare_headers(headers)
        self.status = code
        # Read here, while the framework's request is still current (Flask clears it after).
        self.exchange.route = _route_template(self.environ)
        reason = status[4:]
        if reason and reason != reason_phrase(code):
            self.exchange.reason = reason  # read on the loop after this thread hands over
        return self.write

    def write(self, data: bytes) -> None:
        """The ``write()`` callable: send ``data`` now (the head first, if not yet sent)."""
        if not self.status:
            raise RuntimeError("write() called before start_response()")
        if type(data) is not bytes:
            data = _to_bytes(data)
        if data:
            self._send(data)

    # sending -------------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        writer = self.writer
        if writer is None:
            writer = self._send_head()
        if self.exchange.head.method != "HEAD":
            writer.write(data)

    def _send_head(self) -> ThreadWriter:
        self.head_sent = True
        exchange = self.exchange
        writer = self.writer = ThreadWriter(exchange)
        exchange.call_threadsafe(
            start_on_loop, exchange, self.status, self.headers, self.length, self.close
        )
        return writer

    def _whole(self, body: bytes) -> Action:
        """The response when its whole body is known and nothing has been sent yet."""
        length = self.length
        if length is not None and length != len(body):
            if self.exchange.head.method == "HEAD":
                return (HEAD_ONLY, self.status, self.headers, length, self.close)
            if self.status >= 200 and self.status != 204 and self.status != 304:
                return (MISFRAMED, self.status, self.headers, length, self.close, body)
        return (RESPOND, self.status, self.headers, body, self.close, self.block)

    def finish(self, result: Iterable[bytes]) -> Action:
        """Send the response iterable; runs on the worker thread, returns what the loop does."""
        if not self.head_sent and self.status:
            kind = type(result)
            if kind is list or kind is tuple:
                items: Any = result
                if len(items) == 1:
                    body = items[0]
                    if type(body) is not bytes:
                        body = _to_bytes(body)
                elif not items:
                    body = b""
                else:
                    body = b"".join(items)
                return self._whole(body)
            if kind is FileWrapper:
                action = self._send_file(result)  # type: ignore[arg-type]
                if action is not None:
                    return action
        if isinstance(result, (bytes, str)):
            raise TypeError(
                "the application returned a string; it must return an iterable of bytes"
            )
        exchange = self.exchange
        iterator = iter(result)
        for chunk in iterator:
            if type(chunk) is not bytes:
                chunk = _to_bytes(chunk)
            if not chunk:
                if self.head_sent and exchange.disconnected:
                    raise ClientDisconnected("client disconnected")
                continue
            if not self.head_sent:
                if not self.status:
                    raise RuntimeError("the application sent a body before start_response()")
                length = self.length
                if length is not None and len(chunk) == length:
                    # The first piece is the whole declared body: unless the application
                    # has more (its own error), head and body can leave in one write.
                    extra = _next_nonempty(iterator)
                    if extra is None:
                        return self._whole(chunk)
                    self._send(chunk)
                    chunk = extra
                if exchange.head.method == "HEAD":
                    # A HEAD response is its head: the rest of the body (perhaps an endless
                    # stream) is not produced only to be thrown away.
                    if self.writer is None:
                        self._send_head()
                    break
            self._send(chunk)
        if not self.head_sent:
            if not self.status:
                raise RuntimeError("the application returned without calling start_response()")
            return self._whole(b"")
        return (END,)

    def _send_file(self, wrapper: FileWrapper) -> Action | None:
        """Send a regular file from its current position; None when it is not one."""
        filelike = wrapper.filelike
        if isinstance(filelike, io.TextIOBase):
            return None
        try:
            info = os.fstat(filelike.fileno())
            if not stat.S_ISREG(info.st_mode):
                return None
            position = filelike.tell()
        except (AttributeError, OSError, ValueError):
            return None
        available = max(0, info.st_size - position)
        if self.length is None:
            self.length = available
        # PEP 3333: a file is sent up to its end or up to Content-Length, whichever is first.
        remaining = min(self.length, available)
        if self.exchange.head.method == "HEAD" or remaining <= _SMALL_FILE:
            body = _read_exactly(filelike, remaining) if remaining else b""
            return self._whole(body)
        exchange = self.exchange
        send_file = getattr(exchange, "send_file", None)
        if send_file is not None and exchange.conn.scheme == "http":
            # Zero-copy on the loop (os.sendfile into the socket); this thread keeps the file
            # open, and the application's close() waits, until the bytes are sent.
            self._send_head()
            coroutine = send_file(filelike.fileno(), position, remaining)
            asyncio.run_coroutine_threadsafe(coroutine, exchange.loop).result()
            return (END,)
        self._send_head()
        while remaining > 0:
            block = filelike.read(min(_FILE_BLOCK, remaining))
            if not block:
                break  # the file shrank: the engine closes the connection, short
            remaining -= len(block)
            self._send(block)
        return (END,)


def _read_exactly(filelike: Any, size: int) -> bytes:
    parts = []
    while size > 0:
        block = filelike.read(size)
        if not block:
            break
        parts.append(block)
        size -= len(block)
    return parts[0] if len(parts) == 1 else b"".join(parts)


# on the loop thread ----------------------------------------------------------------------------


def start_on_loop(
    exchange: Exchange, status: int, headers: HeaderList, length: int | None, close: bool
) -> None:
    if exchange.finished:
        return  # the request timed out or was abandoned while the application ran
    if close:
        exchange.keep_alive = False
    try:
        exchange.start(status, headers, length)
    except Exception as exc:
        exchange.fail(exc)


def complete_on_loop(exchange: Exchange, action: Any, error: BaseException | None) -> None:
    """The pool's completion callback: send what the worker thread prepared."""
    if error is not None:
        exchange.fail(error)
        return
    if exchange.finished:
        return
    kind = action[0]
    if kind == SKIP:
        exchange.fail(ClientDisconnected("client disconnected before the application ran"))
        return
    try:
        if kind == RESPOND:
            if action[4]:
                exchange.keep_alive = False
            block = action[5]
            if block is not None:
                exchange.respond_encoded(action[1], block, action[3])
            else:
                exchange.respond(action[1], action[2], action[3])
        elif kind == END:
            exchange.end()
        elif kind == HEAD_ONLY:
            if action[4]:
                exchange.keep_alive = False
            exchange.start(action[1], action[2], action[3])
            exchange.end()
        elif kind == MISFRAMED:
            if action[4]:
                exchange.keep_alive = False
            exchange.start(action[1], action[2], action[3])
            try:
                exchange.write(action[5])
            except ValueError:
                return  # longer than declared: the exchange logged it and closed
            exchange.end()  # shorter than declared: the exchange logs it and closes
    except Exception as exc:
        exchange.fail(exc)


def _route_template(environ: dict[str, Any]) -> str | None:
    """The route the framework matched, when it tells: a bounded metrics label.

    Flask (Werkzeug) keeps its request object in the environ and the matched rule on it.
    """
    request = environ.get("werkzeug.request")
    if request is None:
        return None
    template = getattr(getattr(request, "url_rule", None), "rule", None)
    return template if isinstance(template, str) else None
