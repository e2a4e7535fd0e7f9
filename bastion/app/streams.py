"""A :class:`StreamingResponse`'s body on its way out: on the loop, or from a pool thread.

Kept out of the compiled dispatch module (``bastion/app/dispatch.py``): an async generator is
consumed here, and a stream is one request in many, not the per-request path.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable
from typing import Any

from bastion.app.response import StreamingResponse
from bastion.engine.errors import ClientDisconnected
from bastion.engine.exchange import Exchange, ThreadWriter

# What a blocking handler's call returns once it has streamed its response itself.
STREAMED = object()


def fail_on_error(exchange: Exchange, result: Any, error: BaseException | None) -> None:
    if error is not None:
        exchange.fail(error)


def _as_bytes(chunk: bytes | str) -> bytes:
    return chunk.encode("utf-8") if isinstance(chunk, str) else chunk


async def stream_async(
    exchange: Exchange, response: StreamingResponse, content: AsyncIterable[bytes | str]
) -> None:
    exchange.start(response.status, response.headers, response.content_length)
    try:
        async for chunk in content:
            exchange.write(_as_bytes(chunk))
            await exchange.drain()
    except GeneratorExit:
        raise  # the task itself is being destroyed: nothing may be awaited any more
    except BaseException:
        # A client that left (or a cancellation) ends the stream now, not when the generator
        # is collected; one that failed inside its own step has already finished.
        close = getattr(content, "aclose", None)
        if close is not None and not getattr(content, "ag_running", False):
            await close()
        raise
    exchange.end()


def stream_blocking(
    exchange: Exchange, response: StreamingResponse, content: Iterable[bytes | str]
) -> None:
    """Runs on a pool thread: produce each piece here, hand it to the loop to send."""
    writer = ThreadWriter(exchange)
    exchange.start_threadsafe(response.status, response.headers, response.content_length)
    try:
        for chunk in content:
            if exchange.finished:
                raise ClientDisconnected("response abandoned")
            writer.write(_as_bytes(chunk))
    finally:
        close = getattr(content, "close", None)
        if close is not None:
            close()
    exchange.end_threadsafe()
