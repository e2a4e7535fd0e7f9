"""Active health checks against real sockets: tiny asyncio servers and a Bastion app."""

from __future__ import annotations

import asyncio
import http.client
import itertools
import logging
import os
import random
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bastion import App, Request, Response
from bastion.balancer import Balancer
from bastion.balancer.config import BalancerConfig, HealthCheck, Route, Upstream
from bastion.balancer.health import (
    HEALTH_MESSAGE,
    HealthChecker,
    HealthJob,
    health_message,
    health_verdicts,
)
from tests.ops.certs import make_certificates
from tests.serving import serve

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
FAST = {"interval": 0.02, "jitter": 0.0, "timeout": 1.0}


class FakeUpstream:
    """A server on 127.0.0.1:0 that reads each request head and answers with ``respond``."""

    def __init__(self, respond: Serve) -> None:
        self.respond = respond
        self.heads: list[bytes] = []
        self.server: asyncio.base_events.Server | None = None

    async def __aenter__(self) -> FakeUpstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.heads.append(await reader.readuntil(b"\r\n\r\n"))
            await self.respond(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def answering(status: list[int]) -> Serve:
    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 %d X\r\nContent-Length: 2\r\n\r\nok" % status[0])
        await writer.drain()

    return respond


def config(*urls: str, name: str = "api", **health: Any) -> BalancerConfig:
    check = HealthCheck(**{**FAST, **health})
    upstreams = tuple(Upstream(url) for url in urls)
    return BalancerConfig(routes=(Route(upstreams=upstreams, name=name, health=check),))


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def checking(checker: HealthChecker, condition: Callable[[], bool]) -> None:
    """Run ``checker`` until ``condition`` holds."""
    task = asyncio.ensure_future(checker.run())
    try:
        await until(condition)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def key(url: str) -> str:
    return Upstream(url).key


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_fall_then_rise_counts_consecutive_checks() -> None:
    async def main() -> None:
        status = [500]
        async with FakeUpstream(answering(status)) as upstream:
            changes: list[tuple[str, str, bool, int]] = []

            def on_change(route: str, server: str, healthy: bool) -> None:
                changes.append((route, server, healthy, len(upstream.heads)))

            checker = HealthChecker(config(upstream.url, fall=3, rise=2), on_change)
            await checking(checker, lambda: bool(changes))
            # Healthy at first; down on the third failure in a row.
            assert changes == [("api", key(upstream.url), False, 3)]
            status[0] = 204
            mark = len(upstream.heads)
            await checking(checker, lambda: len(changes) == 2)
            assert changes[1][2] is True
            assert changes[1][3] - mark == 2
            assert checker.verdicts() == {("api", key(upstream.url)): True}

    asyncio.run(main())


def test_a_success_resets_the_failure_count() -> None:
    async def main() -> None:
        statuses = iter([500, 200, 500, 200, 500, 200] + [500] * 100)
        status = [0]

        async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            status[0] = next(statuses)
            await answering(status)(reader, writer)

        async with FakeUpstream(respond) as upstream:
            seen: list[int] = []
            checker = HealthChecker(
                config(upstream.url, fall=2),
                lambda *args: seen.append(len(upstream.heads)),
            )
            await checking(checker, lambda: bool(seen))
            assert seen == [8]  # the first two failures in a row are the 7th and 8th

    asyncio.run(main())


def why_down(respond: Serve, caplog: pytest.LogCaptureFixture, **health: Any) -> str:
    """Check a server answering with ``respond`` until it is down; the log line says why."""

    async def main() -> str:
        async with FakeUpstream(respond) as upstream:
            changes: list[bool] = []
            checker = HealthChecker(
                config(upstream.url, **{"fall": 1, **health}), lambda r, k, h: changes.append(h)
            )
            await checking(checker, lambda: bool(changes))
            assert changes == [False]
            return f'upstream {key(upstream.url)} (route "api") is down: '

    with caplog.at_level(logging.WARNING, logger="bastion.error"):
        prefix = asyncio.run(main())
    (line,) = [line for line in caplog.text.splitlines() if prefix in line]
    return line.partition(prefix)[2]


def test_a_server_that_never_answers_is_timed_out(caplog: pytest.LogCaptureFixture) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3600)

    assert why_down(silent, caplog, timeout=0.1) == "timed out after 1 check"


def test_a_closed_port_fails(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{closed_port()}"

    async def main() -> None:
        changes: list[bool] = []
        checker = HealthChecker(config(url, fall=2), lambda r, k, h: changes.append(h))
        await checking(checker, lambda: bool(changes))
        assert checker.verdicts() == {("api", key(url)): False}

    with caplog.at_level(logging.WARNING, logger="bastion.error"):
        asyncio.run(main())
    assert "is down: connect refused after 2 checks" in caplog.text


def test_trickled_head_is_cut_at_the_timeout(caplog: pytest.LogCaptureFixture) -> None:
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n")
        while True:
            writer.write(b"X")
            await writer.drain()
            await asyncio.sleep(0.01)

    assert why_down(trickle, caplog, fall=2, timeout=0.15) == "timed out after 2 checks"


def test_a_huge_body_is_not_read() -> None:
    async def main() -> None:
        sent = [0]

        async def huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n")
            chunk = b"x" * 65536
            while True:
                writer.write(chunk)
                await writer.drain()
                sent[0] += len(chunk)

        async with FakeUpstream(huge) as upstream:
            changes: list[bool] = []
            checker = HealthChecker(
                config(upstream.url, rise=1),
                lambda r, k, h: changes.append(h),
                initial={("api", key(upstream.url)): False},
            )
            await checking(checker, lambda: bool(changes))
            assert changes == [True]
            await asyncio.sleep(0.05)
            # The probe closed its connection after the head: the server could not go on.
            assert sent[0] < 64 << 20

    asyncio.run(main())


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"ICE/1.0 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        b"",
    ],
    ids=["cl-and-te", "not-http", "bad-field", "closed"],
)
def test_malformed_responses_fail(answer: bytes, caplog: pytest.LogCaptureFixture) -> None:
    async def bad(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(answer)
        await writer.drain()

    why = why_down(bad, caplog)
    assert why.startswith("closed without responding" if not answer else "bad response: ")


def test_statuses_path_and_host() -> None:
    async def main() -> None:
        status = [418]
        async with FakeUpstream(answering(status)) as upstream:
            changes: list[bool] = []
            checker = HealthChecker(
                config(upstream.url, rise=1, path="/healthz?deep=1", statuses=(418,)),
                lambda r, k, h: changes.append(h),
                initial={("api", key(upstream.url)): False},
            )
            await checking(checker, lambda: bool(changes))
            assert changes == [True]
            head = upstream.heads[0].decode()
            assert head.startswith("GET /healthz?deep=1 HTTP/1.1\r\n")
            assert f"\r\nHost: {key(upstream.url)}\r\n" in head
            assert "\r\nConnection: close\r\n" in head

            named = HealthChecker(
                config(upstream.url, host="health.internal"), lambda r, k, h: None
            )
            await checking(named, lambda: len(upstream.heads) >= 2)
            assert "\r\nHost: health.internal\r\n" in upstream.heads[-1].decode()

    asyncio.run(main())


def test_a_host_with_controls_is_refused() -> None:
    with pytest.raises(ValueError, match=r'route "api": health\.host'):
        HealthChecker(config("http://127.0.0.1:1", host="a\r\nX: y"), lambda r, k, h: None)
    with pytest.raises(ValueError, match=r'route "api": health\.path must be ASCII'):
        HealthChecker(config("http://127.0.0.1:1", path="/sant\u00e9"), lambda r, k, h: None)


def test_a_bastion_app_upstream() -> None:
    app = App()
    healthy = [False]

    @app.get("/healthz")
    async def healthz(request: Request) -> Response:
        return Response(b"ok", status=200 if healthy[0] else 503)

    with serve(app) as running:

        async def main() -> None:
            changes: list[bool] = []
            checker = HealthChecker(
                config(running.url, fall=2, rise=2, path="/healthz"),
                lambda r, k, h: changes.append(h),
            )
            await checking(checker, lambda: changes == [False])
            healthy[0] = True
            await checking(checker, lambda: changes == [False, True])

        asyncio.run(main())


def test_verdicts_cover_every_checked_upstream_and_only_those() -> None:
    async def main() -> None:
        async with (
            FakeUpstream(answering([200])) as good,
            FakeUpstream(answering([503])) as bad,
        ):
            check = HealthCheck(**FAST, fall=1)  # type: ignore[arg-type]
            routes = (
                Route(name="api", upstreams=(Upstream(good.url), Upstream(bad.url)), health=check),
                Route(name="static", path_prefix="/s", upstreams=(Upstream(bad.url),)),
            )
            changes: list[tuple[str, str, bool]] = []
            checker = HealthChecker(
                BalancerConfig(routes=routes), lambda *change: changes.append(change)
            )
            assert checker.verdicts() == {("api", key(good.url)): True, ("api", key(bad.url)): True}
            await checking(checker, lambda: bool(changes))
            await asyncio.sleep(0.1)
            assert changes == [("api", key(bad.url), False)]
            assert checker.verdicts() == {
                ("api", key(good.url)): True,
                ("api", key(bad.url)): False,
            }

    asyncio.run(main())


def test_jitter_spreads_probes() -> None:
    check = HealthCheck(interval=2.0, jitter=0.25)
    checker = HealthChecker(
        config("http://127.0.0.1:1"), lambda r, k, h: None, rng=random.Random(7)
    )
    delays = [checker.next_delay(check) for _ in range(500)]
    assert all(1.5 <= delay <= 2.5 for delay in delays)
    assert len(set(delays)) == len(delays)
    assert min(delays) < 1.6 and max(delays) > 2.4
    firsts = [checker.first_delay(check) for _ in range(500)]
    assert all(0 <= first <= 2.0 for first in firsts)
    assert min(firsts) < 0.1 and max(firsts) > 1.9
    steady = HealthCheck(interval=2.0, jitter=0.0)
    assert {checker.next_delay(steady) for _ in range(10)} == {2.0}


@pytest.mark.alone
def test_probes_of_several_servers_do_not_arrive_together() -> None:
    async def main() -> None:
        arrivals: list[float] = []

        async def note(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            arrivals.append(asyncio.get_running_loop().time())
            await answering([200])(reader, writer)

        async with (
            FakeUpstream(note) as one,
            FakeUpstream(note) as two,
            FakeUpstream(note) as three,
        ):
            checker = HealthChecker(
                config(one.url, two.url, three.url, interval=0.05, jitter=0.5),
                lambda r, k, h: None,
            )
            await checking(checker, lambda: len(arrivals) >= 30)
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        # In lock-step, most arrivals would come in threes with no gap between them.
        assert sum(gap < 0.002 for gap in gaps) < len(gaps) / 2

    asyncio.run(main())


def test_initial_verdicts_and_a_failing_receiver() -> None:
    async def main() -> None:
        async with (
            FakeUpstream(answering([200])) as upstream,
            FakeUpstream(answering([500])) as down,
        ):
            calls: list[bool] = []

            def on_change(route: str, server: str, healthy: bool) -> None:
                calls.append(healthy)
                raise RuntimeError("receiver is broken")

            checker = HealthChecker(
                config(upstream.url, down.url, fall=1, rise=1),
                on_change,
                initial={("api", key(upstream.url)): False, ("other", "x:1"): False},
            )
            assert checker.verdicts()[("api", key(upstream.url))] is False
            await checking(checker, lambda: len(calls) == 2)
            assert sorted(calls) == [False, True]

    asyncio.run(main())


def test_no_checks_returns_at_once() -> None:
    routes = (Route(upstreams=(Upstream("http://127.0.0.1:1"),)),)
    checker = HealthChecker(BalancerConfig(routes=routes), lambda r, k, h: None)
    asyncio.run(asyncio.wait_for(checker.run(), 1.0))
    assert checker.verdicts() == {}


def test_tls_upstreams_are_verified(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    certs = make_certificates(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(certs.server_cert, certs.server_key)
    trusting = ssl.create_default_context(cafile=str(certs.ca))

    async def main() -> None:
        async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(respond, "127.0.0.1", 0, ssl=server_context)
        url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            changes: list[bool] = []
            checker = HealthChecker(
                config(url, rise=1),
                lambda r, k, h: changes.append(h),
                initial={("api", key(url)): False},
                ssl_context=trusting,
            )
            await checking(checker, lambda: bool(changes))
            assert changes == [True]
            # The system's trust store does not know the test CA.
            untrusted = HealthChecker(config(url, fall=1), lambda r, k, h: changes.append(h))
            await checking(untrusted, lambda: len(changes) == 2)
            assert changes == [True, False]
        finally:
            server.close()

    with caplog.at_level(logging.WARNING, logger="bastion.error"):
        asyncio.run(main())
    assert "is down: TLS: CERTIFICATE_VERIFY_FAILED" in caplog.text


def test_a_forked_child_does_not_keep_a_probe_open() -> None:
    async def main() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(3600)

        async with FakeUpstream(silent) as upstream:
            checker = HealthChecker(config(upstream.url, timeout=30), lambda r, k, h: None)
            task = asyncio.ensure_future(checker.run())
            await until(lambda: bool(upstream.heads))
            (sock,) = checker._sockets
            fd = sock.fileno()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                try:
                    os.fstat(fd)
                except OSError:
                    os._exit(0)
                os._exit(1)
            _, status = os.waitpid(pid, 0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert os.waitstatus_to_exitcode(status) == 0
            assert not checker._sockets

    asyncio.run(main())


def test_health_job_sends_changes_and_state() -> None:
    async def main() -> None:
        async with FakeUpstream(answering([500])) as upstream:
            sent: list[dict[str, Any]] = []
            job = HealthJob(config(upstream.url, fall=1))
            assert job.state() == [health_message([(("api", key(upstream.url)), True)])]
            task = asyncio.ensure_future(job.run(sent.append))
            await until(lambda: bool(sent))
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert sent == [
                {"kind": HEALTH_MESSAGE, "verdicts": [["api", key(upstream.url), False]]}
            ]
            assert health_verdicts(job.state()[0]) == [("api", key(upstream.url), False)]

    asyncio.run(main())


def test_health_verdicts_reads_only_its_own_messages() -> None:
    assert health_verdicts({"kind": "other", "verdicts": [["a", "b", True]]}) == []
    assert health_verdicts({"kind": HEALTH_MESSAGE, "verdicts": [["a", "b", 1], ["a"], "x"]}) == []
    message = {"kind": HEALTH_MESSAGE, "verdicts": [["a", "h:1", False], ["b", "h:2", True]]}
    assert health_verdicts(message) == [("a", "h:1", False), ("b", "h:2", True)]


def test_verdicts_steer_a_real_balancer() -> None:
    """In one process: the checker runs on the balancer's loop and calls its apply_health;
    through the supervisor, the same verdicts arrive as messages."""
    apps = []
    for name, healthy in (("one", False), ("two", True)):
        app = App()

        @app.get("/")
        async def index(request: Request, name: str = name) -> Response:
            return Response(name.encode())

        @app.get("/healthz")
        async def healthz(request: Request, healthy: bool = healthy) -> Response:
            return Response(b"", status=200 if healthy else 503)

        apps.append(app)

    with serve(apps[0]) as one, serve(apps[1]) as two:
        check = HealthCheck(path="/healthz", fall=1, **FAST)  # type: ignore[arg-type]
        route = Route(
            upstreams=(Upstream(one.url), Upstream(two.url)), health=check, panic_threshold=0.0
        )
        balancer = Balancer(BalancerConfig(routes=(route,)))
        server = balancer._by_name["default"].snapshot.get(key(one.url))
        assert server is not None

        # The supervisor's way: a worker is handed the state, then the news.
        job = HealthJob(balancer.config)
        for message in job.state():
            for verdict in health_verdicts(message):
                balancer.apply_health(*verdict)
        assert server.state.healthy
        balancer.apply_health(
            *health_verdicts(health_message([(("default", key(one.url)), False)]))[0]
        )
        assert not server.state.healthy
        balancer.apply_health("default", key(one.url), True)
        balancer.apply_health("gone", "10.0.0.9:80", False)  # another configuration's: ignored

        with serve(balancer) as lb:
            checker = HealthChecker(balancer.config, balancer.apply_health)
            running = asyncio.run_coroutine_threadsafe(checker.run(), lb.loop)
            try:
                deadline = time.monotonic() + 5
                while server.state.healthy:
                    assert time.monotonic() < deadline, "the failing upstream stayed in"
                    time.sleep(0.01)
                bodies = set()
                for _ in range(10):
                    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=5)
                    conn.request("GET", "/")
                    bodies.add(conn.getresponse().read())
                    conn.close()
                assert bodies == {b"two"}
            finally:
                running.cancel()


def test_a_checker_runs_again_while_its_last_run_winds_down() -> None:
    async def main() -> None:
        async with FakeUpstream(answering([200])) as upstream:
            checker = HealthChecker(config(upstream.url), lambda r, k, h: None)
            first = asyncio.ensure_future(checker.run())
            await until(lambda: bool(upstream.heads))
            first.cancel()
            second = asyncio.ensure_future(checker.run())
            seen = len(upstream.heads)
            await until(lambda: len(upstream.heads) > seen + 2)
            assert not second.done()
            second.cancel()
            await asyncio.gather(first, second, return_exceptions=True)

    asyncio.run(main())


@pytest.mark.parametrize("host", ["nothing.invalid", "x" * 64 + ".example"])
def test_a_name_that_does_not_resolve_fails(host: str, caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://{host}:8000"

    async def main() -> None:
        changes: list[bool] = []
        checker = HealthChecker(config(url, fall=1), lambda r, k, h: changes.append(h))
        await checking(checker, lambda: bool(changes))

    with caplog.at_level(logging.WARNING, logger="bastion.error"):
        asyncio.run(main())
    assert f"upstream {host}:8000" in caplog.text


def test_health_job_follows_a_new_configuration() -> None:
    """New upstreams are checked, removed ones dropped, kept ones keep their verdict; a job
    with nothing to check starts checking when a configuration brings checks."""

    async def main() -> None:
        async with FakeUpstream(answering([500])) as down, FakeUpstream(answering([200])) as up:
            sent: list[dict[str, Any]] = []
            job = HealthJob(BalancerConfig(routes=(Route(upstreams=(Upstream(down.url),)),)))
            task = asyncio.ensure_future(job.run(sent.append))
            await asyncio.sleep(0.05)
            assert job.state() == [] and sent == []
            job.reconfigure(config(down.url, fall=1))
            await until(lambda: bool(sent))
            assert job.checker.verdicts() == {("api", key(down.url)): False}
            gone = closed_port()
            job.reconfigure(config(down.url, up.url, f"http://127.0.0.1:{gone}", fall=1))
            verdicts = job.checker.verdicts()
            assert verdicts[("api", key(down.url))] is False  # carried over
            assert verdicts[("api", key(up.url))] is True
            job.reconfigure(config(up.url, fall=1))
            assert job.checker.verdicts() == {("api", key(up.url)): True}
            heard = len(up.heads)
            await until(lambda: len(up.heads) > heard)  # still checking after the swaps
            assert not task.done()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


def test_a_checker_always_stops_when_cancelled() -> None:
    # Probes answered at once, cancelled at every moment of their exchange: a cancellation
    # that arrives as a probe ends must still stop the checker.
    async def main() -> None:
        async with FakeUpstream(answering([200])) as upstream:
            checker = HealthChecker(
                config(upstream.url, interval=0.001, jitter=0.0), lambda r, k, h: None
            )
            for attempt in range(300):
                task = asyncio.ensure_future(checker.run())
                for _ in range(attempt % 7):
                    await asyncio.sleep(0)
                await asyncio.sleep(0.0005 * (attempt % 3))
                task.cancel()
                done, _ = await asyncio.wait((task,), timeout=5)
                assert done, f"the checker went on after cancel() (attempt {attempt})"

    asyncio.run(main())
