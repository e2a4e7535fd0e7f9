"""The clients of the soak: raw-socket HTTP/1.1 conversations, each judged on its own.

Every client opens its own connection, plays one kind of conversation (valid, malformed,
slow, abandoned...) against ``bench/apps/soak_app.py`` and comes back with a ``Result``:
``answered`` (the expected answer), ``closed`` (a clean close where that is a correct end)
or ``unexpected`` with a reason and the raw bytes, so that any finding can be replayed
with ``nc``. Deadlines are the caller's: a client that is still waiting when its deadline
passes is reported by the stage it was stuck in.
"""

import asyncio
import contextlib
import random
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

HOST_HEADER = b"Host: soak\r\n"
HELLO = b"Hello, world!"
ECHO_PATHS = ("/echo", "/echo-late", "/sync/echo")
RAW_KEEP = 600  # bytes of a conversation kept for the report


class Unexpected(Exception):
    """The server did something a correct server never does."""


class ServerClosed(Exception):
    """The server closed the connection before an answer started."""


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    raw: bytes


@dataclass
class Result:
    outcome: str  # "answered", "closed" or "unexpected"
    detail: str = ""
    sent: bytes = b""
    received: bytes = b""


@dataclass(frozen=True)
class Timeouts:
    """The server's deadlines, so a client knows how long a correct server may take."""

    header: float
    body: float
    keepalive: float


@dataclass
class Conversation:
    """One connection: what went out, what came back, and where it is now."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    stage: str = "connecting"
    sent: bytearray = field(default_factory=bytearray)
    received: bytearray = field(default_factory=bytearray)

    def send(self, data: bytes) -> None:
        self.sent += data
        self.writer.write(data)

    async def read_answer(self) -> Answer:
        """One response, framed by Content-Length, chunked, or the close of the connection."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            self.received += exc.partial
            if exc.partial:
                raise Unexpected("truncated response head") from None
            raise ServerClosed from None
        except asyncio.LimitOverrunError:
            raise Unexpected("response head too long") from None
        self.received += head
        lines = head[:-4].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise Unexpected(f"bad status line {lines[0][:60]!r}")
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        status = int(parts[1])
        body = await self._read_body(status, headers)
        return Answer(status, headers, body, head + body)

    async def _read_body(self, status: int, headers: dict[bytes, bytes]) -> bytes:
        try:
            if status in (204, 304) or 100 <= status < 200:
                return b""
            if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                return await self._read_chunked()
            if b"content-length" in headers:
                body = await self.reader.readexactly(int(headers[b"content-length"]))
            else:
                body = await self.reader.read()
        except asyncio.IncompleteReadError as exc:
            self.received += exc.partial
            raise Unexpected("truncated response body") from None
        self.received += body
        return body

    async def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            size_line = await self.reader.readuntil(b"\r\n")
            self.received += size_line
            size = int(size_line.split(b";")[0].strip(), 16)
            data = await self.reader.readexactly(size + 2)
            self.received += data
            if size == 0:
                return bytes(body)
            body += data[:-2]

    async def expect(self, status: int, body: bytes | None = None) -> Answer:
        answer = await self.read_answer()
        if answer.status != status:
            raise Unexpected(f"answered {answer.status}, expected {status}")
        if body is not None and answer.body != body:
            raise Unexpected(f"wrong body ({len(answer.body)} bytes, expected {len(body)})")
        return answer

    async def expect_close(self) -> None:
        """The server must close now; anything it says instead is a second answer."""
        extra = await self.reader.read(65536)
        if extra:
            self.received += extra
            raise Unexpected(f"a second answer, {extra[:24]!r}..., instead of {self.stage}")

    def reset(self) -> None:
        """Close with RST instead of FIN (SO_LINGER 0), as a crashed or impatient client."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


Client = Callable[[Conversation, Timeouts], Awaitable[Result]]


def request(method: str, path: str, headers: bytes = b"", body: bytes = b"") -> bytes:
    length = f"Content-Length: {len(body)}\r\n".encode() if method == "POST" else b""
    return (
        f"{method} {path} HTTP/1.1\r\n".encode() + HOST_HEADER + length + headers + b"\r\n" + body
    )


def chunked_request(path: str, pieces: list[bytes], headers: bytes = b"") -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n\r\n"
    head = f"POST {path} HTTP/1.1\r\n".encode() + HOST_HEADER
    return head + b"Transfer-Encoding: chunked\r\n" + headers + b"\r\n" + body


def payload(rng: random.Random, most: int = 4096) -> bytes:
    return rng.randbytes(rng.randint(0, most))


def split(rng: random.Random, data: bytes) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), min(3, len(data) - 1))) if len(data) > 1 else []
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


# --- valid conversations ---------------------------------------------------------------


async def get_keepalive(conv: Conversation, t: Timeouts) -> Result:
    for _ in range(3):
        conv.stage = "answer to a keep-alive GET"
        conv.send(request("GET", random.choice(("/", "/sync"))))
        await conv.expect(200, HELLO)
    return Result("answered")


async def post_length(conv: Conversation, t: Timeouts) -> Result:
    rng = random.Random()
    for _ in range(2):
        body = payload(rng)
        path = rng.choice(ECHO_PATHS)
        conv.stage = f"answer to POST {path} with Content-Length"
        conv.send(request("POST", path, body=body))
        await conv.expect(200, body)
    return Result("answered")


async def post_chunked(conv: Conversation, t: Timeouts) -> Result:
    rng = random.Random()
    for _ in range(2):
        body = b"-" + payload(rng)  # never empty: that is post-empty-chunked's case
        path = rng.choice(ECHO_PATHS)
        conv.stage = f"answer to chunked POST {path}"
        conv.send(chunked_request(path, split(rng, body)))
        await conv.expect(200, body)
    return Result("answered")


async def post_empty_chunked(conv: Conversation, t: Timeouts) -> Result:
    """An empty chunked body (``0\\r\\n\\r\\n``), then a GET proving the connection still works."""
    path = random.choice(ECHO_PATHS)
    conv.stage = f"answer to empty chunked POST {path}"
    conv.send(chunked_request(path, []))
    await conv.expect(200, b"")
    conv.stage = "answer to the GET after an empty chunked POST"
    conv.send(request("GET", "/"))
    await conv.expect(200, HELLO)
    return Result("answered")


async def pipelined(conv: Conversation, t: Timeouts) -> Result:
    """A batch in one write; answers must come back complete and in order."""
    rng = random.Random()
    batch: list[tuple[bytes, bytes]] = []
    for _ in range(rng.randint(4, 12)):
        pick = rng.random()
        if pick < 0.3:
            batch.append((request("GET", rng.choice(("/", "/sync"))), HELLO))
        elif pick < 0.4:
            batch.append((request("POST", "/ignore", body=payload(rng, 512)), HELLO))
        else:
            body = rng.randbytes(rng.randint(1, 512))
            path = rng.choice(ECHO_PATHS)
            raw = request("POST", path, body=body) if pick < 0.7 else chunked_request(path, [body])
            batch.append((raw, body))
    conv.send(b"".join(raw for raw, _ in batch))
    for _, body in batch:
        conv.stage = "answer in a pipelined batch"
        await conv.expect(200, body)
    return Result("answered")


async def half_close(conv: Conversation, t: Timeouts) -> Result:
    """Send a whole request then shut down writing: the answer must still come, then a close."""
    rng = random.Random()
    pick = rng.randrange(3)
    if pick == 0:
        conv.send(request("GET", "/"))
        want = HELLO
    elif pick == 1:
        want = payload(rng)
        conv.send(request("POST", rng.choice(ECHO_PATHS), body=want))
    else:
        conv.send(request("GET", "/stream?n=5"))
        want = b"." * 512 * 5
    conv.writer.write_eof()
    conv.stage = "answer after the client half-closed"
    await conv.expect(200, want)
    conv.stage = "close after answering a half-closed client"
    await conv.expect_close()
    return Result("answered")


async def slow_body(conv: Conversation, t: Timeouts) -> Result:
    """A body trickled in well within the body deadline must be answered normally."""
    body = b"slowly but surely"
    gap = min(0.2, t.body / 4)
    path = random.choice(ECHO_PATHS)
    conv.send(f"POST {path} HTTP/1.1\r\nContent-Length: {len(body)}\r\n".encode() + HOST_HEADER)
    conv.send(b"\r\n")
    conv.stage = "trickling a body"
    for byte in body:
        conv.send(bytes([byte]))
        await asyncio.sleep(gap)
    conv.stage = "answer to a slow but steady body"
    await conv.expect(200, body)
    return Result("answered")


# --- clients a server must cut off -----------------------------------------------------


async def _await_cut_off(conv: Conversation) -> Result:
    """After a stall the server may send 408 (or 400) and must then close, or just close."""
    try:
        answer = await conv.read_answer()
    except ServerClosed:
        return Result("closed")
    if 200 <= answer.status < 300:
        raise Unexpected(f"answered {answer.status} to an unfinished request")
    conv.stage = f"close after {answer.status} to a stalled request"
    await conv.expect_close()
    return Result("answered", str(answer.status))


async def slowloris(conv: Conversation, t: Timeouts) -> Result:
    """A head trickled a byte at a time, never finished: the head deadline must end it."""
    conv.send(b"GET / HTTP/1.1\r\n" + HOST_HEADER + b"X-Slow: ")
    conv.stage = "cut off of a slowloris head"
    gap = max(0.2, t.header / 10)
    while True:
        try:
            data = await asyncio.wait_for(conv.reader.read(1), gap)
        except asyncio.TimeoutError:
            with contextlib.suppress(ConnectionError):
                conv.send(b"a")
            continue
        if not data:
            return Result("closed")
        conv.received += data
        while more := await conv.reader.read(65536):
            conv.received += more
        status = bytes(conv.received).split(b" ", 2)[1:2] or [b"?"]
        if not conv.received.startswith(b"HTTP/1.") or status[0].startswith(b"2"):
            raise Unexpected(f"answered {bytes(conv.received[:12])!r} to an unfinished head")
        return Result("answered", status[0].decode(errors="replace"))


async def stalled_body(conv: Conversation, t: Timeouts) -> Result:
    """Part of a body, then silence: the body deadline must end it."""
    rng = random.Random()
    path = rng.choice(ECHO_PATHS)
    if rng.random() < 0.5:
        conv.send(
            f"POST {path} HTTP/1.1\r\n".encode() + HOST_HEADER + b"Content-Length: 1000\r\n\r\n"
        )
        conv.send(b"z" * 100)
    else:
        conv.send(
            f"POST {path} HTTP/1.1\r\n".encode()
            + HOST_HEADER
            + b"Transfer-Encoding: chunked\r\n\r\n64\r\n"
            + b"z" * 50
        )
    conv.stage = "cut off of a stalled body"
    return await _await_cut_off(conv)


# --- clients that leave ----------------------------------------------------------------


async def abandon(conv: Conversation, t: Timeouts) -> Result:
    """Half a request, then FIN or RST: nothing to read, the server must just let go."""
    rng = random.Random()
    whole = rng.choice(
        (
            request("GET", "/"),
            request("POST", rng.choice(ECHO_PATHS), body=b"q" * 2000),
            chunked_request(rng.choice(ECHO_PATHS), [b"q" * 300, b"r" * 300]),
        )
    )
    conv.send(whole[: rng.randint(1, len(whole) - 1)])
    await asyncio.sleep(rng.uniform(0, 0.2))
    how = "reset" if rng.random() < 0.5 else "close"
    if how == "reset":
        conv.reset()
    else:
        conv.writer.close()
    return Result("answered", f"half a request, then {how}")


async def _leave_mid_response(conv: Conversation, reset: bool) -> Result:
    rng = random.Random()
    path = rng.choice(("/stream?n=100", "/big"))
    conv.send(request("GET", path))
    conv.stage = f"first bytes of {path}"
    got = await conv.reader.read(rng.choice((100, 16384)))
    if not got:
        raise Unexpected(f"closed before answering {path}")
    if not got.startswith(b"HTTP/1.1 200 "):
        conv.received += got
        raise Unexpected(f"answered {got[:12]!r} to GET {path}")
    if reset:
        conv.reset()
    else:
        conv.writer.close()
    return Result("answered", path)


async def fin_mid_response(conv: Conversation, t: Timeouts) -> Result:
    return await _leave_mid_response(conv, reset=False)


async def rst_mid_response(conv: Conversation, t: Timeouts) -> Result:
    return await _leave_mid_response(conv, reset=True)


async def fin_while_waiting(conv: Conversation, t: Timeouts) -> Result:
    """Leave while the application waits (a long-poll); whether it noticed shows in /stats."""
    conv.send(request("GET", "/wait"))
    await asyncio.sleep(random.uniform(0.1, 0.5))
    conv.writer.close()
    return Result("answered")


async def during_drain(conv: Conversation, t: Timeouts) -> Result:
    """A request on a connection made while the server drains: answered, or never read."""
    conv.send(request("GET", "/"))
    conv.stage = "answer to a GET sent while the server drains"
    await conv.expect(200, HELLO)
    return Result("answered")


# --- malformed requests ----------------------------------------------------------------


@dataclass(frozen=True)
class Vector:
    name: str
    raw: bytes
    statuses: frozenset[int]
    body_path: bool = False  # "{path}" in raw is replaced by an echo path


def _chunked(body: bytes) -> bytes:
    return b"POST {path} HTTP/1.1\r\n" + HOST_HEADER + b"Transfer-Encoding: chunked\r\n\r\n" + body


def _get(headers: bytes, line: bytes = b"GET / HTTP/1.1") -> bytes:
    return line + b"\r\n" + headers + b"\r\n"


E400 = frozenset({400})
VECTORS = (
    Vector("chunk size not hex", _chunked(b"zz\r\nhello\r\n0\r\n\r\n"), E400, True),
    Vector("chunk size 0x prefix", _chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), E400, True),
    Vector("chunk size +", _chunked(b"+5\r\nhello\r\n0\r\n\r\n"), E400, True),
    Vector("chunk size overflow", _chunked(b"f" * 20 + b"\r\nhi\r\n0\r\n\r\n"), E400 | {413}, True),
    Vector("chunk longer than declared", _chunked(b"5\r\nhello!!\r\n0\r\n\r\n"), E400, True),
    Vector("chunk without CRLF", _chunked(b"5\r\nhello0\r\n\r\n"), E400, True),
    Vector("chunk bare LF", _chunked(b"5\nhello\n0\n\n"), E400, True),
    Vector(
        "Content-Length with chunked",
        b"POST {path} HTTP/1.1\r\n" + HOST_HEADER
        + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        E400,
        True,
    ),
    Vector(
        "two different Content-Length",
        b"POST {path} HTTP/1.1\r\n" + HOST_HEADER
        + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        E400,
        True,
    ),
    Vector(
        "Content-Length +5",
        b"POST {path} HTTP/1.1\r\n" + HOST_HEADER + b"Content-Length: +5\r\n\r\nhello",
        E400,
        True,
    ),
    Vector(
        "Content-Length -1",
        b"POST {path} HTTP/1.1\r\n" + HOST_HEADER + b"Content-Length: -1\r\n\r\n",
        E400,
        True,
    ),
    Vector(
        "unknown transfer coding",
        b"POST {path} HTTP/1.1\r\n" + HOST_HEADER + b"Transfer-Encoding: gzip\r\n\r\nhello",
        E400 | {501},
        True,
    ),
    Vector("no Host", _get(b""), E400),
    Vector("two Host", _get(HOST_HEADER + HOST_HEADER), E400),
    Vector("empty Host", _get(b"Host: \r\n"), E400),
    Vector("Host with userinfo", _get(b"Host: user@soak\r\n"), E400),
    Vector("Host with path", _get(b"Host: soak/path\r\n"), E400),
    Vector("Host list", _get(b"Host: a, b\r\n"), E400),
    # A lone token may be read as an unknown method (501) or as no request line at all (400).
    Vector("garbage request line", b"GARBAGE\r\n\r\n", E400 | {501}),
    Vector("TLS ClientHello on a plain port", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1", E400),
    Vector("extra token in request line", _get(HOST_HEADER, b"GET / HTTP/1.1 x"), E400),
    Vector("bad version", _get(HOST_HEADER, b"GET / HTTP/1.x"), E400 | {505}),
    Vector("HTTP/2.0 request line", _get(HOST_HEADER, b"GET / HTTP/2.0"), E400 | {505}),
    Vector("asterisk-form GET", _get(HOST_HEADER, b"GET * HTTP/1.1"), E400),
    Vector("request line too long", _get(HOST_HEADER, b"GET /" + b"a" * 9000 + b" HTTP/1.1"),
           E400 | {414}),
    Vector("150 header fields", _get(HOST_HEADER + b"X-Many: v\r\n" * 150), E400 | {431}),
    Vector("70 KiB header", _get(HOST_HEADER + b"X-Big: " + b"b" * 70_000 + b"\r\n"), E400 | {431}),
    Vector("NUL in header value", _get(HOST_HEADER + b"X-A: a\x00b\r\n"), E400),
    Vector("bare CR in header value", _get(HOST_HEADER + b"X-A: a\rb\r\n"), E400),
    Vector("obs-fold", _get(HOST_HEADER + b"X-A: a\r\n b\r\n"), E400),
    Vector("space before colon", _get(b"Host : soak\r\n"), E400),
    Vector("space in header name", _get(HOST_HEADER + b"X A: b\r\n"), E400),
)  # fmt: skip


async def _what_follows(conv: Conversation) -> str:
    """ " then N" if a second answer arrives within a second, so the report shows both."""
    rest = b""
    with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
        rest = await asyncio.wait_for(conv.reader.read(65536), 1.0)
    conv.received += rest
    if rest[:5] != b"HTTP/":
        return ""
    return f" then {rest.split(b' ', 2)[1].decode(errors='replace')}"


async def malformed(conv: Conversation, t: Timeouts) -> Result:
    """One refused request: exactly one error answer, then the server closes."""
    vector = random.choice(VECTORS)
    path = random.choice((*ECHO_PATHS, "/ignore"))
    conv.send(vector.raw.replace(b"{path}", path.encode()))
    conv.stage = f"answer to malformed: {vector.name}"
    try:
        answer = await conv.read_answer()
    except ServerClosed:
        return Result("closed", vector.name)
    if 200 <= answer.status < 300 and vector.body_path and path == "/ignore":
        # The application answered before the body was read; what matters is that the
        # server then only closes, and never adds an answer of its own.
        conv.stage = f"close after {answer.status} to an unread malformed body: {vector.name}"
        await conv.expect_close()
        return Result("answered", f"{vector.name}: {answer.status} from /ignore, then closed")
    wrong = 200 <= answer.status < 300 or answer.status not in vector.statuses
    if wrong:
        conv.stage = f"rest after {answer.status} to malformed: {vector.name}"
        then = await _what_follows(conv)
        expected = "" if answer.status < 300 else f", expected {sorted(vector.statuses)}"
        raise Unexpected(f"{vector.name}: answered {answer.status}{then}{expected}")
    conv.stage = f"close after {answer.status} to malformed: {vector.name}"
    await conv.expect_close()
    return Result("answered", f"{vector.name}: {answer.status}")


# Kind -> (client, weight, deadline in seconds given the server's timeouts).
KINDS: dict[str, tuple[Client, int, Callable[[Timeouts], float]]] = {
    "get-keepalive": (get_keepalive, 20, lambda t: 10.0),
    "post-content-length": (post_length, 10, lambda t: 10.0),
    "post-chunked": (post_chunked, 10, lambda t: 10.0),
    "post-empty-chunked": (post_empty_chunked, 5, lambda t: 10.0),
    "pipelined": (pipelined, 8, lambda t: 10.0),
    "half-close": (half_close, 5, lambda t: t.keepalive + 10.0),
    "slow-body": (slow_body, 3, lambda t: 20.0),
    "malformed": (malformed, 16, lambda t: 10.0),
    "slowloris": (slowloris, 3, lambda t: t.header + 5.0),
    "stalled-body": (stalled_body, 3, lambda t: t.body + 5.0),
    "abandon": (abandon, 6, lambda t: 5.0),
    "fin-mid-response": (fin_mid_response, 4, lambda t: 10.0),
    "rst-mid-response": (rst_mid_response, 4, lambda t: 10.0),
    "fin-while-waiting": (fin_while_waiting, 3, lambda t: 5.0),
    # Not part of the mix (weight 0): only run while the server shuts down, at the end.
    "during-drain": (during_drain, 0, lambda t: 10.0),
}
