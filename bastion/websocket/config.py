"""Every knob of a WebSocket connection, validated once when the adapter is built."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WebSocketConfig:
    """Limits and deadlines for the WebSocket connections of one adapter (ASGI or ``App``).

    Sizes are in bytes, deadlines in seconds.

    ``max_message_size`` bounds a whole message, after decompression, however many frames it
    came in: past it the connection is closed with 1009 (RFC 6455 §7.4.1). ``max_frame_size``
    bounds one frame, so a peer announcing a huge frame is refused before its payload arrives.
    ``receive_queue`` is how many complete messages wait for the application before the
    connection stops reading from the socket (the kernel's buffers then push back on the
    client): memory per connection stays bounded by ``receive_queue`` messages plus those of
    the one read (at most 256 KiB) that filled the queue.

    ``ping_interval`` sends a ping that often; a peer whose pong has not come back within
    ``ping_timeout`` is gone (closed with 1011, as browsers and proxies do). ``None`` turns
    either off. ``close_timeout`` bounds the closing handshake: a peer that never answers our
    close frame loses its connection then. Writes are bounded by the server's
    ``write_timeout``, like any response.

    ``compression`` accepts ``permessage-deflate`` (RFC 7692) when the client offers it,
    with 4 KiB windows (about 60 KiB of zlib state per connection, instead of 320 KiB);
    decompressed data counts against ``max_message_size``, so a compression bomb is closed
    with 1009 before it is inflated.
    """

    max_message_size: int = 1024 * 1024
    max_frame_size: int = 1024 * 1024
    receive_queue: int = 16
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    close_timeout: float = 10.0
    compression: bool = True

    def __post_init__(self) -> None:
        for name in ("max_message_size", "max_frame_size", "receive_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        for name in ("ping_interval", "ping_timeout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None, got {value!r}")
        if self.close_timeout <= 0:
            raise ValueError(f"close_timeout must be positive, got {self.close_timeout!r}")
