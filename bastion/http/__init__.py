"""Sans-IO HTTP/1.1: bytes in, request events out; responses out as bytes."""

from bastion.http.errors import (
    BadRequest,
    ContentTooLarge,
    ExpectationFailed,
    HeadersTooLarge,
    NotImplementedByServer,
    ProtocolError,
    RequestTimeout,
    URITooLong,
    VersionNotSupported,
)
from bastion.http.limits import Limits
from bastion.http.parser import RequestParser, RequestSink, parse_content_length
from bastion.http.request import RequestHead
from bastion.http.response import (
    CONTINUE_RESPONSE,
    LAST_CHUNK,
    STATUS_LINES,
    encode_chunk,
    encode_headers,
    error_response,
    format_date,
    reason_phrase,
    status_allows_body,
    status_line,
)

__all__ = [
    "BadRequest",
    "CONTINUE_RESPONSE",
    "ContentTooLarge",
    "ExpectationFailed",
    "HeadersTooLarge",
    "LAST_CHUNK",
    "STATUS_LINES",
    "Limits",
    "NotImplementedByServer",
    "ProtocolError",
    "RequestHead",
    "RequestParser",
    "RequestSink",
    "RequestTimeout",
    "URITooLong",
    "VersionNotSupported",
    "encode_chunk",
    "encode_headers",
    "error_response",
    "format_date",
    "parse_content_length",
    "reason_phrase",
    "status_allows_body",
    "status_line",
]
