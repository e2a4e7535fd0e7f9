"""The bounded thread pool, seen from outside: slow blocking handlers, a full queue, 503."""

from __future__ import annotations

import concurrent.futures
import http.client
import threading
import time

from bastion import App, Response, SyncRequest
from bastion.engine import ServerConfig
from tests.serving import serve


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
