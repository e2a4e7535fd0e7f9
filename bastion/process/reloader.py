"""Notice source changes for ``--reload`` by polling modification times (no dependency)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

SKIP_DIRS = frozenset(
    {"__pycache__", ".git", ".hg", ".svn", ".venv", "venv", "node_modules", ".mypy_cache"}
)
SUFFIXES = (".py", ".toml")


class SourceWatcher:
    """Remembers the mtimes of ``.py``/``.toml`` files under some paths; says what changed."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.paths = [os.path.abspath(path) for path in paths]
        self._seen = self._snapshot()

    def _files(self) -> Iterator[str]:
        for path in self.paths:
            if os.path.isdir(path):
                for root, dirs, files in os.walk(path):
                    dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")]
                    for name in files:
                        if name.endswith(SUFFIXES):
                            yield os.path.join(root, name)
            else:
                yield path

    def _snapshot(self) -> dict[str, int]:
        seen = {}
        for path in self._files():
            try:
                seen[path] = os.stat(path).st_mtime_ns
            except OSError:
                continue
        return seen

    def changed(self) -> str | None:
        """A path that was added, removed or modified since the last call, or ``None``."""
        now = self._snapshot()
        previous, self._seen = self._seen, now
        if now == previous:
            return None
        for path, mtime in now.items():
            if previous.get(path) != mtime:
                return path
        return next(iter(previous.keys() - now.keys()), self.paths[0] if self.paths else "")
