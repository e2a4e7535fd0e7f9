"""Hypothesis strategies for HTTP/1.1 requests, and the checks every parse must pass.

Shared by the bounded property tests (``test_properties.py``) and the long-running fuzz
target in ``tests/fuzz/``: a generated request knows what the parser must report for it, so a
parse is checked against that, not only against another parse.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import strategies as st

from bastion.http import Limits, ProtocolError, RequestHead, RequestParser

# Room for everything the generators below produce, while a mutation that grows a field or a
# body runs into a limit quickly.
LIMITS = Limits(
    max_request_line=300, max_header_count=20, max_header_bytes=2000, max_body_bytes=4000
)

TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
PCHAR = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@"
# Field values: visible ASCII and obs-text, with spaces and tabs inside but not at the ends
# (those are not part of the value, RFC 9110 §5.5).
VALUE_CHARS = [chr(c) for c in range(0x21, 0x7F)] + [chr(c) for c in range(0x80, 0x100)]
# Names the generator must not produce at random: they change framing, routing or keep-alive.
RESERVED = {
    b"host",
    b"content-length",
    b"transfer-encoding",
    b"expect",
    b"connection",
    b"upgrade",
    b"te",
    b"trailer",
    b"keep-alive",
    b"proxy-connection",
}


# Any token is a method (RFC 9110 §9.1); these few mean something else to llhttp or to us.
_NOT_EXTENSIONS = {"CONNECT", "PRI"}


@dataclass
class Request:
    """One generated request: its bytes and what the parser must report for it."""

    method: str
    target: bytes
    version: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    wire: bytes
    path: bytes  # the origin-form the head must route by
    authority: bytes | None
    chunked: bool
    content_length: int | None


@dataclass
class Recording:
    """A RequestSink that keeps heads, body bytes per request, and request ends."""

    heads: list[RequestHead] = field(default_factory=list)
    bodies: list[bytearray] = field(default_factory=list)
    ends: int = 0

    def on_request(self, head: RequestHead) -> None:
        self.heads.append(head)
        self.bodies.append(bytearray())

    def on_body(self, data: bytes) -> None:
        assert data, "an empty body chunk was reported"
        assert self.bodies, "a body chunk before any head"
        assert self.ends < len(self.heads), "a body chunk after its request ended"
        self.bodies[-1] += data

    def on_request_end(self) -> None:
        assert self.ends == len(self.heads) - 1, "a request end without its head"
        self.ends += 1

    def summary(self) -> list[tuple[object, ...]]:
        """Plain values for comparing two parses of the same bytes."""
        return [
            (
                head.method,
                head.target,
                head.version,
                list(head.headers),
                head.keep_alive,
                head.content_length,
                head.chunked,
                head.expect_continue,
                head.upgrade,
                head.path,
                head.raw_path,
                head.query_string,
                head.authority,
                bytes(body),
            )
            for head, body in zip(self.heads, self.bodies, strict=True)
        ] + [("ends", self.ends)]


def token(min_size: int = 1, max_size: int = 12) -> st.SearchStrategy[bytes]:
    return st.text(TCHAR, min_size=min_size, max_size=max_size).map(str.encode)


def field_value() -> st.SearchStrategy[bytes]:
    inner = st.text([*VALUE_CHARS, " ", "\t"], max_size=30)
    edge = st.sampled_from(VALUE_CHARS)
    return st.one_of(
        st.just(""),
        st.builds(lambda a, b, c: a + b + c, edge, inner, edge),
        edge,
    ).map(lambda text: text.encode("latin-1"))


def field_name() -> st.SearchStrategy[bytes]:
    return token(1, 16).filter(lambda name: name.lower() not in RESERVED)


def hosts() -> st.SearchStrategy[bytes]:
    label = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10)
    name = st.lists(label, min_size=1, max_size=3).map(".".join)
    port = st.one_of(st.just(""), st.integers(0, 65535).map(lambda p: f":{p}"))
    literal = st.sampled_from(["[::1]", "[2001:db8::7]", "127.0.0.1", "10.1.2.3"])
    return st.builds(lambda h, p: (h + p).encode(), st.one_of(name, literal), port)


def origin_forms() -> st.SearchStrategy[bytes]:
    segment = st.text(PCHAR + "%", max_size=8).map(
        lambda s: s.replace("%", "%25")  # a lone % would be a bad escape; keep it valid
    )
    path = st.lists(segment, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))
    query = st.one_of(st.just(""), st.text(PCHAR + "/?", max_size=12).map(lambda q: "?" + q))
    return st.builds(lambda p, q: (p + q).encode(), path, query)


@st.composite
def requests(draw: st.DrawFn, last: bool = False) -> Request:
    """A valid request; ``last`` allows one that ends the connection."""
    method = draw(
        st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
        | st.sampled_from(["PURGE", "REPORT", "PLAY", "get", "-BLARGH"])
        | st.text(TCHAR, min_size=1, max_size=12).filter(lambda m: m not in _NOT_EXTENSIONS)
    )
    version = draw(st.sampled_from(["1.1", "1.1", "1.1", "1.0"]))
    origin = draw(origin_forms())
    host = draw(hosts())
    form = draw(st.sampled_from(["origin", "origin", "origin", "absolute", "asterisk"]))
    target, path = origin, origin
    authority: bytes | None = host
    if form == "absolute":
        scheme = draw(st.sampled_from([b"http", b"https", b"HTTP"]))
        authority = draw(hosts())
        target = scheme + b"://" + authority + origin
    elif form == "asterisk":
        method, target, path = "OPTIONS", b"*", b"*"
    headers: list[tuple[bytes, bytes]] = []
    send_host = version == "1.1" or draw(st.booleans())
    if send_host:
        headers.append((draw(st.sampled_from([b"Host", b"host", b"HOST"])), host))
    elif form != "absolute":
        authority = None
    headers += draw(st.lists(st.tuples(field_name(), field_value()), max_size=5))
    if version == "1.0":
        headers.append((b"Connection", b"keep-alive"))
    elif last and draw(st.booleans()):
        headers.append((b"Connection", b"close"))
    body = b""
    chunked = False
    content_length: int | None = None
    framing = draw(
        st.sampled_from(["none", "length", "chunked"] if version == "1.1" else ["none", "length"])
    )
    wire_body = b""
    if framing == "length":
        body = draw(st.binary(max_size=200))
        content_length = len(body)
        headers.append((b"Content-Length", str(len(body)).encode()))
        wire_body = body
    elif framing == "chunked":
        chunked = True
        headers.append((b"Transfer-Encoding", draw(st.sampled_from([b"chunked", b"Chunked"]))))
        chunks = draw(st.lists(st.binary(min_size=1, max_size=60), max_size=5))
        body = b"".join(chunks)
        for chunk in chunks:
            size = b"%x" % len(chunk)
            if draw(st.booleans()):
                size = size.upper()
            if draw(st.integers(0, 3)) == 0:
                size += b";" + draw(token()) + b"=" + draw(token())
            wire_body += size + b"\r\n" + chunk + b"\r\n"
        wire_body += b"0\r\n"
        for name, value in draw(st.lists(st.tuples(field_name(), field_value()), max_size=3)):
            wire_body += name + b": " + value + b"\r\n"
        wire_body += b"\r\n"
    if draw(st.booleans()):
        headers.append((b"Expect", b"100-continue"))
    order = draw(st.permutations(range(len(headers))))
    headers = [headers[i] for i in order]
    head = f"{method} ".encode() + target + f" HTTP/{version}\r\n".encode()
    head += b"".join(name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n"
    return Request(
        method,
        target,
        version,
        headers,
        body,
        head + wire_body,
        path,
        authority,
        chunked,
        content_length,
    )


@st.composite
def pipelines(draw: st.DrawFn) -> list[Request]:
    first = draw(st.lists(requests(), max_size=3))
    return [*first, draw(requests(last=True))]


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(max(cut, 0), len(data)) for cut in cuts})
    pieces, start = [], 0
    for point in [*points, len(data)]:
        pieces.append(data[start:point])
        start = point
    return pieces


def feed_checked(
    pieces: list[bytes], limits: Limits = LIMITS
) -> tuple[Recording, ProtocolError | None]:
    """Feed ``pieces``; check the parser's own buffers after each; stop at a ProtocolError.

    Anything else raised is a bug and propagates.
    """
    sink = Recording()
    parser = RequestParser(sink, limits)
    for piece in pieces:
        try:
            parser.feed(piece)
        except ProtocolError as error:
            assert error.detail
            assert 400 <= error.status <= 505
            return sink, error
        check_bounded(parser, limits)
    return sink, None


def check_bounded(parser: RequestParser, limits: Limits) -> None:
    """What the parser holds between feeds stays within the limits it was given."""
    state = parser  # private fields: the point is what it holds, not what it reports
    assert len(state._url) <= limits.max_request_line
    assert state._header_bytes <= limits.max_header_bytes
    # One more than the count: an absolute-form HTTP/1.0 request is given a Host field.
    assert len(state._headers) <= limits.max_header_count + 1
    assert state._unseen_bytes <= limits.max_header_bytes + limits.max_request_line


def expected_summary(pipeline: list[Request]) -> list[tuple[object, ...]]:
    """What parsing ``pipeline`` must report, worked out from the generator, not the parser."""
    from urllib.parse import unquote_to_bytes

    out: list[tuple[object, ...]] = []
    for request in pipeline:
        headers = list(request.headers)
        if request.authority is not None:
            present = [i for i, (name, _) in enumerate(headers) if name.lower() == b"host"]
            for index in present:
                headers[index] = (headers[index][0], request.authority)
            if not present:
                headers.append((b"Host", request.authority))
        raw_path, _, query = request.path.partition(b"?")
        connection = [v.lower() for n, v in request.headers if n.lower() == b"connection"]
        keep_alive = b"close" not in connection and (
            request.version == "1.1" or b"keep-alive" in connection
        )
        has_content = request.chunked or bool(request.content_length)
        expect = any(n == b"Expect" for n, _ in request.headers)
        out.append(
            (
                request.method,
                request.target,
                request.version,
                headers,
                keep_alive,
                request.content_length,
                request.chunked,
                expect and has_content and request.version == "1.1",
                False,
                unquote_to_bytes(raw_path).decode("utf-8", "surrogateescape"),
                raw_path,
                query,
                None if request.authority is None else request.authority.decode(),
                request.body,
            )
        )
    return [*out, ("ends", len(pipeline))]


def wire(pipeline: list[Request]) -> bytes:
    return b"".join(request.wire for request in pipeline)


# (kind, where, bytes, count): where is taken modulo the length, so any integer lands inside.
Mutation = tuple[str, int, bytes, int]


def mutations(max_size: int = 4) -> st.SearchStrategy[list[Mutation]]:
    return st.lists(
        st.tuples(
            st.sampled_from(["replace", "insert", "delete", "repeat"]),
            st.integers(0, 10_000),
            st.binary(min_size=1, max_size=4)
            | st.sampled_from(
                [b"\r", b"\n", b"\r\n", b" ", b"\t", b"\x00", b":", b",", b";", b"0", b"#", b"@"]
            ),
            st.integers(1, 3000),
        ),
        min_size=1,
        max_size=max_size,
    )


def mutate(data: bytes, changes: list[Mutation]) -> bytes:
    for kind, where, value, count in changes:
        at = where % (len(data) + 1)
        if kind == "replace":
            data = data[:at] + value + data[at + len(value) :]
        elif kind == "insert":
            data = data[:at] + value + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + count % 16 + 1 :]
        else:  # a long run of one piece: what grows a field, a line or a body past a limit
            data = data[:at] + value * count + data[at:]
    return data
