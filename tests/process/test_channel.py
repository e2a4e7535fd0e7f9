"""The supervisor-to-worker channel on real socket pairs, without processes."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import pytest

from bastion.process import channel
from bastion.process.channel import (
    Broadcast,
    Broadcaster,
    Inbox,
    Outbox,
    channel_pair,
    decode,
    encode_message,
)


def collect(inbox: Inbox) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    inbox.deliver = got.append
    inbox.drain()
    return got


class Job:
    def __init__(self) -> None:
        self.value = 0
        self.runs = 0

    async def run(self, broadcast: Broadcast) -> None:
        self.runs += 1
        await asyncio.sleep(3600)

    def state(self) -> list[dict[str, Any]]:
        return [{"value": self.value}]


def test_a_worker_gets_the_state_then_every_broadcast_in_order() -> None:
    loop = asyncio.new_event_loop()
    try:
        broadcaster = Broadcaster(loop)
        job = Job()
        job.value = 7
        broadcaster.start([job])
        ours, theirs = channel_pair()
        broadcaster.attach(1, ours)
        inbox = Inbox(theirs, None)
        assert collect(inbox) == [{"value": 7}]
        for n in range(3):
            broadcaster.broadcast({"n": n})
        broadcaster.flush()
        assert collect(inbox) == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert broadcaster.child_fds() == [ours.fileno()]
        broadcaster.detach(1)
        assert broadcaster.child_fds() == []
        broadcaster.close()
        theirs.close()
    finally:
        loop.close()


def test_messages_of_one_loop_pass_leave_in_one_datagram() -> None:
    loop = asyncio.new_event_loop()
    try:
        broadcaster = Broadcaster(loop)
        ours, theirs = channel_pair()
        broadcaster.attach(1, ours)
        for n in range(100):
            broadcaster.broadcast({"n": n})
        loop.run_until_complete(asyncio.sleep(0))
        theirs.setblocking(False)
        datagram = theirs.recv(channel.MAX_DATAGRAM)
        assert [m["n"] for m in decode(datagram)] == list(range(100))
        with pytest.raises(BlockingIOError):
            theirs.recv(channel.MAX_DATAGRAM)
        broadcaster.close()
        theirs.close()
    finally:
        loop.close()


def test_what_a_busy_worker_cannot_take_waits_and_a_hopeless_one_is_resynced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ours, theirs = channel_pair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # full after a few datagrams
    state = [encode_message({"state": True})]
    outbox = Outbox(ours, lambda: state)
    # Datagrams of one message each, until the worker's queue is full.
    monkeypatch.setattr(channel, "MAX_DATAGRAM", 40)
    for n in range(200):
        outbox.put([encode_message({"n": n, "pad": "x" * 10})])
        outbox.flush()
    assert outbox.pending > 0
    inbox = Inbox(theirs, None)
    got = collect(inbox)
    outbox.flush()
    got += collect(inbox)
    while outbox.pending:
        outbox.flush()
        got += collect(inbox)
    assert [m["n"] for m in got] == list(range(200))

    monkeypatch.setattr(channel, "MAX_BACKLOG", 50)
    for n in range(60):
        outbox.put([encode_message({"n": n})])
    # The state replaced what it sums up; what came after it follows.
    assert outbox.pending == 10
    got = []
    while outbox.pending:
        outbox.flush()
        got += collect(inbox)
    assert got == [{"state": True}] + [{"n": n} for n in range(51, 60)]
    outbox.close()
    outbox.put([encode_message({"n": 0})])
    outbox.flush()  # a closed channel is not an error
    theirs.close()


def test_messages_must_be_small_json() -> None:
    with pytest.raises(ValueError, match="must fit"):
        encode_message({"x": "y" * channel.MAX_DATAGRAM})
    with pytest.raises(TypeError):
        encode_message({"x": object()})
    assert decode(b"not json") == []
    assert decode(b'{"a": 1}') == []
    assert decode(b'[{"a": 1}, 2]') == [{"a": 1}]


def test_a_failing_handler_is_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    ours, theirs = channel_pair()
    seen: list[dict[str, Any]] = []

    def deliver(message: dict[str, Any]) -> None:
        seen.append(message)
        if message["n"] == 0:
            raise RuntimeError("handler bug")

    ours.send(b'[{"n": 0}, {"n": 1}]')
    with caplog.at_level(logging.ERROR, logger="bastion.error"):
        Inbox(theirs, deliver).drain()
    assert seen == [{"n": 0}, {"n": 1}]
    assert "the handler failed on a message from the supervisor" in caplog.text
    ours.close()
    theirs.close()


def test_a_failing_job_is_started_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(channel, "RESTART_DELAY", 0.01)
    runs: list[int] = []

    class Failing(Job):
        async def run(self, broadcast: Broadcast) -> None:
            runs.append(1)
            if len(runs) < 3:
                raise RuntimeError("job bug")
            broadcast({"done": True})

    loop = asyncio.new_event_loop()
    try:
        broadcaster = Broadcaster(loop)
        ours, theirs = channel_pair()
        broadcaster.attach(1, ours)
        with caplog.at_level(logging.ERROR, logger="bastion.error"):
            broadcaster.start([Failing()])
            loop.run_until_complete(asyncio.sleep(0.2))
        assert len(runs) == 3
        assert "a supervisor job failed" in caplog.text
        assert collect(Inbox(theirs, None)) == [{"done": True}]
        broadcaster.close()
        theirs.close()
    finally:
        loop.close()


def test_a_new_plan_replaces_the_jobs() -> None:
    loop = asyncio.new_event_loop()
    try:
        broadcaster = Broadcaster(loop)
        old, new = Job(), Job()
        broadcaster.start([old])
        loop.run_until_complete(asyncio.sleep(0))
        broadcaster.start([new])
        loop.run_until_complete(asyncio.sleep(0.01))
        assert (old.runs, new.runs) == (1, 1)
        assert broadcaster.jobs == [new]
        broadcaster.close()
    finally:
        loop.close()


def test_a_notice_reaches_live_and_later_workers_but_never_the_handler() -> None:
    loop = asyncio.new_event_loop()
    try:
        broadcaster = Broadcaster(loop)
        job = Job()
        broadcaster.start([job])
        ours, theirs = channel_pair()
        broadcaster.attach(1, ours)
        notices: list[str] = []
        inbox = Inbox(theirs, None, notices.append)
        assert collect(inbox) == [{"value": 0}]
        broadcaster.notify(channel.STOPPING)
        broadcaster.notify(channel.STOPPING)  # said once
        broadcaster.broadcast({"n": 1})
        broadcaster.flush()
        assert collect(inbox) == [{"n": 1}] and notices == [channel.STOPPING]
        # A worker forked after the notice hears it before the jobs' state.
        later_ours, later_theirs = channel_pair()
        broadcaster.attach(2, later_ours)
        later: list[str] = []
        assert collect(Inbox(later_theirs, None, later.append)) == [{"value": 0}]
        assert later == [channel.STOPPING]
        broadcaster.close()
        theirs.close()
        later_theirs.close()
    finally:
        loop.close()
