"""A supervisor whose plan has a job that broadcasts a counter; each worker writes down what
it is told, one file per worker. Run as ``python -m tests.process.broadcasting DIR [--admin]``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from bastion import App, Request, Response
from bastion.engine.config import WorkerConfig
from bastion.engine.handler import Handler, HandlerWrapper
from bastion.engine.listeners import parse_bind
from bastion.observe.config import MonitorConfig
from bastion.process.channel import Broadcast
from bastion.process.supervisor import Supervisor
from bastion.process.workers import ServePlan

app = App()


@app.get("/")
async def hello(request: Request) -> Response:
    return Response(b"Hello, world!")


class Counter:
    """Counts every 50 ms and says so; its state is the count so far."""

    def __init__(self) -> None:
        self.count = 0

    async def run(self, broadcast: Broadcast) -> None:
        while True:
            await asyncio.sleep(0.05)
            self.count += 1
            broadcast({"n": self.count})

    def state(self) -> list[dict[str, Any]]:
        return [{"n": self.count, "state": True}]


class Recording(HandlerWrapper):
    def __init__(self, inner: Handler, directory: Path) -> None:
        super().__init__(inner)
        self.path = directory / f"{os.getpid()}.log"

    def supervisor_message(self, message: dict[str, Any]) -> None:
        with self.path.open("a") as file:
            file.write(json.dumps(message) + "\n")


def main() -> int:
    directory = Path(sys.argv[1])
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    admin = "--admin" in sys.argv
    plan = ServePlan(
        load_handler=lambda: Recording(app, directory),
        workers=WorkerConfig(workers=2, graceful_timeout=1.0),
        binds=[parse_bind("127.0.0.1:0")],
        monitor=MonitorConfig(admin_bind="127.0.0.1:0" if admin else None),
        jobs=[Counter()],
    )

    def announce(urls: list[str]) -> None:
        for url in urls:
            print(f"serving on {url}", file=sys.stderr, flush=True)

    supervisor = Supervisor(plan, on_ready=announce)
    supervisor.bind()
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
