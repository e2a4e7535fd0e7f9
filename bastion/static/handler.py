"""``StaticFiles``: a directory served over HTTP, as an engine handler.

Per request, on the event loop: the target is checked (remembered per target string, see
:mod:`bastion.static.paths`), the file is opened and ``fstat``-ed, and

- a file of up to ``SMALL`` bytes is read and leaves with its head in one write (and is kept
  in memory for the next request, checked against one ``lstat`` per loop turn: :mod:`.cache`);
- a larger one leaves by ``Exchange.send_file`` (zero-copy ``sendfile`` on plain TCP);
- a directory listing is built on the thread pool (it may ``stat`` thousands of entries).

``open``/``fstat``/``lstat`` and a read of at most ``SMALL`` bytes are cheap syscalls against
the page cache; handing each to the pool would cost more than it saves and would cap
throughput at the pool's hand-off rate. Every request sees the file as it was when the loop's
turn that answers it first looked.
"""

from __future__ import annotations

import os
import secrets
import stat
from functools import partial
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

from bastion._compiled import mypyc_attr
from bastion.engine.eager import run_eagerly
from bastion.engine.errors import ClientDisconnected
from bastion.engine.sendfile import FileTruncated
from bastion.http.response import encode_headers
from bastion.static import conditional, ranges
from bastion.static.cache import Representation, SmallFiles, stat_key
from bastion.static.encoding import CODINGS, preferences
from bastion.static.errors import Refused
from bastion.static.listing import listing_page
from bastion.static.media import content_type
from bastion.static.paths import Resolver, allowed_name, split_target

if TYPE_CHECKING:
    from bastion.engine.exchange import Exchange
    from bastion.engine.state import ServerState

SMALL: Final = 64 * 1024
CACHE_BYTES: Final = 16 * 1024 * 1024
# Parts of a multipart/byteranges response up to this size are read here rather than sent
# by sendfile (each sendfile flushes what is queued first).
_SMALL_PART: Final = 16 * 1024

_TEXT: Final = ("content-type", "text/plain; charset=utf-8")
_MESSAGES: Final = {
    400: b"400 Bad Request\n",
    403: b"403 Forbidden\n",
    404: b"404 Not Found\n",
    405: b"405 Method Not Allowed\n",
    412: b"412 Precondition Failed\n",
    416: b"416 Range Not Satisfiable\n",
    500: b"500 Internal Server Error\n",
    503: b"503 Service Unavailable: all workers are busy\n",
}
_SUFFIXES: Final = tuple(suffix for _, _, suffix, _ in CODINGS)
_LISTING_HEADERS: Final = [
    ("content-type", "text/html; charset=utf-8"),
    ("cache-control", "no-cache"),
]

# Request fields read by the file path, by lower-case name: their slot in the list of them.
_RANGE: Final = 0
_IF_RANGE: Final = 1
_IF_MATCH: Final = 2
_IF_NONE_MATCH: Final = 3
_IF_MODIFIED: Final = 4
_IF_UNMODIFIED: Final = 5
_ACCEPT: Final = 6
_FIELDS: Final = {
    b"range": _RANGE,
    b"if-range": _IF_RANGE,
    b"if-match": _IF_MATCH,
    b"if-none-match": _IF_NONE_MATCH,
    b"if-modified-since": _IF_MODIFIED,
    b"if-unmodified-since": _IF_UNMODIFIED,
    b"accept-encoding": _ACCEPT,
}
# Fields whose repeated lines form one comma-separated list.
_LISTS: Final = frozenset({_IF_MATCH, _IF_NONE_MATCH, _ACCEPT})


def prefix_segments(prefix: str) -> tuple[str, ...]:
    if not prefix or prefix == "/":
        return ()
    if not prefix.startswith("/"):
        raise ValueError(f"prefix must start with '/', got {prefix!r}")
    parsed = split_target(quote(prefix, safe="/").encode("ascii"))
    if isinstance(parsed, int) or not parsed[0]:
        raise ValueError(f"invalid prefix {prefix!r}")
    return parsed[0]


def segments_url(segments: tuple[str, ...], slash: bool) -> str:
    path = "/" + "/".join(quote(os.fsencode(s), safe="") for s in segments)
    if slash and segments:
        path += "/"
    return path


@mypyc_attr(allow_interpreted_subclasses=True)
class StaticFiles:
    """Serve the files under ``directory``; an engine handler (``bastion.engine.run``).

    - ``listings``: list directories without an index file (otherwise 404).
    - ``follow_symlinks``: follow every symlink; by default only symlinks whose target is
      inside ``directory`` are followed and the rest are 404.
    - ``cache_control``: a ``Cache-Control`` value sent with every file (none by default).
    - ``index``: the file served for a directory (``""`` for none).
    - ``prefix``: the URL path the tree is served under (``/static``); other paths are 404.
    - ``precompressed``: serve ``name.br``/``name.gz`` beside ``name`` when the client accepts
      that encoding and the sibling is at least as new as ``name``.
    - ``cache_bytes``: memory for small files, revalidated by ``lstat`` once per loop turn
      (0 turns it off).

    To serve files beside another handler (an ``App``, WSGI or ASGI app), see :func:`mount`.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        listings: bool = True,
        follow_symlinks: bool = False,
        cache_control: str | None = None,
        index: str = "index.html",
        prefix: str = "",
        precompressed: bool = True,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        root = os.fspath(directory)
        if not os.path.isdir(root):
            raise NotADirectoryError(f"not a directory: {root}")
        if index and ("/" in index or os.sep in index or not allowed_name(index)):
            raise ValueError(f"index must be a plain file name, got {index!r}")
        if cache_control is not None and any(c in cache_control for c in "\r\n\0"):
            raise ValueError("invalid Cache-Control value")
        if cache_bytes < 0:
            raise ValueError("cache_bytes must not be negative")
        self.resolver = Resolver(root, follow_symlinks)
        self.directory = self.resolver.root
        self.listings = listings
        self.follow_symlinks = follow_symlinks
        self.cache_control = cache_control
        self.index = index
        self.precompressed = precompressed
        self.cache = SmallFiles(cache_bytes, follow_symlinks) if cache_bytes else None
        self._prefix = prefix_segments(prefix)
        self.prefix = segments_url(self._prefix, False) if self._prefix else ""
        # One metrics label for every file: a tree's paths are not a bounded set.
        self.route = f"{self.prefix}/{{path:path}}"
        self._extra: list[tuple[str, str]] = (
            [("cache-control", cache_control)] if cache_control else []
        )
        self._state: ServerState | None = None

    def __repr__(self) -> str:
        return f"StaticFiles({self.directory!r}, prefix={self.prefix!r})"

    # the engine's side ------------------------------------------------------------------------

    async def startup(self, state: ServerState) -> None:
        self._state = state
        if self.cache is not None:
            self.cache.bind(state.loop.call_soon)

    def handle(self, exchange: Exchange) -> None:
        exchange.route = self.route
        self.serve(exchange, self._prefix)

    def serve(self, exchange: Exchange, prefix: tuple[str, ...]) -> None:
        """Answer ``exchange`` from the tree, its URL path starting with ``prefix`` segments."""
        head = exchange.head
        method = head.method
        if method != "GET" and method != "HEAD":
            exchange.respond(405, [_TEXT, ("allow", "GET, HEAD")], _MESSAGES[405])
            return
        parsed = split_target(head.target)
        if isinstance(parsed, int):
            _error(exchange, parsed)
            return
        segments, slash = parsed
        if prefix:
            depth = len(prefix)
            if segments[:depth] != prefix:
                _error(exchange, 404)
                return
            segments = segments[depth:]
        fields = _read_fields(head.headers)
        cache = self.cache
        if cache is not None and segments and not slash:
            accept = fields[_ACCEPT]
            # A client that may get a precompressed sibling takes the full path.
            if accept is None or not self.precompressed or not preferences(accept):
                path = self.resolver.path_of(segments)
                found = cache.confirmed.get(path)
                if found is None:
                    found = cache.get(path)
                    if found is not None:
                        if self.resolver.directories_ok(segments):
                            cache.confirm(path, found)
                        else:
                            found = None
                if found is not None:
                    extra = self._extra
                    if accept is not None and self.precompressed and _has_siblings(path):
                        extra = [*extra, ("vary", "accept-encoding")]
                    self._answer(exchange, found, found.body or b"", extra, fields)
                    return
        try:
            fd, info, path = self.resolver.open(segments)
        except Refused as refused:
            _error(exchange, refused.status)
            return
        mode = info.st_mode
        if stat.S_ISREG(mode):
            if slash or not segments:
                os.close(fd)
                _error(exchange, 404)
                return
            self._send(exchange, fd, info, path, segments[-1], fields)
            return
        os.close(fd)
        if stat.S_ISDIR(mode):
            self._directory(exchange, prefix, segments, slash, path, fields)
        else:
            _error(exchange, 403)  # a FIFO, socket or device is not a file to serve

    # directories --------------------------------------------------------------------------------

    def _directory(
        self,
        exchange: Exchange,
        prefix: tuple[str, ...],
        segments: tuple[str, ...],
        slash: bool,
        path: str,
        fields: list[str | None],
    ) -> None:
        full = (*prefix, *segments)
        if not slash:
            location = segments_url(full, True)
            query = exchange.head.query_string
            if query:
                location += "?" + query.decode("latin-1")
            exchange.respond(301, [_TEXT, ("location", location)], b"301 Moved Permanently\n")
            return
        if self.index:
            try:
                fd, info, index_path = self.resolver.open((*segments, self.index))
            except Refused:
                pass
            else:
                if stat.S_ISREG(info.st_mode):
                    self._send(exchange, fd, info, index_path, self.index, fields)
                    return
                os.close(fd)
        if not self.listings:
            _error(exchange, 404)
            return
        state = self._state
        assert state is not None, "StaticFiles.startup() was not run"
        url_path = "/" + "".join(name + "/" for name in full)
        job = partial(listing_page, self.resolver, path, url_path, parent=bool(segments))
        if not state.pool.try_submit(job, partial(_listing_done, exchange)):
            state.stats.count_error("pool-full")
            exchange.respond(503, [_TEXT, ("retry-after", "1")], _MESSAGES[503])

    # files --------------------------------------------------------------------------------------

    def _send(
        self,
        exchange: Exchange,
        fd: int,
        info: os.stat_result,
        path: str,
        name: str,
        fields: list[str | None],
    ) -> None:
        """Answer with the file open as ``fd``; takes ownership of ``fd``."""
        try:
            variant = ""
            extra = self._extra
            accept = fields[_ACCEPT]
            if accept is not None and self.precompressed:
                fd, info, coding, variant, vary = self._choose_encoding(accept, fd, info, path)
                if vary:
                    extra = [*extra, ("vary", "accept-encoding")]
                if coding:
                    extra = [*extra, ("content-encoding", coding)]
            size = info.st_size
            mtime = int(info.st_mtime)
            found = Representation(
                stat_key(info),
                size,
                mtime,
                conditional.make_etag(info.st_mtime_ns, size, variant),
                conditional.http_date(mtime),
                content_type(name),
            )
            if size > SMALL:
                if self._answer_large(exchange, fd, found, extra, fields):
                    fd = -1  # handed on to the task that sends it
                return
            body = os.read(fd, size) if size else b""
            if len(body) == size and not variant and self.cache is not None:
                found.body = body
                self.cache.put(path, found)
            self._answer(exchange, found, body, extra, fields)
        finally:
            if fd >= 0:
                os.close(fd)

    def _choose_encoding(
        self, accept: str, fd: int, info: os.stat_result, path: str
    ) -> tuple[int, os.stat_result, str, str, bool]:
        vary = False
        for coding, suffix, variant in preferences(accept):
            found = self.resolver.open_beside(path, suffix)
            if found is None:
                continue
            vary = True
            sibling_fd, sibling = found
            if sibling.st_mtime_ns >= info.st_mtime_ns:
                os.close(fd)
                return sibling_fd, sibling, coding, variant, vary
            os.close(sibling_fd)  # older than the file it compresses: stale, not served
        if not vary:
            # Not served to this client; if another one would get a sibling, caches must know.
            vary = _has_siblings(path)
        return fd, info, "", "", vary

    def _preconditions(
        self,
        exchange: Exchange,
        found: Representation,
        extra: list[tuple[str, str]],
        fields: list[str | None],
    ) -> bool:
        """Answer 304 or 412 when the If-* fields say so; True if that was done."""
        if (
            fields[_IF_MATCH] is None
            and fields[_IF_NONE_MATCH] is None
            and fields[_IF_MODIFIED] is None
            and fields[_IF_UNMODIFIED] is None
        ):
            return False
        outcome = conditional.evaluate(
            exchange.head.method,
            found.etag,
            found.mtime,
            if_match=fields[_IF_MATCH],
            if_none_match=fields[_IF_NONE_MATCH],
            if_modified_since=fields[_IF_MODIFIED],
            if_unmodified_since=fields[_IF_UNMODIFIED],
        )
        if outcome == conditional.NOT_MODIFIED:
            exchange.respond(
                304, [("etag", found.etag), ("last-modified", found.last_modified), *extra]
            )
            return True
        if outcome == conditional.PRECONDITION_FAILED:
            exchange.respond(412, [_TEXT, ("etag", found.etag)], _MESSAGES[412])
            return True
        return False

    @staticmethod
    def _ranges(
        exchange: Exchange, found: Representation, fields: list[str | None]
    ) -> list[ranges.Range] | None:
        """The ranges to answer with, [] for a 416, None for the whole representation."""
        wanted = fields[_RANGE]
        if wanted is None or exchange.head.method != "GET":
            return None
        if_range = fields[_IF_RANGE]
        if if_range is not None and not conditional.if_range_allows(
            if_range, found.etag, found.mtime
        ):
            return None
        return ranges.parse(wanted, found.size)

    def _answer(
        self,
        exchange: Exchange,
        found: Representation,
        body: bytes,
        extra: list[tuple[str, str]],
        fields: list[str | None],
    ) -> None:
        """Answer from a body held in memory: every response is a single write."""
        if self._preconditions(exchange, found, extra, fields):
            return
        if fields[_RANGE] is None and extra is self._extra:
            encoded = found.fields
            if encoded is None:
                encoded = found.fields = encode_headers(self._fields_of(found, extra))
            exchange.respond_encoded(200, encoded, body)
            return
        headers = self._fields_of(found, extra)
        chosen = self._ranges(exchange, found, fields) if fields[_RANGE] is not None else None
        if chosen is None:
            exchange.respond(200, headers, body)
        elif not chosen:
            _unsatisfiable(exchange, found.size)
        elif len(chosen) == 1:
            first, last = chosen[0]
            headers.append(("content-range", ranges.content_range(first, last, found.size)))
            exchange.respond(206, headers, body[first : last + 1])
        else:
            plan = ranges.Multipart(chosen, found.size, found.kind, secrets.token_hex(12))
            headers[0] = ("content-type", plan.content_type)
            pieces = []
            for part_head, offset, count in plan.parts:
                pieces.append(part_head)
                pieces.append(body[offset : offset + count])
            pieces.append(plan.closing)
            exchange.respond(206, headers, b"".join(pieces))

    @staticmethod
    def _fields_of(found: Representation, extra: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [
            ("content-type", found.kind),
            ("etag", found.etag),
            ("last-modified", found.last_modified),
            ("accept-ranges", "bytes"),
            *extra,
        ]

    def _answer_large(
        self,
        exchange: Exchange,
        fd: int,
        found: Representation,
        extra: list[tuple[str, str]],
        fields: list[str | None],
    ) -> bool:
        """Answer from the open file; True if ``fd`` was handed to a sending task."""
        if self._preconditions(exchange, found, extra, fields):
            return False
        size = found.size
        headers = self._fields_of(found, extra)
        chosen = self._ranges(exchange, found, fields)
        if chosen is None:
            exchange.start(200, headers, size)
            if exchange.head.method == "HEAD":
                exchange.end()
                return False
            _stream(exchange, fd, [(b"", 0, size)], b"")
            return True
        if not chosen:
            _unsatisfiable(exchange, size)
            return False
        if len(chosen) == 1:
            first, last = chosen[0]
            count = last - first + 1
            headers.append(("content-range", ranges.content_range(first, last, size)))
            if count <= SMALL:
                exchange.respond(206, headers, os.pread(fd, count, first))
                return False
            exchange.start(206, headers, count)
            _stream(exchange, fd, [(b"", first, count)], b"")
            return True
        plan = ranges.Multipart(chosen, size, found.kind, secrets.token_hex(12))
        headers[0] = ("content-type", plan.content_type)
        exchange.start(206, headers, plan.length)
        _stream(exchange, fd, plan.parts, plan.closing)
        return True


def _read_fields(headers: list[tuple[bytes, bytes]]) -> list[str | None]:
    """The request fields the file path reads, each decoded once; repeated list fields joined."""
    fields: list[str | None] = [None] * 7
    for key, value in headers:
        slot = _FIELDS.get(key.lower())
        if slot is not None:
            text = value.decode("latin-1")
            before = fields[slot]
            if before is None:
                fields[slot] = text
            elif slot in _LISTS:
                fields[slot] = before + ", " + text
    return fields


def _unsatisfiable(exchange: Exchange, size: int) -> None:
    exchange.respond(
        416, [_TEXT, ("content-range", ranges.unsatisfied_range(size))], _MESSAGES[416]
    )


def _stream(
    exchange: Exchange, fd: int, parts: list[tuple[bytes, int, int]], closing: bytes
) -> None:
    """Send ``parts`` (a head, then ``count`` bytes from ``offset``) and finish; closes ``fd``."""
    run_eagerly(exchange.loop, _send_parts(exchange, fd, parts, closing), _report, exchange)


async def _send_parts(
    exchange: Exchange, fd: int, parts: list[tuple[bytes, int, int]], closing: bytes
) -> None:
    try:
        for head, offset, count in parts:
            if head:
                exchange.write(head)
            if count <= _SMALL_PART:
                data = os.pread(fd, count, offset)
                if len(data) < count:
                    raise FileTruncated("file ended early")
                exchange.write(data)
            else:
                await exchange.send_file(fd, offset, count)
        if closing:
            exchange.write(closing)
        exchange.end()
    except FileTruncated:
        exchange.abort("file shrank while it was being sent")
    except ClientDisconnected as gone:
        exchange.fail(gone)
    finally:
        os.close(fd)


def _report(exchange: Exchange, result: Any, error: BaseException | None) -> None:
    if error is not None:
        exchange.fail(error)


def _listing_done(exchange: Exchange, page: Any, error: BaseException | None) -> None:
    if error is None:
        exchange.respond(200, _LISTING_HEADERS, page)
    elif isinstance(error, (FileNotFoundError, NotADirectoryError)):
        _error(exchange, 404)
    elif isinstance(error, PermissionError):
        _error(exchange, 403)
    else:
        exchange.fail(error)


def _has_siblings(path: str) -> bool:
    for suffix in _SUFFIXES:
        try:
            os.lstat(path + suffix)
        except OSError:
            continue
        return True
    return False


def _error(exchange: Exchange, status: int) -> None:
    exchange.respond(status, [_TEXT], _MESSAGES[status])
