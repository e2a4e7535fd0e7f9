"""Request metrics recorded per request: labels, buckets and bounds, from served exchanges."""

from __future__ import annotations

import socket
from bisect import bisect_left

import pytest

from bastion import App, Request, Response
from bastion.engine.exchange import Exchange
from bastion.observe.metrics import DURATION_BUCKETS, OVERFLOW, RequestMetrics
from tests.serving import read_response, serve

ITEM_METHODS = ("GET", "POST", "DELETE", "PROPFIND", "PURGE", "MKCOL")
app = App()


@app.route("/items/{id}", methods=ITEM_METHODS)
async def item(request: Request) -> Response:
    await request.body()
    if request.method == "POST":
        return Response(b"", status=201)
    return Response(b"0123456789")


def served(requests: list[bytes]) -> tuple[list[Exchange], list[int]]:
    """Serve ``requests`` on one connection: the exchanges and the body length of each answer."""
    exchanges: list[Exchange] = []
    lengths: list[int] = []
    with serve(app, observers=[lambda exchange, _: exchanges.append(exchange)]) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            for request in requests:
                sock.sendall(request)
                lengths.append(len(read_response(sock)[2]))
    assert len(exchanges) == len(requests)
    return exchanges, lengths


def get(path: str = "/items/1", method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


def rows(metrics: RequestMetrics) -> dict[tuple[str, int, str], tuple[int, ...]]:
    return {(m, s, r): tuple(rest) for m, s, r, *rest in metrics.snapshot()["requests"]}


def test_requests_are_counted_by_method_status_and_route() -> None:
    post = b"POST /items/2 HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" + b"x" * 100
    exchanges, lengths = served([get(), get(), get(), post, get("/nowhere")])
    metrics = RequestMetrics()
    for exchange in exchanges[:4]:
        metrics.record(exchange, 0.0002)
    metrics(exchanges[4], 0.0001)  # the object itself observes too
    counted = rows(metrics)
    assert counted == {
        ("GET", 200, "/items/{id}"): (3, 0, 30),
        ("POST", 201, "/items/{id}"): (1, 100, 0),
        ("GET", 404, ""): (1, 0, lengths[4]),
    }
    # Counters stay integers: a float would be exported as one ("3.0").
    assert all(type(value) is int for row in counted.values() for value in row)
    assert metrics.completed == 5


def test_methods_outside_rfc_9110_share_one_row() -> None:
    exchanges, _ = served([get(method=method) for method in ("PROPFIND", "PURGE", "PROPFIND")])
    metrics = RequestMetrics()
    for exchange in exchanges:
        metrics.record(exchange, 0.0)
    assert rows(metrics) == {("OTHER", 200, "/items/{id}"): (3, 0, 30)}


@pytest.mark.parametrize(
    "duration",
    [0.0, 0.0009, 0.001, 0.0011, 0.0025, 0.003, 0.005, 0.0051, 0.01, 0.3, 10.0, 12.0],
)
def test_each_duration_lands_in_the_bucket_bisect_would_choose(duration: float) -> None:
    (exchange,), _ = served([get()])
    metrics = RequestMetrics()
    metrics.record(exchange, duration)
    (histogram,) = metrics.snapshot()["durations"]
    buckets, seconds = histogram[2:-1], histogram[-1]
    expected = [0] * (len(DURATION_BUCKETS) + 1)
    expected[bisect_left(DURATION_BUCKETS, duration)] = 1
    assert list(buckets) == expected
    assert seconds == duration


def test_label_sets_beyond_the_cap_lose_their_route() -> None:
    (get_exchange, delete_exchange), _ = served([get(), get(method="DELETE")])
    metrics = RequestMetrics(max_series=2)
    for index in range(50):
        for exchange in (get_exchange, delete_exchange):
            exchange.route = f"/r{index}"
            metrics.record(exchange, 0.0)
    counted = rows(metrics)
    assert len(counted) == 4
    assert counted[("GET", 200, OVERFLOW)][0] + counted[("DELETE", 200, OVERFLOW)][0] == 98
    assert metrics.completed == 100
    # The rows remembered for the labels as requests carry them are bounded too.
    assert len(metrics._rows) <= 2 * metrics.max_series + 64
