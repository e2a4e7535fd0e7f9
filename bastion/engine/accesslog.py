"""The access log: one line per finished request, on the ``bastion.access`` logger.

It is a request observer (``Stats.request_observers``), so with the log off the engine pays
nothing, and it writes through standard ``logging``, so applications route, filter or format
it like any other logger. Formats: ``common`` and ``combined`` (the Apache/NCSA formats every
log tool reads), ``json`` (one object per line), or an Apache-style format string:

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
``%v``                  the request's Host; ``%P`` process id; ``%%`` a percent sign
======================  ==========================================================
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bastion.engine.exchange import Exchange

logger = logging.getLogger("bastion.access")

Field = Callable[["Exchange", float], str]

COMMON = '%h %l %u %t "%r" %>s %b'
COMBINED = COMMON + ' "%{Referer}i" "%{User-Agent}i"'
NAMED_FORMATS = {"common": COMMON, "combined": COMBINED}

_DIRECTIVE = re.compile(r"%(?:\{([^}]*)\})?(>?)([a-zA-Z%])")
_UNSAFE = re.compile(r'[\x00-\x1f\x7f-\xff"\\]')


def _escape(text: str) -> str:
    """Quote-safe, one line: the way Apache escapes what it logs (``\\"``, ``\\xNN``)."""
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(
        lambda m: "\\" + m.group() if m.group() in '"\\' else f"\\x{ord(m.group()):02x}", text
    )


class _Clock:
    """The ``%t`` timestamp, formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def now(self) -> str:
        wall = time.time()
        second = int(wall)
        if second != self._second:
            self._second = second
            self._text = time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(wall))
        return self._text


def _header(name: str) -> Field:
    wanted = name.lower().encode("latin-1")

    def field(exchange: Exchange, duration: float) -> str:
        for key, value in exchange.head.headers:
            if key.lower() == wanted:
                return _escape(value.decode("latin-1"))
        return "-"

    return field


def _request_line(exchange: Exchange, duration: float) -> str:
    head = exchange.head
    return _escape(f"{head.method} {head.target.decode('latin-1')} HTTP/{head.version}")


def _client(exchange: Exchange, duration: float) -> str:
    client = exchange.client
    return client[0] if client is not None else "-"


def _peer(exchange: Exchange, duration: float) -> str:
    peer = exchange.peer
    return peer[0] if peer is not None else "-"


def _user(exchange: Exchange, duration: float) -> str:
    value = exchange.head.get("authorization")
    if not value or value[:6].lower() != "basic ":
        return "-"
    try:
        decoded = base64.b64decode(value[6:].strip(), validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return "-"
    return _escape(decoded.partition(":")[0]) or "-"


def _bytes_or_dash(exchange: Exchange, duration: float) -> str:
    return str(exchange.bytes_sent) if exchange.bytes_sent else "-"


def _query(exchange: Exchange, duration: float) -> str:
    query = exchange.head.query_string
    return "?" + _escape(query.decode("latin-1")) if query else ""


def _path(exchange: Exchange, duration: float) -> str:
    return _escape(exchange.head.raw_path.decode("latin-1"))


def _seconds(unit: str) -> Field:
    scale = {"": 1, "s": 1, "ms": 1_000, "us": 1_000_000}.get(unit)
    if scale is None:
        raise ValueError(f"unknown unit {unit!r} in %{{{unit}}}T: use s, ms or us")
    if scale == 1:
        return lambda exchange, duration: str(int(duration))
    return lambda exchange, duration: str(int(duration * scale))


def compile_format(spec: str) -> Callable[[Exchange, float], str]:
    """The renderer for a named format or an Apache-style format string."""
    if spec == "json":
        return _JSONFormat()
    template = NAMED_FORMATS.get(spec, spec)
    clock = _Clock()
    simple: dict[str, Field] = {
        "h": _client,
        "a": _peer,
        "l": lambda exchange, duration: "-",
        "u": _user,
        "t": lambda exchange, duration: clock.now(),
        "r": _request_line,
        "m": lambda exchange, duration: exchange.head.method,
        "U": _path,
        "q": _query,
        "H": lambda exchange, duration: f"HTTP/{exchange.head.version}",
        "s": lambda exchange, duration: str(exchange.status),
        "b": _bytes_or_dash,
        "B": lambda exchange, duration: str(exchange.bytes_sent),
        "D": lambda exchange, duration: str(int(duration * 1_000_000)),
        "v": _header("host"),
        "P": lambda exchange, duration: str(os.getpid()),
    }
    parts: list[str | Field] = []
    position = 0
    for match in _DIRECTIVE.finditer(template):
        if match.start() > position:
            parts.append(template[position : match.start()])
        position = match.end()
        argument, letter = match.group(1), match.group(3)
        if letter == "%":
            parts.append("%")
        elif letter == "i" and argument:
            parts.append(_header(argument))
        elif letter == "T":
            parts.append(_seconds(argument or ""))
        elif argument is None and letter in simple:
            parts.append(simple[letter])
        else:
            raise ValueError(f"unsupported directive {match.group()!r} in {spec!r}")
    rest = template[position:]
    if "%" in rest:
        raise ValueError(f"incomplete directive at {rest!r} in {spec!r}")
    if rest:
        parts.append(rest)
    if not parts:
        raise ValueError("empty access log format")
    literals = [part for part in parts if isinstance(part, str)]
    fields = [part for part in parts if not isinstance(part, str)]
    if not fields:
        text = "".join(literals)
        return lambda exchange, duration: text
    return _Template(parts)


class _Template:
    __slots__ = ("_parts",)

    def __init__(self, parts: list[str | Field]) -> None:
        self._parts = tuple(parts)

    def __call__(self, exchange: Exchange, duration: float) -> str:
        return "".join(
            part if isinstance(part, str) else part(exchange, duration) for part in self._parts
        )


class _JSONFormat:
    """One JSON object per line, with the fields of ``combined`` plus the duration."""

    def __call__(self, exchange: Exchange, duration: float) -> str:
        head = exchange.head
        client = exchange.client
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "client": client[0] if client is not None else None,
            "method": head.method,
            "path": head.target.decode("latin-1"),
            "protocol": f"HTTP/{head.version}",
            "scheme": exchange.scheme,
            "host": head.get("host"),
            "status": exchange.status,
            "bytes": exchange.bytes_sent,
            "duration_ms": round(duration * 1000, 3),
            "referer": head.get("referer"),
            "user_agent": head.get("user-agent"),
        }
        return json.dumps(record, separators=(",", ":"))


class AccessLog:
    """A request observer that logs each finished request on ``bastion.access`` at INFO."""

    def __init__(self, spec: str = "common", log: logging.Logger = logger) -> None:
        self.render = compile_format(spec)
        self.logger = log

    def __call__(self, exchange: Exchange, duration: float) -> None:
        log = self.logger
        if log.isEnabledFor(logging.INFO):
            # Already formatted: passed without arguments, so no %-interpolation happens.
            log.info(self.render(exchange, duration))
