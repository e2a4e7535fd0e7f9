"""Paths that try to leave the root, or name things no file server should: 400 or 404, never
the file. Requests go out byte for byte (raw sockets), since clients normalise paths."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.static.paths import split_target
from tests.serving import RunningServer
from tests.static.support import curl, get, raw, serve_dir, write

SECRET = b"TOP SECRET outside the root"


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    """tmp/secret.txt beside tmp/root/, which holds public files and some symlinks."""
    write(tmp_path / "secret.txt", SECRET)
    write(tmp_path / "outside" / "inner.txt", SECRET)
    root = tmp_path / "root"
    write(root / "public.txt", "public")
    write(root / "sub" / "page.txt", "page")
    write(root / "C" / "x.txt", "not a drive")
    os.symlink(tmp_path / "secret.txt", root / "link-out.txt")
    os.symlink(tmp_path / "outside", root / "dir-out")
    os.symlink(root / "public.txt", root / "link-in.txt")
    os.symlink("sub", root / "dir-in")
    os.symlink("/etc/passwd", root / "passwd")
    return root


@pytest.fixture
def server(layout: Path) -> Iterator[RunningServer]:
    with serve_dir(layout) as running:
        yield running


TRAVERSALS = [
    "/../secret.txt",
    "/sub/../../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/sub/%2e%2e/%2e%2e/secret.txt",
    "/.%2e/secret.txt",
    "/%2e%2e%2fsecret.txt",
    "/sub%2f..%2f..%2fsecret.txt",
    "/..%2Fsecret.txt",
    "/%2F..%2Fsecret.txt",
    "/%2fetc%2fpasswd",
    "/..\\secret.txt",
    "/%5c..%5csecret.txt",
    "/sub\\..\\..\\secret.txt",
    "/public.txt%00.png",
    "/public.txt%00",
    "/%00",
    "/./public.txt",
    "/sub/./page.txt",
    "/C:/Windows/win.ini",
    "/c:%5cwindows%5cwin.ini",
    "/C:secret.txt",
    "/CON",
    "/con",
    "/NUL",
    "/aux.txt",
    "/sub/Com1.log",
    "/LPT9",
    "/prn.html",
    "/conin$",
    "/" + "a" * 300,
    "/" + "/".join(["d" * 200] * 30),
    "/link-out.txt",
    "/dir-out/inner.txt",
    "/dir-out/",
    "/passwd",
    "/%01public.txt",
    "/public.txt%0d%0aX-Injected: 1",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_traversal_is_refused(server: RunningServer, target: str) -> None:
    status, _, body = raw(server, target)
    assert status in (400, 404), (target, status)
    assert SECRET not in body
    assert b"root:" not in body


@pytest.mark.parametrize(
    "target",
    [
        "http://t/../secret.txt",
        "http://t/%2e%2e/secret.txt",
        "HTTP://evil.example/..%2fsecret.txt",
    ],
)
def test_absolute_form_targets_stay_inside(server: RunningServer, target: str) -> None:
    status, _, body = raw(server, target)
    assert status in (400, 404)
    assert SECRET not in body


def test_absolute_form_to_a_real_file_is_served(server: RunningServer) -> None:
    assert raw(server, "http://t/public.txt")[::2] == (200, b"public")


def test_target_not_starting_with_slash_is_400(server: RunningServer) -> None:
    assert raw(server, "public.txt")[0] == 400
    assert raw(server, "*")[0] in (400, 404)


def test_symlinks_inside_the_root_are_followed(server: RunningServer) -> None:
    assert get(server, "/link-in.txt")[::2] == (200, b"public")
    assert get(server, "/dir-in/page.txt")[::2] == (200, b"page")
    listing = get(server, "/")[2].decode()
    assert "link-in.txt" in listing and "dir-in/" in listing
    assert "link-out" not in listing and "dir-out" not in listing and "passwd" not in listing


def test_follow_symlinks_allows_leaving_the_root(layout: Path) -> None:
    with serve_dir(layout, follow_symlinks=True) as server:
        assert get(server, "/link-out.txt")[::2] == (200, SECRET)
        assert get(server, "/dir-out/inner.txt")[::2] == (200, SECRET)
        # ... but never by a path: dot segments stay refused
        assert raw(server, "/../secret.txt")[0] == 400
        assert raw(server, "/%2e%2e/secret.txt")[0] == 400


def test_a_directory_named_like_a_letter_is_fine(server: RunningServer) -> None:
    assert get(server, "/C/x.txt")[::2] == (200, b"not a drive")


def test_dot_files_and_odd_but_harmless_names(layout: Path) -> None:
    write(layout / "12:30 notes.txt", "colon")
    write(layout / "naïve café.txt", "unicode")
    write(layout / "console.txt", "not a device")
    with serve_dir(layout) as server:
        assert get(server, "/12%3A30%20notes.txt")[::2] == (200, b"colon")
        assert get(server, "/na%C3%AFve%20caf%C3%A9.txt")[::2] == (200, b"unicode")
        assert get(server, "/console.txt")[::2] == (200, b"not a device")


def test_curl_with_path_as_is(server: RunningServer) -> None:
    for path in ("/../secret.txt", "/sub/../../secret.txt", "/%2e%2e/%2e%2e/secret.txt"):
        result = curl("--path-as-is", "-o", "-", "-w", "\n%{http_code}", server.url + path)
        body, _, code = result.stdout.rpartition(b"\n")
        assert code in (b"400", b"404"), path
        assert SECRET not in body


def test_split_target_table() -> None:
    assert split_target(b"/a/b.txt") == (("a", "b.txt"), False)
    assert split_target(b"/a//b/") == (("a", "b"), True)
    assert split_target(b"/") == ((), True)
    assert split_target(b"/a%20b?x=/../") == (("a b",), False)
    assert split_target(b"/%ff") == (("\udcff",), False)
    assert split_target(b"/..") == 400
    assert split_target(b"/a/%2e") == 400
    assert split_target(b"/a%2fb") == 400
    assert split_target(b"/a%5cb") == 400
    assert split_target(b"/a%00") == 400
    assert split_target(b"/d:") == 404
    assert split_target(b"/LPT1.txt") == 404
    assert split_target(b"/COM\xc2\xb9") == 404
    assert split_target(b"/nul .txt") == 404
