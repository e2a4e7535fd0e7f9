"""The small-file cache: hits skip open/read, and any change to the file is seen at once."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.static import StaticFiles, cache
from tests.serving import RunningServer, read_response, serve
from tests.static.support import get, write

OLD = 1_600_000_000


@pytest.fixture
def settled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files written by the test count as settled at once (normally: 2 s untouched)."""
    monkeypatch.setattr(cache, "SETTLE", -1e12)


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    paths: list[str] = []
    real = os.open

    def recording(path: str, *args: object, **kwargs: object) -> int:
        paths.append(os.fspath(path))
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", recording)
    return paths


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[StaticFiles, RunningServer, Path]]:
    root = tmp_path / "root"
    write(root / "a.txt", "first", mtime=OLD)
    write(root / "deep" / "er" / "b.txt", "bee", mtime=OLD)
    static = StaticFiles(root)
    with serve(static) as server:
        yield static, server, root


def test_second_request_is_served_from_memory(
    settled: None, opened: list[str], served: tuple[StaticFiles, RunningServer, Path]
) -> None:
    static, server, root = served
    assert get(server, "/a.txt")[2] == b"first"
    assert get(server, "/deep/er/b.txt")[2] == b"bee"
    assert static.cache is not None and len(static.cache) == 2
    opened.clear()
    for _ in range(3):
        status, headers, body = get(server, "/a.txt")
        assert (status, body) == (200, b"first")
        assert get(server, "/deep/er/b.txt")[2] == b"bee"
    assert not [p for p in opened if p.startswith(str(root))]
    # conditionals and ranges are answered from memory too
    etag = headers["etag"]
    assert get(server, "/a.txt", {"If-None-Match": etag})[0] == 304
    assert get(server, "/a.txt", {"Range": "bytes=1-2"})[2] == b"ir"
    assert get(server, "/a.txt", {"Range": "bytes=0-0,4-"})[0] == 206
    assert get(server, "/a.txt", {"Range": "bytes=9-"})[0] == 416
    assert get(server, "/a.txt", method="HEAD")[1]["content-length"] == "5"
    assert not [p for p in opened if p.startswith(str(root))]


def test_one_check_serves_the_requests_of_one_turn(
    settled: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    write(root / "a.txt", "first", mtime=OLD)
    checked: list[str] = []
    real = os.lstat

    def recording(path: str, *args: object, **kwargs: object) -> os.stat_result:
        checked.append(os.fspath(path))
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "lstat", recording)  # before the cache takes it
    target = str(root / "a.txt")
    with serve(StaticFiles(root)) as server:
        assert get(server, "/a.txt")[2] == b"first"  # read from disk, then kept
        checked.clear()
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.sendall(b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n" * 20)  # one read, one turn
            answers = [read_response(sock) for _ in range(20)]
        assert [(status, body) for status, _, body in answers] == [(200, b"first")] * 20
        assert checked.count(target) == 1
        # The next turn looks again, and sees a change made in between.
        write(root / "a.txt", "FIRST", mtime=OLD + 1)
        assert get(server, "/a.txt")[2] == b"FIRST"


def test_trust_ends_with_the_loop_that_gave_it(settled: None, tmp_path: Path) -> None:
    # One StaticFiles served by one server, then by another on a new loop (or by two at
    # once): an entry trusted in a turn the old loop never finished is not trusted after.
    write(tmp_path / "a.txt", "first", mtime=OLD)
    static = StaticFiles(tmp_path)
    assert static.cache is not None
    with serve(static) as server:
        assert get(server, "/a.txt")[2] == b"first"
        assert get(server, "/a.txt")[2] == b"first"
        kept = static.cache._entries[str(tmp_path / "a.txt")]
    static.cache.confirmed[str(tmp_path / "a.txt")] = kept  # a turn cut short by the stop
    write(tmp_path / "a.txt", "FIRST", mtime=OLD + 1)
    with serve(static) as server:
        for _ in range(3):
            assert get(server, "/a.txt")[2] == b"FIRST"
            write(tmp_path / "a.txt", "first", mtime=OLD)
            assert get(server, "/a.txt")[2] == b"first"
            write(tmp_path / "a.txt", "FIRST", mtime=OLD + 1)


def test_every_kind_of_change_is_seen(
    settled: None, served: tuple[StaticFiles, RunningServer, Path]
) -> None:
    _, server, root = served
    target = root / "a.txt"
    assert get(server, "/a.txt")[2] == b"first"
    # same size, new time
    write(target, "FIRST", mtime=OLD + 1)
    assert get(server, "/a.txt")[2] == b"FIRST"
    # same size, same time, new file renamed over it (new inode)
    write(root / "tmp", "fIrSt", mtime=OLD + 1)
    os.replace(root / "tmp", target)
    assert get(server, "/a.txt")[2] == b"fIrSt"
    # rewritten in place, same size, time set back to the old one: the change time still moves
    with target.open("r+b") as handle:
        handle.write(b"FiRsT")
    os.utime(target, (OLD + 1, OLD + 1))
    assert get(server, "/a.txt")[2] == b"FiRsT"
    # permissions
    target.chmod(0o600)
    assert get(server, "/a.txt")[0] == 200
    # replaced by a symlink leading outside the root
    write(root.parent / "secret.txt", "SECRET", mtime=OLD)
    target.unlink()
    os.symlink(root.parent / "secret.txt", target)
    assert get(server, "/a.txt")[0] == 404
    target.unlink()
    assert get(server, "/a.txt")[0] == 404
    # a directory on the way replaced by a symlink leading outside
    write(root.parent / "outside" / "er" / "b.txt", "bee", mtime=OLD)
    assert get(server, "/deep/er/b.txt")[2] == b"bee"
    os.rename(root / "deep", root.parent / "gone")
    os.symlink(root.parent / "outside", root / "deep")
    assert get(server, "/deep/er/b.txt")[0] == 404


def test_a_kept_file_is_answered_with_the_fields_of_its_current_version(
    settled: None, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    write(root / "a.txt", "first", mtime=OLD)
    static = StaticFiles(root, cache_control="max-age=60")
    with serve(static) as server:
        answers = [get(server, "/a.txt") for _ in range(3)]  # read, then kept, then from memory
        fields = ("content-type", "etag", "last-modified", "accept-ranges", "cache-control")
        first = {name: answers[0][1][name] for name in fields}
        assert first["cache-control"] == "max-age=60" and first["accept-ranges"] == "bytes"
        for status, headers, body in answers[1:]:
            assert (status, body) == (200, b"first")
            assert {name: headers[name] for name in fields} == first
        write(root / "a.txt", "other", mtime=OLD + 60)
        status, headers, body = get(server, "/a.txt")
        assert (status, body) == (200, b"other")
        assert headers["etag"] != first["etag"]
        assert headers["last-modified"] != first["last-modified"]
        again = get(server, "/a.txt")[1]
        assert {name: again[name] for name in fields} == {name: headers[name] for name in fields}


def test_recent_files_are_not_kept(served: tuple[StaticFiles, RunningServer, Path]) -> None:
    static, server, root = served
    write(root / "fresh.txt", "fresh")  # written now: its change time is now
    assert get(server, "/fresh.txt")[2] == b"fresh"
    assert static.cache is not None
    assert str(root / "fresh.txt") not in static.cache._entries


def test_cache_is_bounded_and_can_be_off(settled: None, tmp_path: Path) -> None:
    for i in range(10):
        write(tmp_path / f"{i}.bin", bytes([i]) * 1000, mtime=OLD)
    static = StaticFiles(tmp_path, cache_bytes=3500)
    with serve(static) as server:
        for i in range(10):
            assert get(server, f"/{i}.bin")[2] == bytes([i]) * 1000
    assert static.cache is not None
    assert len(static.cache) == 3 and static.cache.used == 3000
    off = StaticFiles(tmp_path, cache_bytes=0)
    assert off.cache is None
    with serve(off) as server:
        assert get(server, "/3.bin")[2] == b"\x03" * 1000


def test_cached_file_with_a_sibling_still_varies(settled: None, tmp_path: Path) -> None:
    write(tmp_path / "s.css", "a{}", mtime=OLD)
    write(tmp_path / "s.css.gz", b"gz", mtime=OLD)
    with serve(StaticFiles(tmp_path)) as server:
        for _ in range(2):
            _, headers, body = get(server, "/s.css", {"Accept-Encoding": "identity"})
            assert (body, headers["vary"]) == (b"a{}", "accept-encoding")
        _, headers, body = get(server, "/s.css", {"Accept-Encoding": "gzip"})
        assert (body, headers["content-encoding"]) == (b"gz", "gzip")
        _, headers, body = get(server, "/s.css", {"Accept-Encoding": "identity"})
        assert (body, headers["vary"]) == (b"a{}", "accept-encoding")
