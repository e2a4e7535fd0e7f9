"""``http.client.HTTPMessage`` objects built from headers Bastion's parser already accepted.

The standard library re-parses the request head with the ``email`` package, which splits on a
bare CR, keeps the first of two different ``Content-Length`` values and silently drops
``Name : value`` lines. Here nothing is re-parsed: the message is filled with the exact fields
llhttp accepted, so what a handler sees is what the engine enforced.
"""

from __future__ import annotations

import http.client
from email.message import Message


def build_message(
    fields: list[tuple[bytes, bytes]], message_class: type[Message] = http.client.HTTPMessage
) -> Message:
    """A message whose ``get``/``get_all``/``[]``/``items`` match the standard library's."""
    message = message_class()
    # Appending to the private list is what ``message[name] = value`` does after a policy
    # round trip; doing it directly keeps names and values exactly as received.
    append = message._headers.append  # type: ignore[attr-defined]
    for name, value in fields:
        append((name.decode("latin-1"), value.decode("latin-1")))
    return message
