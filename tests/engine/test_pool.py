"""The bounded thread pool: slow blocking handlers, a full queue and 503 seen from outside;
hand-offs shared by many requests, and the pool on its own loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import socket
import threading
import time
from functools import partial
from typing import Any

from bastion import App, Response, SyncRequest
from bastion.engine import ServerConfig, new_event_loop
from bastion.engine.pool import ThreadPool
from tests.serving import RunningServer, read_response, serve


def _blocking_app(gate: threading.Event, entered: threading.Semaphore) -> App:
    app = App()

    @app.get("/block")
    def block(request: SyncRequest) -> Response:
        entered.release()
        gate.wait(10)
        return Response(b"released")

    @app.get("/fast-sync")
    def fast_sync(request: SyncRequest) -> Response:
        return Response(b"fast")

    @app.get("/async")
    async def fast_async(request: object) -> Response:
        return Response(b"async")

    return app


def _get(port: int, path: str) -> tuple[int, bytes, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    response = conn.getresponse()
    result = (response.status, response.read(), response.getheader("retry-after"))
    conn.close()
    return result


def test_slow_blocking_handlers_do_not_block_a_fast_one() -> None:
    gate, entered = threading.Event(), threading.Semaphore(0)
    with serve(_blocking_app(gate, entered), ServerConfig(threads=4, queue_size=4)) as server:
        with concurrent.futures.ThreadPoolExecutor(8) as clients:
            slow = [clients.submit(_get, server.port, "/block") for _ in range(3)]
            for _ in range(3):
                assert entered.acquire(timeout=5)
            # Three threads are stuck; the fourth and the event loop still answer.
            assert _get(server.port, "/fast-sync")[:2] == (200, b"fast")
            assert _get(server.port, "/async")[:2] == (200, b"async")
            gate.set()
            assert [f.result(10)[:2] for f in slow] == [(200, b"released")] * 3


def test_full_queue_answers_503_at_once_and_recovers() -> None:
    gate, entered = threading.Event(), threading.Semaphore(0)
    config = ServerConfig(threads=2, queue_size=1)
    with serve(_blocking_app(gate, entered), config) as server:
        with concurrent.futures.ThreadPoolExecutor(8) as clients:
            busy = [clients.submit(_get, server.port, "/block") for _ in range(2)]
            for _ in range(2):
                assert entered.acquire(timeout=5)
            queued = clients.submit(_get, server.port, "/block")  # waits in the queue
            deadline = time.monotonic() + 5
            while server.call(lambda: server.server.state.pool.pending) < 3:
                assert time.monotonic() < deadline, "the third request never reached the queue"
                time.sleep(0.01)
            refused = [_get(server.port, "/fast-sync") for _ in range(3)]
            assert all(status == 503 for status, _, _ in refused)
            assert all(retry == "1" for _, _, retry in refused)
            # Async handlers never touch the pool and keep working.
            assert _get(server.port, "/async")[:2] == (200, b"async")
            gate.set()
            assert [f.result(10)[0] for f in busy] == [200, 200]
            assert queued.result(10)[0] == 200
        assert _get(server.port, "/fast-sync")[:2] == (200, b"fast")
        assert server.stats.errors_by_kind.get("pool-full", 0) >= 3


def _counting_app() -> App:
    app = App()

    @app.get("/echo/{n}")
    def echo(request: SyncRequest) -> Response:
        return Response(str(request.path_params["n"]).encode())

    return app


def _pending(server: RunningServer) -> int:
    state = server.server.state
    assert state is not None
    return state.pool.pending


def _read_bodies(sock: socket.socket, count: int) -> list[bytes]:
    return [read_response(sock)[2] for _ in range(count)]


def test_many_clients_with_pipelined_requests_each_get_their_own_answers_in_order() -> None:
    # Requests from many connections arrive in the same rounds of reads and share hand-offs
    # to the pool; every one must still come back, to its own client, in its turn.
    connections, depth, batches = 24, 8, 5
    with serve(_counting_app(), ServerConfig(threads=3, queue_size=256)) as server:
        socks = [server.connect() for _ in range(connections)]
        try:
            for batch in range(batches):
                for index, sock in enumerate(socks):
                    sock.sendall(
                        b"".join(
                            b"GET /echo/%d HTTP/1.1\r\nHost: x\r\n\r\n"
                            % (index * 1000 + batch * depth + i)
                            for i in range(depth)
                        )
                    )
                for index, sock in enumerate(socks):
                    expected = [b"%d" % (index * 1000 + batch * depth + i) for i in range(depth)]
                    assert _read_bodies(sock, depth) == expected
        finally:
            for sock in socks:
                sock.close()
        assert server.call(_pending, server) == 0


def test_a_blocked_handler_does_not_hold_up_requests_that_arrived_with_it() -> None:
    # Both requests are sent before either is answered, so they usually reach the pool in
    # one round of reads, where one thread is woken for both: the second must not wait for
    # the blocking handler that thread takes first.
    gate, entered = threading.Event(), threading.Semaphore(0)
    with serve(_blocking_app(gate, entered), ServerConfig(threads=2, queue_size=4)) as server:
        slow, fast = server.connect(), server.connect()
        try:
            slow.sendall(b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
            fast.sendall(b"GET /fast-sync HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(fast)[::2] == (200, b"fast")
            gate.set()
            assert read_response(slow)[::2] == (200, b"released")
        finally:
            slow.close()
            fast.close()


def test_jobs_queued_in_one_loop_callback_run_on_separate_threads_when_one_blocks() -> None:
    loop = new_event_loop()
    pool = ThreadPool(loop, threads=2, queue_size=8)
    gate = threading.Event()
    finished: list[str] = []

    def done(name: str, result: Any, error: BaseException | None) -> None:
        finished.append(f"{name}={result}")
        if name == "fast":
            gate.set()  # the blocked job is let go only once the fast one is back

    def submit_both() -> None:
        assert pool.try_submit(lambda: gate.wait(10), partial(done, "blocked"))
        assert pool.try_submit(lambda: "ok", partial(done, "fast"))

    async def main() -> None:
        submit_both()
        while len(finished) < 2:
            await asyncio.sleep(0.01)

    try:
        loop.run_until_complete(asyncio.wait_for(main(), 10))
    finally:
        pool.shutdown(5)
        loop.close()
    assert finished == ["fast=ok", "blocked=True"]
    assert pool.pending == 0


def test_shutdown_runs_the_jobs_still_queued() -> None:
    loop = new_event_loop()
    pool = ThreadPool(loop, threads=1, queue_size=8)
    gate = threading.Event()
    ran: list[int] = []

    async def main() -> None:
        assert pool.try_submit(lambda: gate.wait(10), lambda result, error: None)
        for number in range(3):
            assert pool.try_submit(partial(ran.append, number), lambda result, error: None)
        await asyncio.sleep(0)  # the posted wake-up starts the thread
        stopping = loop.run_in_executor(None, pool.shutdown, 10.0)
        await asyncio.sleep(0.05)  # shutdown is waiting for the blocked job by now
        gate.set()
        await stopping
        assert not pool.try_submit(lambda: None, lambda result, error: None)

    try:
        loop.run_until_complete(asyncio.wait_for(main(), 15))
    finally:
        loop.close()
    assert ran == [0, 1, 2]
