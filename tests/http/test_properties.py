"""Property-based tests of the request parser: however bytes are cut, and whatever is broken.

Bounded so the file runs in a few seconds; ``tests/fuzz/`` runs the same properties for as
long as one likes.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.http import ProtocolError
from tests.http.strategies import (
    LIMITS,
    Mutation,
    Request,
    expected_summary,
    feed_checked,
    mutate,
    mutations,
    pipelines,
    split,
    wire,
)

# No example database: a run leaves no files behind and every run starts fresh.
BOUNDED = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@BOUNDED
@given(pipeline=pipelines(), cuts=st.lists(st.integers(0, 10_000), max_size=12))
def test_any_split_parses_like_the_whole(pipeline: list[Request], cuts: list[int]) -> None:
    data = wire(pipeline)
    whole, error = feed_checked([data])
    assert error is None, error
    assert whole.summary() == expected_summary(pipeline)
    pieces, failure = feed_checked(split(data, [cut % (len(data) + 1) for cut in cuts]))
    assert failure is None, failure
    assert pieces.summary() == whole.summary()


@BOUNDED
@given(pipeline=pipelines())
def test_byte_by_byte_parses_like_the_whole(pipeline: list[Request]) -> None:
    data = wire(pipeline)
    sink, error = feed_checked([data[i : i + 1] for i in range(len(data))])
    assert error is None, error
    assert sink.summary() == expected_summary(pipeline)


@BOUNDED
@given(
    pipeline=pipelines(),
    changes=mutations(),
    cuts=st.lists(st.integers(0, 100_000), max_size=8),
)
def test_mutations_are_refused_or_parsed_never_crash(
    pipeline: list[Request], changes: list[Mutation], cuts: list[int]
) -> None:
    data = mutate(wire(pipeline), changes)
    for pieces in ([data], split(data, [cut % (len(data) + 1) for cut in cuts])):
        sink, error = feed_checked(pieces)
        # Whatever was reported is self-consistent (the recording sink asserts the order),
        # and every head it saw respects the limits.
        for head in sink.heads:
            assert len(head.target) <= LIMITS.max_request_line
            assert len(head.headers) <= LIMITS.max_header_count + 1
            assert head.content_length is None or head.content_length <= LIMITS.max_body_bytes
        assert all(len(body) <= LIMITS.max_body_bytes for body in sink.bodies)
        assert error is None or isinstance(error, ProtocolError)


@BOUNDED
@given(
    pipeline=pipelines(),
    where=st.integers(0, 10_000),
    filler=st.sampled_from([b"a", b"0", b" ", b"\t", b"f", b";", b"=", b"%"]),
    piece=st.integers(1, 700),
)
def test_a_line_that_never_ends_is_refused_within_a_bound(
    pipeline: list[Request], where: int, filler: bytes, piece: int
) -> None:
    # Whatever the state the run of bytes lands in (request line, field, chunk size or
    # extension, trailer, body), the parser refuses or consumes it: it never just holds it.
    data = wire(pipeline)
    at = where % (len(data) + 1)
    flood = data[:at] + filler * 20_000
    sink, error = feed_checked([flood[i : i + piece] for i in range(0, len(flood), piece)])
    if error is None:
        # Accepted as far as it went: then the bytes were a body, or a request it finished.
        assert sink.heads
