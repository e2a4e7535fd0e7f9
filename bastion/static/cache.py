"""Small files kept in memory, and never served stale: a hit is checked with one ``stat``.

A hit costs one ``lstat`` of the path instead of ``open``, ``fstat``, ``read`` and ``close``,
and once a file is found unchanged it is trusted for the rest of that turn of the event loop
(:meth:`SmallFiles.confirm`): the requests a turn answers came in together, and they get the
file as it was at the turn's first look. A client that changes a file after one answer and
then asks again is read in a later turn, so it sees the change.

The entry is used only while the file's identity and state are unchanged: device, inode,
size, modification and change times (nanoseconds) and mode. Any write, rename over the path,
``chmod`` or ``touch`` changes at least one of them, and the next check reads the file again.
A symlink never matches (``lstat`` sees the link, not a regular file), so symlinked files take
the full path with its checks every time.

File times are coarse (a few milliseconds on Linux, seconds elsewhere), so a file written
twice within one tick, keeping its size, could look unchanged. A file is therefore kept only
once it has been left alone for ``SETTLE`` seconds: any later write then moves its times past
the ones remembered. Until then each request reads it afresh.

Only files up to ``MAX_FILE`` bytes are kept, within a total of ``limit`` bytes; the oldest
entries make room for new ones.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Final

MAX_FILE: Final = 64 * 1024
SETTLE = 2.0

StatKey = tuple[int, int, int, int, int, int]


def stat_key(info: os.stat_result) -> StatKey:
    return (
        info.st_ino,
        info.st_dev,
        info.st_size,
        info.st_mtime_ns,
        info.st_ctime_ns,
        info.st_mode,
    )


class Representation:
    """What a response for one file needs: validators, type, and (small files) the bytes."""

    __slots__ = ("key", "size", "mtime", "etag", "last_modified", "kind", "body", "fields")

    def __init__(
        self,
        key: StatKey,
        size: int,
        mtime: int,
        etag: str,
        last_modified: str,
        kind: str,
        body: bytes | None = None,
    ) -> None:
        self.key = key
        self.size = size
        self.mtime = mtime
        self.etag = etag
        self.last_modified = last_modified
        self.kind = kind
        self.body = body
        # The response's fields, encoded once for a kept file's many plain 200s.
        self.fields: bytes | None = None


class SmallFiles:
    """Path → :class:`Representation` with its bytes, validated on every lookup."""

    def __init__(self, limit: int, follow_symlinks: bool) -> None:
        self.limit = limit
        self.used = 0
        self._entries: dict[str, Representation] = {}
        self._stat: Callable[[str], os.stat_result] = os.stat if follow_symlinks else os.lstat
        # Entries checked in the current turn of the loop; emptied when the turn ends.
        self.confirmed: dict[str, Representation] = {}
        self._at_turn_end: Callable[[Callable[[], None]], object] | None = None
        self._bound: Callable[[Callable[[], None]], object] | None = None

    def bind(self, call_soon: Callable[[Callable[[], None]], object]) -> None:
        """Let :meth:`confirm` trust an entry until the turn ends (``loop.call_soon``).

        Unbound, or bound by more than one loop (one handler served by several servers),
        every hit is checked. What an earlier loop trusted is forgotten: a loop that stopped
        may never have run the callback that would have.
        """
        self.confirmed.clear()
        if self._bound is None:
            self._bound = self._at_turn_end = call_soon
        elif call_soon != self._bound:
            self._at_turn_end = None

    def confirm(self, path: str, entry: Representation) -> None:
        """``entry`` was just found current: answer from it without a check until the turn ends."""
        at_turn_end = self._at_turn_end
        if at_turn_end is None:
            return
        confirmed = self.confirmed
        if not confirmed:
            at_turn_end(confirmed.clear)
        confirmed[path] = entry

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, path: str) -> Representation | None:
        entry = self._entries.get(path)
        if entry is None:
            return None
        try:
            info = self._stat(path)
        except OSError:
            self._drop(path)
            return None
        if stat_key(info) != entry.key:
            self._drop(path)
            return None
        return entry

    def put(self, path: str, entry: Representation) -> None:
        body = entry.body
        if body is None or len(body) > MAX_FILE or len(body) > self.limit:
            return
        changed = max(entry.key[3], entry.key[4]) / 1e9
        if time.time() - changed < SETTLE:
            return  # touched a moment ago: another write could land in the same tick
        self._drop(path)
        entries = self._entries
        while entries and self.used + len(body) > self.limit:
            self._drop(next(iter(entries)))
        entries[path] = entry
        self.used += len(body)

    def _drop(self, path: str) -> None:
        entry = self._entries.pop(path, None)
        if entry is not None and entry.body is not None:
            self.used -= len(entry.body)
