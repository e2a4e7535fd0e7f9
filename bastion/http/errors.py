"""Protocol errors: each one carries the status a server should answer with."""

from __future__ import annotations


class ProtocolError(Exception):
    """The peer broke HTTP/1.1 framing or a limit; answer ``status`` and close.

    Every protocol error closes the connection: once the framing of one request is in doubt,
    the position of the next one is a guess, and guessing is how request smuggling starts.
    """

    status = 400
    reason = "Bad Request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(ProtocolError):
    status = 400
    reason = "Bad Request"


class RequestTimeout(ProtocolError):
    status = 408
    reason = "Request Timeout"


class ContentTooLarge(ProtocolError):
    status = 413
    reason = "Content Too Large"


class URITooLong(ProtocolError):
    status = 414
    reason = "URI Too Long"


class ExpectationFailed(ProtocolError):
    status = 417
    reason = "Expectation Failed"


class HeadersTooLarge(ProtocolError):
    status = 431
    reason = "Request Header Fields Too Large"


class NotImplementedByServer(ProtocolError):
    status = 501
    reason = "Not Implemented"


class VersionNotSupported(ProtocolError):
    status = 505
    reason = "HTTP Version Not Supported"


class BadGateway(ProtocolError):
    """An upstream's response is malformed, ambiguous or over a limit.

    Raised by the response parser, never by the request parser: the status is the one a proxy
    answers its own client with, and the upstream connection it came from must be dropped.
    """

    status = 502
    reason = "Bad Gateway"


class NoResponse(BadGateway):
    """The upstream closed the connection before any byte of an awaited response arrived.

    Kept apart from other failures because it is the one where a proxy may try the request
    again (on an idle pooled connection it is the usual race with the upstream's keep-alive
    timeout); whether that is safe for the request's method is the proxy's call.
    """


class IncompleteResponse(BadGateway):
    """The upstream closed the connection in the middle of a response."""
