"""The access log: one line per finished request, formatted on the loop, written in batches.

:class:`AccessLog` is an engine request observer (``Stats.request_observers``; give it to
``Server(observers=...)``). For each finished request it renders a line and appends it to a
list; every 50 ms (or every ``batch_lines`` lines) the list is joined and handed to a writer
thread, which writes everything handed to it with one call: never a write per request, and
one wake-up of the thread per batch. The loop never waits for the output, a regular file's
included: the text waiting for the writer is bounded (``max_pending`` characters), and what
does not fit while the output is stalled (a terminal scrolled back, a pipe nobody reads, a
slow or failing disk) is dropped and counted in :attr:`AccessLog.dropped`, then reported on
``bastion.error`` once the output moves again.

Outputs: a file path, ``"-"`` for standard output, a file descriptor or a stream (written
directly with ``os.write``: the fast path), or a :class:`logging.Logger` (one record per line,
at INFO, so logging configuration can route, filter and format them; the records are emitted
on the writer thread). The default is the ``bastion.access`` logger. A file named by path is
reopened when it is moved or removed (log rotation needs no signal).

Formats: ``common`` and ``combined`` (the Apache/NCSA formats every log tool reads), ``json``
(one object per line), ``http.server`` (exactly the line ``http.server`` writes for a
request, ``127.0.0.1 - - [28/Nov/2026 01:02:03] "GET / HTTP/1.1" 200 -``), or an
Apache-style format string:

======================  ==========================================================
``%h``                  client address (after trusted proxy headers)
``%a``                  address of the connection's peer (the proxy, behind one)
``%l`` / ``%u``         ``-`` / the user of Basic authentication, else ``-``
``%t``                  time the request finished, ``[10/Oct/2000:13:55:36 +0000]``
``%r``                  request line; ``%m`` method, ``%U`` path, ``%q`` ``?query``,
                        ``%H`` protocol
``%s`` / ``%>s``        status
``%b`` / ``%B``         body bytes sent (``-`` / ``0`` when none)
``%D`` / ``%T``         duration in microseconds / seconds; ``%{ms}T`` milliseconds
``%{Name}i``            a request header
``%{trace_id}n``        the trace id of a valid W3C ``traceparent`` header, else ``-``
``%{request_id}n``      the ``X-Request-ID`` header, else ``-``
``%v``                  the request's Host; ``%P`` process id; ``%%`` a percent sign
======================  ==========================================================

The named formats are rendered by hand-written code in :mod:`bastion.observe.logline` (part of
the compiled request path), a format string by a function generated from it once.

Text from the request is escaped the way Apache escapes it (``\\"``, ``\\\\``, ``\\xNN`` for
control and non-ASCII bytes), so a line is always one line and quoted fields stay quoted.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import re
import select
import stat
import sys
import threading
import time
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any, TextIO

from bastion.observe.logline import (
    ESCAPED,
    Clock,
    CombinedFormat,
    CommonFormat,
    HTTPServerFormat,
    LineCollector,
    NamedFormat,
    Render,
    basic_user,
)

if TYPE_CHECKING:
    from bastion.engine.config import ServerConfig
    from bastion.engine.exchange import Exchange
    from bastion.engine.stats import RequestObserver

logger = logging.getLogger("bastion.access")
error_logger = logging.getLogger("bastion.error")

COMMON = '%h %l %u %t "%r" %>s %b'
COMBINED = COMMON + ' "%{Referer}i" "%{User-Agent}i"'
NAMED_FORMATS = {"common": COMMON, "combined": COMBINED}
FORMAT_NAMES = ("common", "combined", "json", "http.server")

# A batch is handed to the writer every WRITE_INTERVAL, or sooner when it has this many lines
# (a busy server, a long pipelined burst), so that no single hand-off is huge.
BATCH_LINES = 4096
# Text waiting for the writer; beyond it, lines are dropped rather than held. About a second
# of common lines at 50,000 requests a second: a disk has that long to catch up.
MAX_PENDING = 4 << 20
# Writes to a pipe of at most PIPE_BUF bytes are atomic: with several workers on one pipe,
# lines never interleave mid-line.
PIPE_BUF = getattr(select, "PIPE_BUF", 512)
# How long lines are collected on the loop before they are handed to the writer thread.
WRITE_INTERVAL = 0.05
# How long the loop lets go of the interpreter lock when the writer thread falls behind.
YIELD_TO_WRITER = 0.001
# How often a file named by path is checked for rotation.
ROTATION_CHECK = 1.0

_DIRECTIVE = re.compile(r"%(?:\{([^}]*)\})?(>?)([a-zA-Z%])")
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


def trace_id(exchange: Exchange) -> str | None:
    """The trace id of the request's W3C ``traceparent`` header, if it is a valid one."""
    value = exchange.head.get("traceparent")
    if value is None:
        return None
    found = _TRACEPARENT.fullmatch(value.strip())
    if found is None:
        return None
    version, trace, parent, _flags, rest = found.groups()
    # Version ff is invalid; version 00 allows nothing after the flags; all-zero ids are invalid.
    if version == "ff" or (version == "00" and rest) or not trace.strip("0"):
        return None
    if not parent.strip("0"):
        return None
    return trace


def request_id(exchange: Exchange) -> str | None:
    """The request's ``X-Request-ID`` header."""
    return exchange.head.get("x-request-id")


class _Source:
    """The Python source of one format's renderer, built from its directives.

    Each directive becomes an expression inlined in a single f-string; what several need (the
    head, the client, the time, the header values) is computed once, before it, by statements
    added on first use. Headers are found in one pass over the header list, whatever their
    number. Expressions hold no quotes or backslashes (an f-string's fields may not, and the
    literal text decides the quotes): constants are names in the namespace.
    """

    def __init__(self) -> None:
        self.namespace: dict[str, Any] = {
            "DASH": "-",
            "EMPTY": "",
            "QMARK": "?",
            "BS": "\\",
            "ESCAPED": ESCAPED,
            "trace_id": trace_id,
            "user": basic_user,
            "getpid": os.getpid,
            "ENCODING": "latin-1",
        }
        self.prelude: dict[str, str] = {}
        self.headers: dict[bytes, str] = {}
        self.pieces: list[str] = []
        self.text: list[str] = []  # the literal text alone
        self.fields = 0
        self.clock_in_use: Clock | None = None

    def literal(self, text: str) -> None:
        self.text.append(text)
        self.pieces.append(text.replace("{", "{{").replace("}", "}}").replace("\\", "{BS}"))

    def field(self, expression: str) -> None:
        self.fields += 1
        self.pieces.append("{" + expression + "}")

    def need(self, name: str, value: str) -> str:
        """``name``, assigned ``value`` once before the line is built."""
        self.prelude.setdefault(name, f"{name} = {value}")
        return name

    def head(self) -> str:
        return self.need("head", "exchange.head")

    def header(self, name: str) -> str:
        """The variable holding the raw value of request header ``name`` (None if absent)."""
        self.head()
        wanted = name.lower().encode("latin-1")
        return self.headers.setdefault(wanted, f"h{len(self.headers)}")

    def escaped_header(self, name: str) -> str:
        value = self.header(name)
        return f"(DASH if {value} is None else ESCAPED[{value}])"

    def client(self) -> str:
        # Exchange.client, inlined: a property call costs more than the two reads.
        return self.need("client", "exchange.forwarded_client or exchange.conn.client")

    def clock(self, style: str) -> str:
        self.clock_in_use = self.namespace["clock"] = Clock(style)
        return "(clock.text if clock.valid else clock.refresh())"

    def compile(self) -> Render:
        lines = ["def render(exchange, duration):"]
        lines += [f"    {statement}" for statement in self.prelude.values()]
        if self.headers:
            names = list(self.headers.values())
            lines.append(f"    {' = '.join(names)} = None")
            lines.append("    for key, value in head.headers:")
            # Most fields differ from every wanted name in length: comparing lengths first
            # spares them a lowercased copy.
            lines.append("        size = len(key)")
            by_size: dict[int, list[tuple[bytes, str]]] = {}
            for wanted, variable in self.headers.items():
                by_size.setdefault(len(wanted), []).append((wanted, variable))
            for index, (size, names_of_size) in enumerate(by_size.items()):
                keyword = "if" if index == 0 else "elif"
                lines.append(f"        {keyword} size == {size}:")
                lines.append("            key = key.lower()")
                for wanted, variable in names_of_size:
                    # The first field of that name, as ``RequestHead.get`` finds it.
                    lines.append(f"            if {variable} is None and key == {wanted!r}:")
                    lines.append(f"                {variable} = value")
        # repr() escapes quotes and control characters of the literals for us; the f prefix
        # turns the quoted text back into a format string whose only fields are ours.
        lines.append(f"    return f{''.join(self.pieces)!r}")
        source = "\n".join(lines) + "\n"
        namespace = self.namespace
        exec(compile(source, "<access log format>", "exec"), namespace)
        render: Render = namespace["render"]
        # Read by LineCollector: a format without %D or %T needs no clock per request.
        render.timed = any("duration" in piece for piece in self.pieces)  # type: ignore[attr-defined]
        return render


def _seconds(unit: str) -> str:
    scale = {"": 1, "s": 1, "ms": 1_000, "us": 1_000_000}.get(unit)
    if scale is None:
        raise ValueError(f"unknown unit {unit!r} in %{{{unit}}}T: use s, ms or us")
    return "int(duration)!s" if scale == 1 else f"int(duration * {scale})!s"


def _directive(source: _Source, letter: str, argument: str | None) -> bool:
    """Add one directive's fields to ``source``; False if there is no such directive."""
    field = source.field
    if letter == "i" and argument:
        field(source.escaped_header(argument))
    elif letter == "n" and argument:
        if argument == "trace_id":
            field("(trace_id(exchange) or DASH)")
        elif argument == "request_id":
            field(source.escaped_header("x-request-id"))
        else:
            raise ValueError(f"unknown field %{{{argument}}}n: use trace_id or request_id")
    elif letter == "T":
        field(_seconds(argument or ""))
    elif argument is not None:
        return False
    elif letter == "h":
        field(f"(DASH if {source.client()} is None else client[0])")
    elif letter == "a":
        field(f"(DASH if {source.need('peer', 'exchange.conn.client')} is None else peer[0])")
    elif letter == "l":
        source.literal("-")
    elif letter == "u":
        value = source.header("authorization")
        field(f"(DASH if {value} is None else user({value}.decode(ENCODING)))")
    elif letter == "t":
        field(source.clock("apache"))
    elif letter == "r":
        # Escaping works character by character: the line's parts can be escaped apart.
        head = source.head()
        field(f"ESCAPED[{head}.method]")
        source.literal(" ")
        field(f"ESCAPED[{head}.target]")
        source.literal(" HTTP/")
        field(f"ESCAPED[{head}.version]")
    elif letter == "m":
        field(f"{source.head()}.method")
    elif letter == "U":
        field(f"ESCAPED[{source.head()}.raw_path]")
    elif letter == "q":
        query = source.need("query", f"{source.head()}.query_string")
        field(f"(QMARK + ESCAPED[{query}] if {query} else EMPTY)")
    elif letter == "H":
        source.literal("HTTP/")
        field(f"{source.head()}.version")
    elif letter in _NUMBERS:
        field(_NUMBERS[letter])
    elif letter == "v":
        field(source.escaped_header("host"))
    else:
        return False
    return True


# Rendered with str(), as before: ``!s`` keeps an int subclass (an IntEnum status) printed the
# way str() prints it.
_NUMBERS = {
    "s": "exchange.status!s",
    "b": "(exchange.bytes_sent or DASH)!s",
    "B": "exchange.bytes_sent!s",
    "D": "int(duration * 1_000_000)!s",
    "P": "getpid()!s",
}


def compile_format(spec: str) -> Render:
    """The renderer for a named format or an Apache-style format string; ``ValueError`` if bad.

    A renderer returns the line without its newline.
    """
    return _compile(spec)[0]


# Formats rendered by hand-written code (bastion.observe.logline), by name or spelt out.
_HAND_WRITTEN: dict[str, type[NamedFormat]] = {
    "common": CommonFormat,
    COMMON: CommonFormat,
    "combined": CombinedFormat,
    COMBINED: CombinedFormat,
    "http.server": HTTPServerFormat,
}


def _compile(spec: str) -> tuple[Render, Clock | None]:
    """The renderer and the clock it reads, if any."""
    if spec == "json":
        return _json_format()
    hand_written = _HAND_WRITTEN.get(spec)
    if hand_written is not None:
        render = hand_written()
        return render, render.clock
    return _generated(spec)


def _generated(spec: str) -> tuple[Render, Clock | None]:
    """A renderer generated from the format string ``spec`` (a name of one, too)."""
    template = NAMED_FORMATS.get(spec, spec)
    source = _Source()
    position = 0
    for match in _DIRECTIVE.finditer(template):
        if match.start() > position:
            source.literal(template[position : match.start()])
        position = match.end()
        argument, letter = match.group(1), match.group(3)
        if letter == "%":
            source.literal("%")
        elif not _directive(source, letter, argument):
            raise ValueError(f"unsupported directive {match.group()!r} in {spec!r}")
    rest = template[position:]
    if "%" in rest:
        raise ValueError(f"incomplete directive at {rest!r} in {spec!r}")
    if rest:
        source.literal(rest)
    if not source.pieces:
        raise ValueError("empty access log format")
    if not source.fields:
        text = "".join(source.text)
        return (lambda exchange, duration: text), None
    return source.compile(), source.clock_in_use


def _json_string(value: str | None) -> str:
    return "null" if value is None else encode_basestring_ascii(value)


def _json_format() -> tuple[Render, Clock]:
    """One JSON object per line: the fields of ``combined``, the duration, the trace ids.

    Written by hand rather than with ``json.dumps``: every value is a number or goes through
    the same C string encoder ``json`` uses, for a third of the cost.
    """
    clock = Clock("iso")

    def render(exchange: Exchange, duration: float) -> str:
        head = exchange.head
        client = exchange.forwarded_client or exchange.conn.client
        get = head.get
        return (
            f'{{"time":"{clock.text if clock.valid else clock.refresh()}",'
            f'"client":{_json_string(client[0] if client is not None else None)},'
            f'"method":{_json_string(head.method)},'
            f'"path":{_json_string(head.target.decode("latin-1"))},'
            f'"protocol":"HTTP/{head.version}",'
            f'"scheme":{_json_string(exchange.scheme)},'
            f'"host":{_json_string(get("host"))},'
            f'"status":{exchange.status},'
            f'"bytes":{exchange.bytes_sent},'
            f'"duration_ms":{round(duration * 1000, 3)!r},'
            f'"referer":{_json_string(get("referer"))},'
            f'"user_agent":{_json_string(get("user-agent"))},'
            f'"trace_id":{_json_string(trace_id(exchange))},'
            f'"request_id":{_json_string(get("x-request-id"))}}}'
        )

    return render, clock


# outputs --------------------------------------------------------------------------------------


class _Output:
    """Where batches go; called on the writer thread, so it may block."""

    def write(self, text: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _LoggerOutput(_Output):
    def __init__(self, log: logging.Logger) -> None:
        self.log = log

    def write(self, text: str) -> None:
        log = self.log
        if log.isEnabledFor(logging.INFO):
            for line in text.splitlines():
                # Already formatted: passed without arguments, so no %-interpolation happens.
                log.info(line)


class _StreamOutput(_Output):
    """A text stream without a file descriptor (a test's ``StringIO``, a wrapped stream)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


class _FileOutput(_Output):
    """A file descriptor, written with ``os.write``; reopened on rotation when it has a path."""

    def __init__(self, fd: int, path: str | None = None) -> None:
        self.fd = fd
        self.path = path
        self._checked = time.monotonic()
        self._identity = self._stat_identity()
        self._atomic = not stat.S_ISREG(os.fstat(fd).st_mode)

    @classmethod
    def open(cls, path: str) -> _FileOutput:
        return cls(_open_append(path), path)

    def _stat_identity(self) -> tuple[int, int]:
        info = os.fstat(self.fd)
        return info.st_dev, info.st_ino

    def write(self, text: str) -> None:
        if self.path is not None:
            self._follow_rotation()
        data = text.encode("utf-8", "backslashreplace")
        if self._atomic and len(data) > PIPE_BUF:
            for piece in _line_pieces(data, PIPE_BUF):
                _write_all(self.fd, piece)
        else:
            _write_all(self.fd, data)

    def _follow_rotation(self) -> None:
        now = time.monotonic()
        if now - self._checked < ROTATION_CHECK:
            return
        self._checked = now
        assert self.path is not None
        try:
            info = os.stat(self.path)
            moved = (info.st_dev, info.st_ino) != self._identity
        except FileNotFoundError:
            moved = True
        if moved:
            fd = _open_append(self.path)
            os.close(self.fd)
            self.fd = fd
            self._identity = self._stat_identity()

    def close(self) -> None:
        if self.path is not None:
            os.close(self.fd)


def _open_append(path: str) -> int:
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    return os.open(path, flags, 0o644)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _line_pieces(data: bytes, limit: int) -> list[bytes]:
    """``data`` cut after newlines into pieces of at most ``limit`` bytes where lines allow."""
    pieces = []
    start = 0
    while len(data) - start > limit:
        cut = data.rfind(b"\n", start, start + limit)
        end = cut + 1 if cut >= start else start + limit
        pieces.append(data[start:end])
        start = end
    pieces.append(data[start:])
    return pieces


def open_output(target: object) -> _Output:
    """An output for a path (``"-"``: standard output), a descriptor, a stream or a logger."""
    if isinstance(target, logging.Logger):
        return _LoggerOutput(target)
    if isinstance(target, int):
        return _FileOutput(target)
    if isinstance(target, str | os.PathLike):
        path = os.fspath(target)
        if path == "-":
            return open_output(sys.stdout)
        return _FileOutput.open(str(path))
    stream: Any = target
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return _StreamOutput(stream)
    # What was written through the stream so far goes before the first batch.
    stream.flush()
    return _FileOutput(fd)


class _Writer:
    """The writer thread and the bounded queue between it and the loop.

    The loop appends a batch (at most one every ``WRITE_INTERVAL``, or one per
    ``batch_lines`` lines) to a deque and adds to a count only it writes, then wakes the
    thread; the thread writes everything queued with one call and adds to a count only it
    writes. Their difference is what is waiting. Waking the thread once per batch, not per
    line, keeps the hand-off cheap; an idle thread waits without a timeout.

    Every output goes through the thread, regular files included: a write to a file usually
    lands in the page cache at once, but a slow or failing disk, a network file system or
    the kernel throttling dirty pages can hold it for seconds, and the loop must not wait.
    """

    def __init__(self, output: _Output, max_pending: int) -> None:
        self.output = output
        self.max_pending = max_pending
        self._queue: collections.deque[str] = collections.deque()
        self._queued = 0  # characters ever queued: written by the loop's thread only
        self._taken = 0  # characters ever written or given up: by the writer thread only
        self._dropped_full = 0  # loop's thread only
        self._dropped_failed = 0  # writer thread only
        self._reported = 0
        self._wake = threading.Event()
        self._progress = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None

    @property
    def dropped(self) -> int:
        return self._dropped_full + self._dropped_failed

    def put(self, text: str, lines: int) -> None:
        size = len(text)
        waiting = self._queued - self._taken
        # A batch is taken whole when nothing waits, however long its lines: the bound is
        # for a writer that falls behind, not for one batch of long lines.
        if (waiting and waiting + size > self.max_pending) or self._closing:
            self._dropped_full += lines
            return
        self._queued += size
        self._queue.append(text)
        if self._thread is None:
            # Started on first use, so a server built before a fork starts it in the child.
            self._thread = threading.Thread(
                target=self._run, name="bastion-access-log", daemon=True
            )
            self._thread.start()
        self._wake.set()
        if len(self._queue) > 1:
            # The thread has not taken the last batch yet. Either the output is slow, or the
            # thread is waiting for the interpreter lock, which a busy loop on another core
            # takes back each time it lets go: a millisecond without it lets the thread in.
            # At most one wait per batch, so a stalled disk costs the loop 2% of its time.
            time.sleep(YIELD_TO_WRITER)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            closing = self._closing
            self._write_queued()
            if closing and not self._queue:
                return

    def _write_queued(self) -> None:
        queue = self._queue
        chunks = []
        while queue:
            chunks.append(queue.popleft())
        if chunks:
            self._write("".join(chunks))

    def _write(self, text: str) -> None:
        try:
            self.output.write(text)
        except Exception as exc:  # a closed terminal or a full disk must not stop serving
            self._dropped_failed += text.count("\n")
            error_logger.warning("access log: cannot write: %s", exc)
        with self._progress:
            self._taken += len(text)
            self._progress.notify_all()
        dropped = self.dropped - self._reported
        if dropped > 0:
            self._reported += dropped
            # Said here, once the output moves again, and never from the loop: the error log
            # may share the stalled output.
            error_logger.warning(
                "access log: %d lines dropped: the output did not keep up", dropped
            )

    def close(self, timeout: float) -> bool:
        """Write out what is queued, within ``timeout``; whether everything was written."""
        self._closing = True
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                return False
        self.output.close()
        return True

    def wait_idle(self, timeout: float) -> bool:
        """Block until everything queued so far was written (tests, and ``flush``)."""
        target = self._queued
        deadline = time.monotonic() + timeout
        with self._progress:
            while self._taken < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.set()
                self._progress.wait(min(left, 0.05))
        return True


class AccessLog(LineCollector):
    """A request observer writing one line per finished request, in batches.

    ``output``: a path (``"-"`` for stdout), a file descriptor, a stream or a logger (default:
    the ``bastion.access`` logger). Call :meth:`close` when the server has stopped (a
    ``Server`` closes the observers it was given) so the last lines are written.
    """

    def __init__(
        self,
        format: str = "common",
        output: object = None,
        *,
        batch_lines: int = BATCH_LINES,
        max_pending: int = MAX_PENDING,
    ) -> None:
        render, self._clock = _compile(format)
        super().__init__(render, batch_lines)
        self.format = format
        output = open_output(logger if output is None else output)
        self._writer = _Writer(output, max_pending)
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def dropped(self) -> int:
        """Lines dropped because the output did not keep up (or failed)."""
        return self._writer.dropped

    def schedule(self) -> None:
        # One batch per WRITE_INTERVAL rather than per turn of the loop: one hand-off and one
        # write for many turns' lines, and one timer instead of a callback a turn.
        loop = self._loop = asyncio.get_running_loop()
        loop.call_later(WRITE_INTERVAL, self._batch_due)

    def _batch_due(self) -> None:
        self.scheduled = False
        self.flush()

    def flush(self) -> None:
        """Hand the lines collected so far to the writer thread."""
        lines = self.lines
        if lines:
            self.lines = []
            lines.append("")
            self._writer.put("\n".join(lines), len(lines) - 1)
            if self._clock is not None:
                self._clock.check()

    def wait_written(self, timeout: float = 5.0) -> bool:
        """Flush, then block until the writer has written everything (for tests and tools).

        From another thread than the loop's, the flush runs on the loop: the collected lines
        belong to it.
        """
        loop = self._loop
        if loop is not None and not loop.is_closed() and _current_loop() is not loop:
            flushed = threading.Event()

            def flush() -> None:
                self.flush()
                flushed.set()

            try:
                loop.call_soon_threadsafe(flush)
            except RuntimeError:  # closed in the meantime: nothing runs there any more
                self.flush()
            else:
                flushed.wait(timeout)
        else:
            self.flush()
        return self._writer.wait_idle(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Write out what is left (giving up after ``timeout`` on a stalled output)."""
        self.flush()
        # A timer that never ran (its loop stopped first) must not keep the next loop's lines
        # from being scheduled, nor its timestamp from being renewed.
        self.scheduled = False
        if self._clock is not None:
            self._clock.expire()
        if not self._writer.close(timeout):
            error_logger.warning("access log: output stalled; the last lines were not written")


def _current_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def access_log_observers(config: ServerConfig) -> list[RequestObserver]:
    """The observers ``config``'s ``access_log*`` settings ask for (none when it is off)."""
    if not config.access_log:
        return []
    output = logger if config.access_log_file is None else config.access_log_file
    return [AccessLog(config.access_log_format, output)]
