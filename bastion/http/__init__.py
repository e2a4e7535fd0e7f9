"""Sans-IO HTTP/1.1: bytes in, request events out; responses out as bytes.

And for a proxy's upstream side: requests out as bytes, responses in as events.
"""

from bastion.http.errors import (
    BadGateway,
    BadRequest,
    ContentTooLarge,
    ExpectationFailed,
    HeadersTooLarge,
    IncompleteResponse,
    NoResponse,
    NotImplementedByServer,
    ProtocolError,
    RequestTimeout,
    URITooLong,
    VersionNotSupported,
)
from bastion.http.forwarding import (
    encode_response_head,
    forward_request_head,
    forward_response_headers,
    forwarding_fields,
    origin_form,
    remove_hop_by_hop,
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
from bastion.http.upstream import ResponseHead, ResponseParser, ResponseSink

__all__ = [
    "BadGateway",
    "BadRequest",
    "CONTINUE_RESPONSE",
    "ContentTooLarge",
    "ExpectationFailed",
    "HeadersTooLarge",
    "IncompleteResponse",
    "LAST_CHUNK",
    "STATUS_LINES",
    "Limits",
    "NoResponse",
    "NotImplementedByServer",
    "ProtocolError",
    "RequestHead",
    "RequestParser",
    "RequestSink",
    "RequestTimeout",
    "ResponseHead",
    "ResponseParser",
    "ResponseSink",
    "URITooLong",
    "VersionNotSupported",
    "encode_chunk",
    "encode_headers",
    "encode_response_head",
    "error_response",
    "format_date",
    "forward_request_head",
    "forward_response_headers",
    "forwarding_fields",
    "parse_content_length",
    "origin_form",
    "reason_phrase",
    "remove_hop_by_hop",
    "status_allows_body",
    "status_line",
]
