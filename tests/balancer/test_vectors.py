"""The server's table of malformed requests, sent to the balancer instead of to an app.

Each vector must get the answer the engine gives it (the balancer is an engine handler), and
no refused request may reach the upstream: the upstream counts every request it receives.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bastion.balancer import Balancer, single_route
from tests.engine.test_vectors import CLOSED, CONFIG, VECTORS, Vector, exchange, make_app, params
from tests.engine.test_vectors import statuses as responses_in
from tests.serving import RunningServer, serve

# The stalling vectors wait for a deadline each; the engine's own table covers them, and
# here they would only lengthen the run.
QUICK = [param for param in params() if not param.values[0].name.startswith("stall-")]  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[RunningServer, RunningServer]]:
    with serve(make_app(), CONFIG) as upstream:
        with serve(Balancer(single_route([upstream.url])), CONFIG) as balancer:
            yield balancer, upstream


@pytest.mark.parametrize("vector", QUICK)
def test_vector_through_the_balancer(
    stack: tuple[RunningServer, RunningServer], vector: Vector
) -> None:
    balancer, upstream = stack
    before = upstream.stats.requests
    data, closed = exchange(balancer, vector)
    assert closed, f"no close; received {data[:300]!r}"
    responses = responses_in(data)
    # Only the valid requests pipelined before the bad one reach the upstream.
    assert upstream.stats.requests - before == vector.answered
    if vector.status == CLOSED:
        assert len(responses) <= 1 + vector.answered, data[:300]
        return
    assert [status for status, _, _ in responses] == [200] * vector.answered + [vector.status]


def test_the_table_is_all_there() -> None:
    assert len(QUICK) > 250 and len(VECTORS) > len(QUICK)
