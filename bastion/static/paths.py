"""From a request target to an open file under the root, and nothing outside it.

Two steps. :func:`split_target` turns the raw target into path segments and refuses anything
that could name something other than a plain file under the root: dot segments, encoded
separators, backslashes, NUL and control bytes, Windows drive letters and device names,
overlong names. It looks at no file, so its answers are remembered (bounded): a busy server
sees the same few targets again and again.

:class:`Resolver` then opens the file, every time, so files added, changed or removed while
serving are seen at once. Symlinks are followed only when their target stays inside the root,
unless the server was asked to follow every symlink. Cheap syscalls only: one ``lstat`` per
directory level below the root, one ``open`` and one ``fstat``.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from typing import Final
from urllib.parse import unquote_to_bytes

# Refused lives in a module that is never compiled (an ``except`` clause elsewhere would not
# match a compiled exception class), and can still be imported from here.
from bastion.static.errors import Refused

# Longest name of one path segment, and of the whole path below the root, in bytes.
MAX_NAME: Final = 255
MAX_PATH: Final = 4096

# NUL, controls, DEL, separators of either kind: never part of a name we serve.
_BAD_BYTES: Final = re.compile(rb"[\x00-\x1f\x7f/\\]")
_DRIVE: Final = re.compile(r"[A-Za-z]:")
# Windows device names are devices in every directory and with any extension (aux.txt).
_DEVICES: Final = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", "CLOCK$"}
    | {f"{kind}{n}" for kind in ("COM", "LPT") for n in "0123456789\u00b9\u00b2\u00b3"}
)
_WINDOWS: Final = os.name == "nt"

# A FIFO must not block the open (O_NONBLOCK); a regular file does not care.
_OPEN_FLAGS: Final[int] = (
    os.O_RDONLY
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
    | getattr(os, "O_NONBLOCK", 0)
)
_NOFOLLOW: Final[int] = getattr(os, "O_NOFOLLOW", 0)

_CACHE_LIMIT: Final = 4096
_split_cache: Final[dict[bytes, tuple[tuple[str, ...], bool] | int]] = {}


def split_target(target: bytes) -> tuple[tuple[str, ...], bool] | int:
    """The path segments of a request target and whether it ended in ``/``; or 400/404.

    Empty segments (``a//b``) are dropped, so ``//host/x`` can never become a redirect to
    another host. Names are decoded as the file system decodes them (UTF-8 with surrogate
    escapes), so any name ``os.listdir`` returns can be requested.
    """
    found = _split_cache.get(target)
    if found is not None:
        return found
    result = _split(target)
    if len(target) <= 1024:
        if len(_split_cache) >= _CACHE_LIMIT:
            _split_cache.clear()
        _split_cache[target] = result
    return result


def _split(target: bytes) -> tuple[tuple[str, ...], bool] | int:
    cut = target.find(b"?")
    path = target if cut < 0 else target[:cut]
    if not path.startswith(b"/"):
        lowered = path[:8].lower()
        if lowered.startswith((b"http://", b"https://")):  # absolute-form
            slash = path.find(b"/", path.find(b"//") + 2)
            path = b"/" if slash < 0 else path[slash:]
        else:
            return 400
    segments = []
    total = 0
    for raw in path.split(b"/"):
        name = unquote_to_bytes(raw) if b"%" in raw else raw
        if not name:
            continue
        if name == b"." or name == b"..":
            return 400
        if _BAD_BYTES.search(name):
            return 400
        total += len(name) + 1
        if len(name) > MAX_NAME or total > MAX_PATH:
            return 404
        text = name.decode("utf-8", "surrogateescape")
        if not allowed_name(text):
            return 404
        segments.append(text)
    return tuple(segments), path.endswith(b"/")


def allowed_name(name: str) -> bool:
    """Whether a single file name may be served (and listed): no drive, no device name."""
    if _DRIVE.match(name):
        return False
    base = name.split(".", 1)[0].rstrip(" ").upper()
    if base in _DEVICES:
        return False
    return not (_WINDOWS and (":" in name or name.endswith((".", " "))))


class Resolver:
    """Opens paths below one root directory under the symlink policy."""

    def __init__(self, root: str, follow_symlinks: bool = False) -> None:
        self.root = os.path.realpath(root)
        self.follow_symlinks = follow_symlinks
        self._inside = self.root if self.root.endswith(os.sep) else self.root + os.sep

    def path_of(self, segments: tuple[str, ...]) -> str:
        if not segments:
            return self.root
        return self._inside + "/".join(segments)

    def contains(self, path: str) -> bool:
        """Whether ``path``, with every symlink resolved, is the root or lies below it."""
        real = os.path.realpath(path)
        return real == self.root or real.startswith(self._inside)

    def open(self, segments: tuple[str, ...]) -> tuple[int, os.stat_result, str]:
        """Open ``segments`` below the root: ``(fd, fstat, path)``, or :class:`Refused`."""
        path = self.path_of(segments)
        try:
            if self.follow_symlinks:
                fd = os.open(path, _OPEN_FLAGS)
            else:
                if len(segments) > 1:
                    self._check_directories(segments)
                fd = self._open_nofollow(path)
            try:
                info = os.fstat(fd)
            except BaseException:
                os.close(fd)
                raise
        except OSError as exc:
            raise _refusal(exc) from None
        return fd, info, path

    def open_beside(self, path: str, suffix: str) -> tuple[int, os.stat_result] | None:
        """Open the sibling ``path + suffix`` (a precompressed copy), or None if there is none.

        The directory was checked when ``path`` was opened; the sibling itself obeys the same
        symlink rule. Anything but a regular file counts as absent.
        """
        sibling = path + suffix
        try:
            if self.follow_symlinks:
                fd = os.open(sibling, _OPEN_FLAGS)
            else:
                fd = self._open_nofollow(sibling)
        except (OSError, Refused):
            return None
        try:
            info = os.fstat(fd)
        except OSError:
            os.close(fd)
            return None
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            return None
        return fd, info

    def directories_ok(self, segments: tuple[str, ...]) -> bool:
        """Whether the directories on the way to ``segments`` pass the symlink rule now."""
        if self.follow_symlinks or len(segments) < 2:
            return True
        try:
            self._check_directories(segments)
        except (OSError, Refused):
            return False
        return True

    def _open_nofollow(self, path: str) -> int:
        try:
            return os.open(path, _OPEN_FLAGS | _NOFOLLOW)
        except OSError as exc:
            if exc.errno != errno.ELOOP or not _NOFOLLOW:
                raise
        # The last component is a symlink: follow it only when it stays inside the root.
        if not self.contains(path):
            raise Refused(404, "symlink leads outside the root")
        return os.open(path, _OPEN_FLAGS)

    def _check_directories(self, segments: tuple[str, ...]) -> None:
        path = self.root
        for name in segments[:-1]:
            path = f"{path}{os.sep}{name}" if path != os.sep else path + name
            if stat.S_ISLNK(os.lstat(path).st_mode) and not self.contains(path):
                raise Refused(404, "symlink leads outside the root")


def _refusal(exc: OSError) -> Refused:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return Refused(403, "permission denied")
    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP, errno.EINVAL):
        return Refused(404, "not found")
    raise exc


__all__ = ["MAX_NAME", "MAX_PATH", "Refused", "Resolver", "allowed_name", "split_target"]
