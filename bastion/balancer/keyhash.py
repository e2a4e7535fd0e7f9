"""Hashing for the hash strategies: request keys and ring points to 64-bit integers.

BLAKE2b from the standard library: it scatters keys that differ in a character or two, such
as neighbouring client addresses (the ring and the Maglev table need that; a checksum like
CRC32 is linear and only 32 bits wide), it is identical in every worker and on every host
(Python's own ``hash()`` is salted per process, so two workers would disagree), and it
costs well under a microsecond for a short key, which is small beside a proxied request
(see docs/balancing.md).
"""

from __future__ import annotations

import struct
from hashlib import blake2b

MASK64 = (1 << 64) - 1
_EIGHT = struct.Struct("<8Q")


def hash64(key: bytes) -> int:
    """The 64-bit hash of a request key."""
    return int.from_bytes(blake2b(key, digest_size=8).digest(), "little")


def rehash(value: int, attempt: int) -> int:
    """A new, independent-looking 64-bit value for the ``attempt``-th fallback of a hash.

    SplitMix64's finaliser: cheap, and each attempt lands somewhere unrelated, so the keys of
    a server that is down spread over all the others instead of piling onto one neighbour.
    """
    value = (value + attempt * 0x9E3779B97F4A7C15) & MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & MASK64
    return value ^ (value >> 31)


def points(label: str, count: int) -> list[int]:
    """``count`` 64-bit points for ``label``, eight per 64-byte digest.

    Ketama likewise takes four points from each MD5; fewer digests is most of a ring's
    build time.
    """
    out: list[int] = []
    prefix = label.encode() + b"-"
    for group in range((count + 7) // 8):
        digest = blake2b(prefix + str(group).encode(), digest_size=64).digest()
        out.extend(_EIGHT.unpack(digest))
    del out[count:]
    return out


def pair(label: str) -> tuple[int, int]:
    """Two independent 64-bit values for ``label`` (Maglev's offset and skip)."""
    digest = blake2b(label.encode(), digest_size=16).digest()
    return int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little")
