"""WebSocket counters, kept per server in plain numbers (like the engine's ``Stats``).

Bumped on the message path, read once a second by the worker's telemetry: opened and closed
connections, messages and payload bytes each way, and closes by code (a bounded label: codes
are 1000-4999, and anything else is counted as 0).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bastion.engine.state import ServerState


class WebSocketStats:
    __slots__ = (
        "opened",
        "closed",
        "messages_in",
        "messages_out",
        "bytes_in",
        "bytes_out",
        "closes_by_code",
    )

    def __init__(self) -> None:
        self.opened = 0
        self.closed = 0
        self.messages_in = 0
        self.messages_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.closes_by_code: dict[int, int] = {}

    @property
    def open(self) -> int:
        return self.opened - self.closed

    def count_close(self, code: int) -> None:
        self.closed += 1
        if not 1000 <= code <= 4999:
            code = 0
        self.closes_by_code[code] = self.closes_by_code.get(code, 0) + 1

    def snapshot(self) -> dict[str, object]:
        return {
            "opened": self.opened,
            "closed": self.closed,
            "messages_in": self.messages_in,
            "messages_out": self.messages_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "closes": dict(self.closes_by_code),
        }


def websocket_stats(state: ServerState) -> WebSocketStats:
    """The WebSocket counters of the server behind ``state`` (made on first use, kept with
    the state's other attachments)."""
    stats = state.attached.get(WebSocketStats)
    if stats is None:
        stats = state.attached[WebSocketStats] = WebSocketStats()
    assert isinstance(stats, WebSocketStats)
    return stats
