"""WebSocket figures in /metrics: counted in each worker, summed by the supervisor."""

from __future__ import annotations

import asyncio
from contextlib import ExitStack

from websockets.asyncio.client import connect

from bastion.observe.aggregate import Aggregator
from bastion.observe.telemetry import WorkerTelemetry
from bastion.websocket import websocket_stats
from tests.observe.test_aggregate import scrape, ship
from tests.serving import RunningServer, serve
from tests.websocket.support import echo_app, wait_until


def test_websocket_counters_are_summed_over_workers() -> None:
    with ExitStack() as stack:
        servers: list[RunningServer] = []
        telemetries = []
        for slot in range(2):
            server = stack.enter_context(serve(echo_app()))
            telemetry = WorkerTelemetry(slot)
            assert server.server.state is not None
            server.call(telemetry.attach, server.server.state)
            servers.append(server)
            telemetries.append(telemetry)

        async def talk(server: RunningServer, code: int) -> None:
            async with connect(f"ws://127.0.0.1:{server.port}/ws", compression=None) as ws:
                for _ in range(2):
                    await ws.send("0123456789")
                    await ws.recv()
                await ws.close(code)

        async def both() -> None:
            await talk(servers[0], 1000)
            await talk(servers[1], 4000)
            await talk(servers[1], 1000)

        asyncio.run(asyncio.wait_for(both(), 10))
        for server in servers:
            assert server.server.state is not None
            stats = websocket_stats(server.server.state)
            wait_until(lambda stats=stats: stats.open == 0)  # type: ignore[misc]

        aggregator = Aggregator()
        for pid, telemetry in enumerate(telemetries, start=100):
            aggregator.worker_started(pid, pid - 100, 1)
            ship(aggregator, telemetry, pid)
        samples = scrape(aggregator)

    assert samples["bastion_websocket_connections_total"][()] == 3
    assert samples["bastion_websocket_connections_open"][()] == 0
    messages = samples["bastion_websocket_messages_total"]
    assert messages[(("direction", "in"),)] == 6
    assert messages[(("direction", "out"),)] == 6
    payload = samples["bastion_websocket_payload_bytes_total"]
    assert payload[(("direction", "in"),)] == 60
    closes = samples["bastion_websocket_closes_total"]
    assert closes[(("code", "1000"),)] == 2
    assert closes[(("code", "4000"),)] == 1
