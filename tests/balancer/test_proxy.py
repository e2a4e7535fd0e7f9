"""The reverse proxy over real sockets: real upstream servers, real clients, scripted bad ones."""

from __future__ import annotations

import collections
import gc
import http.client
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from bastion import App
from bastion.app import Request
from bastion.balancer import Balancer
from bastion.balancer.config import (
    BalancerConfig,
    ConnectionLimits,
    HashKey,
    HealthCheck,
    OutlierDetection,
    RetryPolicy,
    Route,
    Timeouts,
    Upstream,
    single_route,
)
from bastion.engine import ServerConfig
from tests.balancer.upstreams import RawUpstream, balancer, echo_app, raw_upstream, read_head
from tests.serving import RunningServer, read_response, serve

Pair = tuple[RunningServer, RunningServer]


@pytest.fixture
def two() -> Iterator[tuple[RunningServer, RunningServer]]:
    with serve(echo_app("a")) as a, serve(echo_app("b")) as b:
        yield a, b


def names(client: httpx.Client, count: int, path: str = "/") -> list[str]:
    return [client.get(path).text.split("\n", 1)[0].removeprefix("name=") for _ in range(count)]


def fields(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = collections.defaultdict(list)
    for line in text.splitlines():
        if ": " in line:
            key, value = line.split(": ", 1)
            found[key].append(value)
    return found


def closed_port() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


# Spreading and reuse ---------------------------------------------------------------------------


def test_round_robin_alternates_and_reuses_upstream_connections(two: Pair) -> None:
    a, b = two
    with balancer(single_route([a.url, b.url])) as lb, httpx.Client(base_url=lb.url) as client:
        assert names(client, 6) == ["a", "b", "a", "b", "a", "b"]
        names(client, 20)
    # Sequential requests need one kept-alive connection per upstream, not one each.
    assert a.stats.connections_opened == 1
    assert b.stats.connections_opened == 1


@pytest.mark.parametrize("request_buffer", [65536, 0], ids=["buffered", "streamed"])
def test_requests_read_in_one_turn_each_reach_the_upstream_and_get_their_own_answer(
    two: Pair, request_buffer: int
) -> None:
    # The requests a turn sends upstream are held until it ends, as its responses are; a
    # body streamed after its head (no request buffer) must still follow the head.
    a, _ = two
    with balancer(single_route([a.url], request_buffer=request_buffer)) as lb:
        socks = [lb.connect() for _ in range(80)]
        try:
            time.sleep(0.2)  # every connection accepted
            lb.loop.call_soon_threadsafe(time.sleep, 0.3)  # the next turn reads them all
            time.sleep(0.05)
            for n, sock in enumerate(socks):
                sock.sendall(f"GET /{n}?q HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            for n, sock in enumerate(socks):
                status, _, body = read_response(sock)
                assert status == 200 and f"path=/{n}?q\n" in body.decode()
            body = b"x" * 100
            for n, sock in enumerate(socks):
                sock.sendall(
                    b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(body) + n, body + b"y" * n)
                )
            for n, sock in enumerate(socks):
                assert read_response(sock)[2] == body + b"y" * n
        finally:
            for sock in socks:
                sock.close()


def test_a_proxied_request_leaves_no_cycle_for_the_garbage_collector(two: Pair) -> None:
    # Cycles are freed only by the collector, whose passes stall the loop for milliseconds
    # under load; everything a request allocates must go when its last reference does.
    a, _ = two
    with balancer(single_route([a.url])) as lb, httpx.Client(base_url=lb.url) as client:
        names(client, 3)
        gc.collect()
        gc.disable()
        try:
            names(client, 20)
            client.post("/", content=b"x" * 1000)
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            left = {type(found).__qualname__ for found in gc.garbage}
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert not left & {"Exchange", "Forward", "RequestHead"}


def test_weights_and_hash_keys_choose_servers(two: Pair) -> None:
    a, b = two
    config = BalancerConfig(
        routes=(
            Route(
                upstreams=(Upstream(a.url, 3), Upstream(b.url, 1)),
                strategy="round-robin",
            ),
        )
    )
    with balancer(config) as lb, httpx.Client(base_url=lb.url) as client:
        assert collections.Counter(names(client, 40)) == {"a": 30, "b": 10}
    hashed = single_route([a.url, b.url], strategy="ring-hash", hash_key=HashKey("header:X-User"))
    with balancer(hashed) as lb, httpx.Client(base_url=lb.url) as client:
        for user in ("alice", "bob", "carol", "dave"):
            seen = {
                client.get("/", headers={"x-user": user}).text.split("\n", 1)[0] for _ in range(5)
            }
            assert len(seen) == 1, user


def test_routes_by_host_and_prefix_with_strip(two: Pair) -> None:
    a, b = two
    config = BalancerConfig(
        routes=(
            Route(name="api", upstreams=(Upstream(a.url),), path_prefix="/api", strip_prefix=True),
            Route(name="admin", upstreams=(Upstream(b.url),), host="admin.example"),
            Route(name="rest", upstreams=(Upstream(b.url),)),
        )
    )
    with balancer(config) as lb, httpx.Client(base_url=lb.url) as client:
        api = client.get("/api/users?x=1").text
        assert "name=a" in api and "path=/users?x=1" in api
        assert "path=/?" in client.get("/api").text
        assert "name=b" in client.get("/apiary").text  # a prefix matches whole segments
        admin = client.get("/api/users", headers={"host": "admin.example:8080"}).text
        assert "name=b" in admin and "path=/api/users" in admin


# What the upstream sees, what the client sees ------------------------------------------------


def test_hop_by_hop_removed_and_forwarding_fields_set(two: Pair) -> None:
    a, _ = two
    with balancer(single_route([a.url])) as lb, httpx.Client(base_url=lb.url) as client:
        response = client.get(
            "/",
            headers={
                "connection": "keep-alive, x-secret",
                "x-secret": "drop me",
                "keep-alive": "timeout=5",
                "te": "trailers",
                "proxy-authorization": "Basic eA==",
                "x-forwarded-for": "6.6.6.6",
                "x-real-ip": "6.6.6.6",
                "forwarded": "for=6.6.6.6",
                "x-kept": "yes",
            },
        )
    seen = fields(response.text)
    for name in ("x-secret", "keep-alive", "te", "proxy-authorization", "x-real-ip"):
        assert name not in seen, name
    # A client cannot claim another address: its own forwarding fields are dropped.
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["forwarded"] == [f'for=127.0.0.1;proto=http;host="127.0.0.1:{lb.port}"']
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-kept"] == ["yes"]
    assert len(seen["x-request-id"][0]) == 32


def test_trusted_proxy_keeps_its_chain_and_request_id_passes_through(two: Pair) -> None:
    a, _ = two
    config = BalancerConfig(routes=single_route([a.url]).routes, trusted_proxies=("127.0.0.1",))
    with balancer(config) as lb, httpx.Client(base_url=lb.url) as client:
        response = client.get(
            "/", headers={"x-forwarded-for": "203.0.113.9", "x-request-id": "abc-123"}
        )
    seen = fields(response.text)
    assert seen["x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]
    assert seen["x-request-id"] == ["abc-123"]


def test_response_passes_through_with_its_own_reason_and_fields() -> None:
    def script(sock: socket.socket, upstream: RawUpstream) -> None:
        while read_head(sock, upstream):
            sock.sendall(
                b"HTTP/1.1 299 Fine Indeed\r\nX-One: 1\r\nConnection: close, X-Hop\r\n"
                b"X-Hop: gone\r\nKeep-Alive: timeout=1\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
                b"Server: upstream/1\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            )
            return

    with raw_upstream(script) as up, balancer(single_route([up.url])) as lb:
        conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=5)
        conn.request("GET", "/")
        response = conn.getresponse()
        assert (response.status, response.reason) == (299, "Fine Indeed")
        assert response.read() == b"hello world"
        assert response.getheader("x-one") == "1"
        assert response.getheader("x-hop") is None and response.getheader("keep-alive") is None
        assert response.getheader("date") == "Mon, 01 Jan 2024 00:00:00 GMT"
        assert response.getheader("server") == "upstream/1"
        # The upstream closing its connection does not close the client's.
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"hello world"
        conn.close()


def test_head_204_304_and_close_delimited_responses(two: Pair) -> None:
    a, _ = two

    def old_server(sock: socket.socket, upstream: RawUpstream) -> None:
        read_head(sock, upstream)
        sock.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")

    with raw_upstream(old_server) as up, balancer(single_route([up.url])) as lb:
        with httpx.Client(base_url=lb.url) as client:
            first = client.get("/")
            second = client.get("/")
        assert first.text == second.text == "until the end"
        assert up.connections == 2
    with balancer(single_route([a.url])) as lb, httpx.Client(base_url=lb.url) as client:
        head = client.head("/status/200")
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) == len(client.get("/status/200").content)
        assert client.get("/status/204").status_code == 204
        assert client.get("/status/304").status_code == 304
        assert client.get("/status/404").text == "404 from a\n"


def test_request_bodies_stream_both_ways(two: Pair) -> None:
    a, _ = two
    payload = bytes(range(256)) * 8192  # 2 MiB
    with balancer(single_route([a.url])) as lb, httpx.Client(base_url=lb.url) as client:
        assert client.post("/", content=payload).content == payload
        chunks = iter([payload[:1000], payload[1000:500_000], payload[500_000:]])
        assert client.put("/", content=chunks).content == payload
        expect = client.post("/", content=b"x" * 10, headers={"expect": "100-continue"})
        assert expect.content == b"x" * 10


# Failures --------------------------------------------------------------------------------------

SMUGGLING = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    b"RTSP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n",
]


@pytest.mark.parametrize("answer", SMUGGLING, ids=range(len(SMUGGLING)))
def test_ambiguous_upstream_framing_is_502_and_the_client_connection_lives(answer: bytes) -> None:
    def script(sock: socket.socket, upstream: RawUpstream) -> None:
        read_head(sock, upstream)
        sock.sendall(answer)
        time.sleep(0.3)

    good = serve(echo_app("good"))
    with raw_upstream(script) as up, good as ok:
        config = BalancerConfig(
            routes=(
                Route(name="bad", upstreams=(Upstream(up.url),), path_prefix="/bad"),
                Route(name="good", upstreams=(Upstream(ok.url),)),
            )
        )
        with balancer(config) as lb:
            sock = socket.create_connection(("127.0.0.1", lb.port), timeout=5)
            sock.sendall(b"GET /bad HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, _ = read_response(sock)
            if answer.endswith(b"HTTP/1.1 200 OK\r\n\r\n"):
                # The first response was whole and went out; what followed it unasked is
                # the upstream connection's problem, never the client's next response.
                assert status == 200
            else:
                assert status == 502
            sock.sendall(b"GET /fine HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, body = read_response(sock)
            assert status == 200 and body.startswith(b"name=good")
            sock.close()


def test_client_smuggling_is_refused_before_any_upstream_sees_it() -> None:
    def script(sock: socket.socket, upstream: RawUpstream) -> None:
        read_head(sock, upstream)

    with raw_upstream(script) as up, balancer(single_route([up.url])) as lb:
        sock = socket.create_connection(("127.0.0.1", lb.port), timeout=5)
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n"
            b"\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        status, _, _ = read_response(sock)
        assert status == 400
        sock.close()
        time.sleep(0.1)
        assert up.received == []


def test_dead_server_is_retried_elsewhere_for_every_method(two: Pair) -> None:
    a, _ = two
    dead = closed_port()
    config = single_route([dead, a.url], retry=RetryPolicy(budget_min_per_s=100))
    with balancer(config) as lb, httpx.Client(base_url=lb.url) as client:
        for _ in range(6):
            assert client.get("/").status_code == 200
            # A refused connection means the request never left: even a POST may be retried.
            assert client.post("/", content=b"once").content == b"once"


def test_no_retry_after_a_post_reached_the_upstream() -> None:
    hits: list[bytes] = []

    def script(sock: socket.socket, upstream: RawUpstream) -> None:
        while head := read_head(sock, upstream):
            hits.append(head.split(b" ", 1)[0])
            if b"Content-Length: 4" in head:
                sock.recv(4)
            sock.sendall(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")

    with raw_upstream(script) as one, raw_upstream(script) as two_:
        config = single_route([one.url, two_.url], retry=RetryPolicy(budget_min_per_s=100))
        with balancer(config) as lb, httpx.Client(base_url=lb.url) as client:
            assert client.post("/", content=b"data").status_code == 503
            assert hits == [b"POST"]
            hits.clear()
            # An idempotent request without a body is retried on a 503, on the other server.
            assert client.get("/").status_code == 503
            assert hits == [b"GET", b"GET"]


def test_retry_budget_stops_a_retry_storm() -> None:
    def script(sock: socket.socket, upstream: RawUpstream) -> None:
        while read_head(sock, upstream):
            sock.sendall(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")

    with raw_upstream(script) as one, raw_upstream(script) as two_:
        config = single_route(
            [one.url, two_.url],
            retry=RetryPolicy(budget_ratio=0.1, budget_min_per_s=0.1),
            outlier=OutlierDetection(consecutive_failures=0),
        )
        with balancer(config) as lb, httpx.Client(base_url=lb.url) as client:
            for _ in range(50):
                assert client.get("/").status_code == 503
        # 50 requests may add one retry (the floor) plus 10% of 50: far from 50 retries.
        sent = [head for head in one.received + two_.received if head]
        assert 50 < len(sent) <= 50 + 1 + 5


def test_timeouts_answer_504_and_a_stalled_body_is_cut() -> None:
    def silent(sock: socket.socket, upstream: RawUpstream) -> None:
        read_head(sock, upstream)
        time.sleep(2)

    def stalls(sock: socket.socket, upstream: RawUpstream) -> None:
        read_head(sock, upstream)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        time.sleep(2)

    quick = Timeouts(connect=1, response=0.3, idle=0.3)
    with raw_upstream(silent) as up, balancer(single_route([up.url], timeouts=quick)) as lb:
        started = time.monotonic()
        response = httpx.get(lb.url + "/")
        assert response.status_code == 504
        assert time.monotonic() - started < 1.5
    with raw_upstream(stalls) as up, balancer(single_route([up.url], timeouts=quick)) as lb:
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(lb.url + "/")


def test_connect_timeout_is_504() -> None:
    # A listener whose accept queue is full makes the kernel drop new handshakes, so a
    # connect to it hangs until the balancer's connect timeout.
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)
    config = single_route(
        [f"http://127.0.0.1:{port}"],
        timeouts=Timeouts(connect=0.3),
        retry=RetryPolicy(attempts=1),
    )
    try:
        with balancer(config) as lb:
            started = time.monotonic()
            response = httpx.get(lb.url + "/", timeout=5)
            assert response.status_code == 504
            assert time.monotonic() - started < 2
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_upstream_dying_mid_response_closes_the_client_connection() -> None:
    def dies(sock: socket.socket, upstream: RawUpstream) -> None:
        read_head(sock, upstream)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly this")

    with raw_upstream(dies) as up, balancer(single_route([up.url])) as lb:
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(lb.url + "/")


@pytest.mark.parametrize(
    "limits",
    [ConnectionLimits(max_requests=1), ConnectionLimits(max_connections=1, max_pending=0)],
    ids=["max-requests", "max-pending"],
)
def test_circuit_breaking_answers_503_at_once(two: Pair, limits: ConnectionLimits) -> None:
    a, _ = two
    config = single_route([a.url], limits=limits, retry=RetryPolicy(attempts=1))
    proxy = Balancer(config)
    with serve(proxy) as lb:
        results: list[int] = []
        slow = threading.Thread(
            target=lambda: results.append(httpx.get(lb.url + "/slow?s=2", timeout=10).status_code)
        )
        slow.start()
        (server,) = proxy.routes[0].snapshot.servers
        deadline = time.monotonic() + 5
        while server.state.outstanding < 1:  # the slow request holds the one place
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert httpx.get(lb.url + "/").status_code == 503
        # At once: the request holding the place is still being answered.
        assert slow.is_alive()
        slow.join()
        assert results == [200]
        assert httpx.get(lb.url + "/").status_code == 200


def test_failing_server_is_ejected_then_comes_back(two: Pair) -> None:
    a, b = two
    config = single_route(
        [a.url, b.url],
        outlier=OutlierDetection(consecutive_failures=3, base_ejection=0.5, max_ejection=1),
        retry=RetryPolicy(attempts=1),
    )
    with balancer(config) as lb, httpx.Client(base_url=lb.url) as client:
        # Only a's answers are 500s: ask for /status/500 and see who answers.
        statuses = [client.get("/status/500").text for _ in range(6)]
        assert statuses.count("500 from a\n") == 3
        after = {client.get("/status/500").text for _ in range(6)}
        assert after == {"500 from b\n"}
        time.sleep(0.7)
        assert "500 from a\n" in {client.get("/status/500").text for _ in range(4)}


def test_no_upstream_left_is_503() -> None:
    config = single_route([closed_port()], retry=RetryPolicy(attempts=1))
    with balancer(config) as lb:
        response = httpx.get(lb.url + "/")
        assert response.status_code == 502


def test_client_gone_mid_response_frees_the_upstream_connection() -> None:
    released = threading.Event()

    def endless(sock: socket.socket, upstream: RawUpstream) -> None:
        read_head(sock, upstream)
        sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            while True:
                sock.sendall(b"400\r\n" + b"x" * 1024 + b"\r\n")
        except OSError:
            released.set()

    with raw_upstream(endless) as up, balancer(single_route([up.url])) as lb:
        sock = socket.create_connection(("127.0.0.1", lb.port), timeout=5)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(65536)
        sock.close()
        assert released.wait(5)


def test_slow_client_pauses_the_upstream_instead_of_buffering() -> None:
    sent = [0]
    size = 256 * 1024 * 1024

    def big(sock: socket.socket, upstream: RawUpstream) -> None:
        read_head(sock, upstream)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        block = b"y" * 65536
        try:
            for _ in range(size // len(block)):
                sock.sendall(block)
                sent[0] += len(block)
        except OSError:
            pass

    with raw_upstream(big) as up, balancer(single_route([up.url])) as lb:
        sock = socket.create_connection(("127.0.0.1", lb.port), timeout=5)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(1000)
        # Until the upstream stops getting anywhere (half a second without progress).
        last, quiet_since = -1, time.monotonic()
        deadline = quiet_since + 5
        while time.monotonic() < deadline and time.monotonic() - quiet_since < 0.5:
            if sent[0] != last:
                last, quiet_since = sent[0], time.monotonic()
            time.sleep(0.05)
        # The client read almost nothing. What the upstream got out is what the kernel's
        # socket buffers on the way hold (the balancer's receiving one grows up to
        # net.ipv4.tcp_rmem's maximum, 32 MiB on a stock Linux) and the balancer's bounded
        # write buffer; a balancer that read on into memory would have taken all 256 MiB.
        assert sent[0] < size // 4
        sock.close()


def test_a_response_ending_in_the_read_that_pauses_the_upstream() -> None:
    # After one read is relayed the client's transport reports its buffer full; the next read
    # pauses the upstream and also ends the response. The kept-alive connection then carries
    # the next request, whose response it must read. Which read a real transport fills up in
    # is a matter of timing, so the test tells the client connection itself.
    rest = threading.Event()

    def script(sock: socket.socket, upstream: RawUpstream) -> None:
        read_head(sock, upstream)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
        rest.wait(5)
        sock.sendall(b"56789")
        read_head(sock, upstream)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")
        sock.recv(1)

    with raw_upstream(script) as up:
        config = single_route([up.url], timeouts=Timeouts(response=2))
        with balancer(config) as lb:
            sock = socket.create_connection(("127.0.0.1", lb.port), timeout=5)
            received = [b""]

            def read_until(end: bytes) -> None:
                while not received[0].endswith(end):
                    chunk = sock.recv(65536)
                    assert chunk, received[0]
                    received[0] += chunk

            sock.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
            read_until(b"01234")
            (client,) = lb.call(lambda: list(lb.server.state.connections))
            lb.call(client.pause_writing)
            rest.set()
            read_until(b"56789")
            assert received[0].startswith(b"HTTP/1.1 200 ")
            lb.call(client.resume_writing)
            sock.sendall(b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, body = read_response(sock)
            assert (status, body) == (200, b"next")
            assert up.connections == 1
            sock.close()


def test_engine_limits_apply_at_the_balancer(two: Pair) -> None:
    a, _ = two
    with balancer(single_route([a.url]), ServerConfig()) as lb:
        sock = socket.create_connection(("127.0.0.1", lb.port), timeout=5)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n")
        status, _, _ = read_response(sock)
        assert status == 400
        sock.close()
    assert a.stats.connections_opened == 0


def test_mounted_in_an_app_behind_its_own_routes(two: Pair) -> None:
    a, _ = two
    app = App()

    @app.route("/local")
    async def local(request: Request) -> str:
        return "answered here\n"

    app.mount("/api", Balancer(single_route([a.url])))
    with serve(app) as server, httpx.Client(base_url=server.url) as client:
        assert client.get("/local").text == "answered here\n"
        proxied = client.get("/api/users?id=7").text
        assert "name=a" in proxied and "path=/api/users?id=7" in proxied
        assert client.get("/elsewhere").status_code == 404


def test_in_process_active_checks_take_a_dead_server_out(two: Pair) -> None:
    a, _ = two
    config = single_route(
        [a.url, closed_port()],
        health=HealthCheck(path="/", interval=0.05, timeout=0.5, fall=1, rise=1),
        retry=RetryPolicy(attempts=1),
        outlier=OutlierDetection(consecutive_failures=0),
    )
    with balancer(config) as lb, httpx.Client(base_url=lb.url) as client:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if all(client.get("/").status_code == 200 for _ in range(10)):
                break
            time.sleep(0.05)
        assert [client.get("/").status_code for _ in range(20)] == [200] * 20
