"""The access log's per-request half: a finished request's line, and the batch it joins.

This module is part of the compiled request path (``compiled-modules.txt``). The named formats
(``common``, ``combined``, ``http.server``) are written out here as classes rather than
generated from their format strings, so that a compiled build reads the exchange's fields
natively; :class:`LineCollector` is what the engine calls for each finished request. Whatever
may block or runs once a batch (the writer thread, the outputs, formats given as strings) is
in :mod:`bastion.observe.accesslog`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from bastion._compiled import mypyc_attr

if TYPE_CHECKING:
    from bastion.engine.exchange import Exchange

Render = Callable[["Exchange", float], str]

DASH: Final = "-"
_UNSAFE: Final = re.compile(r'[\x00-\x1f\x7f-\xff"\\]')
# http.server escapes C0 and C1 control characters as \xNN (BaseHTTPRequestHandler.log_message).
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MONTHS: Final = (
    "",
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)
# Values longer than this, or arriving once this many are remembered, are escaped every time.
_REMEMBERED_LENGTH: Final = 256
_REMEMBERED_VALUES: Final = 4096


def escape(text: str) -> str:
    """Quote-safe, one line: the way Apache escapes what it logs (``\\"``, ``\\xNN``)."""
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(_escape_one, text)


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    return "\\" + char if char in '"\\' else f"\\x{ord(char):02x}"


def control_escape(text: str) -> str:
    """``http.server``'s escaping: control characters only, as ``\\xNN``."""
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(_hex_one, text)


def _hex_one(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


class Escapes:
    """Values escaped once and then looked up: clients send the same few targets, methods and
    header values again and again, and a dictionary lookup costs a fraction of the escaping.

    Bounded like the parser's target cache: long values and values arriving once the cache is
    full are escaped every time, so a client sending distinct values cannot grow it.
    """

    def __init__(self, escape: Callable[[str], str]) -> None:
        self._escape = escape
        self._known: dict[str | bytes, str] = {}

    def __getitem__(self, value: str | bytes) -> str:
        text = self._known.get(value)
        if text is None:
            text = self._escape(value if isinstance(value, str) else value.decode("latin-1"))
            if len(value) <= _REMEMBERED_LENGTH and len(self._known) < _REMEMBERED_VALUES:
                self._known[value] = text
        return text


class _Quoted:
    """One target's quoted request line and status, and what they were made from."""

    def __init__(self, method: str, version: str, status: int, text: str) -> None:
        self.method = method
        self.version = version
        self.status = status
        self.text = text


class RequestLines:
    """``"METHOD TARGET HTTP/VERSION" STATUS`` as a line shows it, remembered per target.

    Most requests repeat the method, version and status of the last one for their target,
    and then the line's middle is one lookup instead of three escapes and a join. Bounded as
    :class:`Escapes` is; a target seen with another method, version or status is made anew.
    """

    def __init__(self, escapes: Escapes) -> None:
        self._escapes = escapes
        self._known: dict[bytes, _Quoted] = {}

    def quoted(self, method: str, target: bytes, version: str, status: int) -> str:
        known = self._known.get(target)
        if (
            known is not None
            and known.status == status
            and known.method == method
            and known.version == version
        ):
            return known.text
        escapes = self._escapes
        # Escaping works character by character: the request line's parts can be escaped apart.
        method_text = escapes[method]
        target_text = escapes[target]
        version_text = escapes[version]
        status_text = str(status)
        text = f'"{method_text} {target_text} HTTP/{version_text}" {status_text}'
        if len(target) <= _REMEMBERED_LENGTH and (
            known is not None or len(self._known) < _REMEMBERED_VALUES
        ):
            self._known[target] = _Quoted(method, version, status, text)
        return text


# Final, so that compiled code reaches them without a lookup in the module's namespace.
ESCAPED: Final = Escapes(escape)
CONTROL_ESCAPED: Final = Escapes(control_escape)
REQUEST_LINES: Final = RequestLines(ESCAPED)
CONTROL_REQUEST_LINES: Final = RequestLines(CONTROL_ESCAPED)


def basic_user(value: str) -> str:
    """The user named by an ``Authorization`` header's value, escaped, or ``-``."""
    if not value or value[:6].lower() != "basic ":
        return DASH
    try:
        decoded = base64.b64decode(value[6:].strip(), validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return DASH
    return escape(decoded.partition(":")[0]) or DASH


class Clock:
    """The current second's timestamp text, kept fresh by a timer on the loop.

    A format reads ``text`` while ``valid`` is true, which costs less than reading the time per
    request; a timer set for the next second boundary clears ``valid``, and the first request
    after that calls :meth:`refresh`, which sets the next timer. So an idle server runs no
    timer, and a busy one a timer a second. Off a loop (a renderer called directly) nothing
    keeps the text fresh, so it is computed every time.
    """

    def __init__(self, style: str) -> None:
        self.text = ""
        self.valid = False
        self.until = 0.0
        self._style = style

    def now(self) -> str:
        return self.text if self.valid else self.refresh()

    def refresh(self) -> str:
        now = time.time()
        second = int(now)
        text = self.format(second)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return text
        self.until = float(second + 1)
        # A timer that fires a little early (loop time is kept in milliseconds) only costs
        # one more refresh, which computes the same second and sets a timer for its end.
        loop.call_later(self.until - now, self.expire)
        self.valid = True
        return text

    def expire(self) -> None:
        self.valid = False

    def check(self) -> None:
        """Expire a text its timer did not (the loop it was set on stopped before it ran)."""
        if self.valid and time.time() >= self.until + 1.0:
            self.valid = False

    def format(self, second: int) -> str:
        """The text for ``second``."""
        t = time.localtime(second)
        if self._style == "apache":
            self.text = time.strftime("[%d/%b/%Y:%H:%M:%S %z]", t)
        elif self._style == "iso":
            self.text = time.strftime("%Y-%m-%dT%H:%M:%S%z", t)
        else:  # http.server's log_date_time_string, whatever the locale
            self.text = (
                f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon]}/{t.tm_year:04d} "
                f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
            )
        return self.text


@mypyc_attr(allow_interpreted_subclasses=True)
class NamedFormat:
    """A format written out by hand: a renderer (call it) whose line the collector can also
    ask for directly, without going through a generic call."""

    clock_style = "apache"
    # Whether the line shows the request's duration (none of the named formats does).
    timed = False

    def __init__(self) -> None:
        self.clock = Clock(self.clock_style)

    def __call__(self, exchange: Exchange, duration: float) -> str:
        return self.line(exchange, duration)

    def line(self, exchange: Exchange, duration: float) -> str:
        raise NotImplementedError


class CommonFormat(NamedFormat):
    """``%h %l %u %t "%r" %>s %b``: the NCSA common log format."""

    def line(self, exchange: Exchange, duration: float) -> str:
        head = exchange.head
        client = exchange.client
        authorization: bytes | None = None
        for key, value in head.headers:
            if len(key) == 13 and key.lower() == b"authorization":
                authorization = value
                break
        return _common(exchange, client, authorization, self.clock)


class CombinedFormat(NamedFormat):
    """The common format and ``"%{Referer}i" "%{User-Agent}i"``."""

    def line(self, exchange: Exchange, duration: float) -> str:
        head = exchange.head
        client = exchange.client
        authorization: bytes | None = None
        referer: bytes | None = None
        agent: bytes | None = None
        # One pass over the fields; comparing lengths first spares most of them a lowercased
        # copy. The first field of a name is the one logged, as ``RequestHead.get`` finds it.
        for key, value in head.headers:
            size = len(key)
            if size == 7 and referer is None and key.lower() == b"referer":
                referer = value
            elif size == 10 and agent is None and key.lower() == b"user-agent":
                agent = value
            elif size == 13 and authorization is None and key.lower() == b"authorization":
                authorization = value
        common = _common(exchange, client, authorization, self.clock)
        referer_text = DASH if referer is None else ESCAPED[referer]
        agent_text = DASH if agent is None else ESCAPED[agent]
        return f'{common} "{referer_text}" "{agent_text}"'


def _common(
    exchange: Exchange,
    client: tuple[str, int] | None,
    authorization: bytes | None,
    clock: Clock,
) -> str:
    head = exchange.head
    address = DASH if client is None else client[0]
    user = DASH if authorization is None else basic_user(authorization.decode("latin-1"))
    sent = str(exchange.bytes_sent) if exchange.bytes_sent else DASH
    # Every field is a str named here: compiled, an f-string of plain str values is joined
    # directly, while a conversion or a non-str value falls back to str.format.
    request = REQUEST_LINES.quoted(head.method, head.target, head.version, exchange.status)
    return f"{address} - {user} {clock.now()} {request} {sent}"


class HTTPServerFormat(NamedFormat):
    """``BaseHTTPRequestHandler.log_request``'s line, as ``python -m http.server`` prints it.

    The size is ``-`` as there: ``send_response`` logs before the body is known.
    """

    clock_style = "http.server"

    def line(self, exchange: Exchange, duration: float) -> str:
        head = exchange.head
        client = exchange.client
        address = client[0] if client else DASH
        request = CONTROL_REQUEST_LINES.quoted(
            head.method, head.target, head.version, exchange.status
        )
        now = self.clock.now()
        return f"{address} - - [{now}] {request} -"


@mypyc_attr(allow_interpreted_subclasses=True)
class LineCollector:
    """A request observer: renders each finished request's line into the batch being collected.

    The batch's fate is a subclass's: :meth:`flush` is called when ``batch_lines`` lines are
    waiting, and :meth:`schedule` when the first line of a batch arrives.
    """

    def __init__(self, render: Render, batch_lines: int) -> None:
        self.render = render
        self.named = render if isinstance(render, NamedFormat) else None
        # Whether the lines need the request's duration: if not, the engine reads no clock
        # for them (see Stats.attach).
        self.timed: bool = getattr(render, "timed", True)
        self.batch_lines = batch_lines
        self.lines: list[str] = []
        self.scheduled = False

    def __call__(self, exchange: Exchange, duration: float) -> None:
        self.record(exchange, duration)

    def record(self, exchange: Exchange, duration: float) -> None:
        """Add ``exchange``'s line to the batch (what the engine calls: see Stats.attach)."""
        named = self.named
        line = self.render(exchange, duration) if named is None else named.line(exchange, duration)
        lines = self.lines
        lines.append(line)
        if len(lines) >= self.batch_lines:
            self.flush()
        elif not self.scheduled:
            self.scheduled = True
            self.schedule()

    def flush(self) -> None:
        """Take the lines collected so far."""
        raise NotImplementedError

    def schedule(self) -> None:
        """See that :meth:`flush` is called before long."""
        raise NotImplementedError
