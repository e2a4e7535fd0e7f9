"""The access log's writer: a file on a stalled disk never holds up the event loop; the
timestamp follows the clock; batches are handed over whole."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.observe import accesslog
from bastion.observe.accesslog import AccessLog, compile_format
from bastion.observe.logline import Clock
from tests.app.hello import app
from tests.serving import read_response, serve

REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


def answers(sock: socket.socket, count: int) -> list[int]:
    return [read_response(sock)[0] for _ in range(count)]


@pytest.fixture
def stalled_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Writes to regular files hang until the event is set (a disk that stopped answering)."""
    moving = threading.Event()
    write = accesslog._FileOutput.write

    def hanging_write(self: accesslog._FileOutput, text: str) -> None:
        moving.wait(30)
        write(self, text)

    monkeypatch.setattr(accesslog._FileOutput, "write", hanging_write)
    try:
        yield moving
    finally:
        moving.set()


def test_a_stalled_disk_holds_up_no_request(tmp_path: Path, stalled_disk: threading.Event) -> None:
    path = tmp_path / "access.log"
    log = AccessLog("%U", str(path))
    with serve(app, observers=[log]) as server, server.connect() as sock:
        for _ in range(5):
            sock.sendall(REQUEST * 100)
            assert answers(sock, 100) == [200] * 100
            # Batches go to the writer while its first write still hangs.
            assert log.wait_written(0.1) is False
        assert path.read_text() == ""
        stalled_disk.set()
        assert log.wait_written()
        assert path.read_text().splitlines() == ["/"] * 500
        assert log.dropped == 0


def test_beyond_its_bound_a_stalled_disk_costs_lines_counted_and_reported(
    tmp_path: Path, stalled_disk: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "access.log"
    log = AccessLog("%U", str(path), max_pending=1000)
    count = 2000
    with (
        caplog.at_level(logging.WARNING, logger="bastion.error"),
        serve(app, observers=[log]) as server,
        server.connect() as sock,
    ):
        for _ in range(count // 100):
            sock.sendall(REQUEST * 100)
            assert answers(sock, 100) == [200] * 100
            log.wait_written(0.01)  # hand the batch over now
        assert log.dropped > 0
        stalled_disk.set()
        assert log.wait_written()
        # The report comes from the writer once the disk moves again.
        sock.sendall(REQUEST)
        assert answers(sock, 1) == [200]
        assert log.wait_written()
    written = path.read_text().splitlines()
    assert written == ["/"] * len(written)
    assert len(written) + log.dropped == count + 1
    assert any("lines dropped" in record.getMessage() for record in caplog.records)


def test_a_failing_disk_costs_lines_not_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def full(self: accesslog._FileOutput, text: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(accesslog._FileOutput, "write", full)
    log = AccessLog("%U", str(tmp_path / "access.log"))
    with (
        caplog.at_level(logging.WARNING, logger="bastion.error"),
        serve(app, observers=[log]) as server,
        server.connect() as sock,
    ):
        sock.sendall(REQUEST * 30)
        assert answers(sock, 30) == [200] * 30
        assert log.wait_written()
    assert log.dropped == 30
    assert any("No space left" in record.getMessage() for record in caplog.records)


def test_the_timestamp_follows_the_clock_across_seconds() -> None:
    lines: list[str] = []

    class Collect(accesslog._Output):
        def write(self, text: str) -> None:
            lines.extend(text.splitlines())

    log = AccessLog("%t")
    log._writer.output = Collect()
    stamps: list[tuple[int, int]] = []
    with serve(app, observers=[log]) as server, server.connect() as sock:
        for _ in range(3):
            before = int(time.time())
            sock.sendall(REQUEST)
            assert answers(sock, 1) == [200]
            stamps.append((before, int(time.time())))
            # Into the next second, without a request in between: the text must move on.
            time.sleep(1.05 - time.time() % 1)
        assert log.wait_written()
    assert len(lines) == 3
    for line, (before, after) in zip(lines, stamps, strict=True):
        stamp = "[%d/%b/%Y:%H:%M:%S %z]"
        assert line in {time.strftime(stamp, time.localtime(s)) for s in (before, after)}


def test_a_renderer_called_off_the_loop_reads_the_time_every_time() -> None:
    render = compile_format("%t")
    exchange = object()
    first = render(exchange, 0.0)  # type: ignore[arg-type]
    assert first.startswith("[")
    clock = accesslog._compile("%t")[1]
    assert clock is not None
    clock.refresh()
    assert not clock.valid  # nothing on a loop would renew it


def test_a_timestamp_left_valid_by_a_stopped_loop_is_renewed() -> None:
    clock = Clock("apache")

    async def refresh() -> None:
        clock.refresh()

    loop = asyncio.new_event_loop()
    loop.run_until_complete(refresh())
    loop.close()  # its timer never runs
    assert clock.valid
    clock.until -= 5.0  # as if seconds had passed
    clock.check()
    assert not clock.valid
