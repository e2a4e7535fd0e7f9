"""``SimpleHTTPRequestHandler`` over a directory tree with odd names, on both servers."""

from __future__ import annotations

import email.utils
import http.server
import os
from collections.abc import Iterator
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import pytest

import bastion.compat
from tests.compat.differential import ask, comparable, running

NAMES = ["plain.txt", "with space.txt", "per%cent.txt", "ünïcødé.txt", "a&b<c>.html", "#hash"]
UNDECODABLE = b"caf\xe9.txt"  # Latin-1 bytes: not UTF-8


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class Quiet11(Quiet):
    protocol_version = "HTTP/1.1"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: Any) -> Path:
    root: Path = tmp_path_factory.mktemp("tree")
    for name in NAMES:
        (root / name).write_text(f"content of {name}\n")
    os.close(os.open(os.path.join(os.fsencode(root), UNDECODABLE), os.O_CREAT | os.O_WRONLY))
    (root / "dir").mkdir()
    (root / "dir" / "inner.txt").write_text("inner\n")
    (root / "site").mkdir()
    (root / "site" / "index.html").write_text("<h1>index</h1>\n")
    (root / "site" / "other.js").write_text("let x = 1;\n")
    (root / "empty").mkdir()
    return root


@pytest.fixture(scope="module")
def ports(tree: Path) -> Iterator[dict[tuple[str, str], int]]:
    with ExitStack() as stack:
        found = {}
        for handler in (Quiet, Quiet11):
            for name, server_class in (
                ("stdlib", http.server.ThreadingHTTPServer),
                ("bastion", bastion.compat.ThreadingHTTPServer),
            ):
                factory = partial(handler, directory=str(tree))
                found[(name, handler.__name__)] = stack.enter_context(
                    running(server_class, factory)
                )
        yield found


PATHS = [
    "/",
    "/plain.txt",
    "/with%20space.txt",
    "/per%25cent.txt",
    "/%C3%BCn%C3%AFc%C3%B8d%C3%A9.txt",
    "/a%26b%3Cc%3E.html",
    "/%23hash",
    "/caf%E9.txt",
    "/dir",
    "/dir/",
    "/dir/inner.txt",
    "/dir/inner.txt/",
    "/dir?x=1",
    "/site",
    "/site/",
    "/site/?q",
    "/site/other.js",
    "/empty/",
    "/missing",
    "/missing/",
    "//dir",
    "//example.com/dir",
    "///example.com/dir",
    "/dir/../plain.txt",
    "/dir/%2E%2E/plain.txt",
    "/../../etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/dir%2Finner.txt",
    "/plain.txt?download=1",
]


def get(path: str, method: str = "GET", extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


@pytest.mark.parametrize("handler", ["Quiet", "Quiet11"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("path", PATHS)
def test_same_as_the_standard_library(
    ports: dict[tuple[str, str], int], handler: str, method: str, path: str
) -> None:
    data = get(path, method)
    expected = ask(ports[("stdlib", handler)], data, method.encode())
    actual = ask(ports[("bastion", handler)], data, method.encode())
    assert comparable(actual) == comparable(expected)


@pytest.mark.parametrize("offset", [-3600, 0, 3600])
def test_if_modified_since(ports: dict[tuple[str, str], int], tree: Path, offset: int) -> None:
    modified = (tree / "plain.txt").stat().st_mtime + offset
    since = email.utils.formatdate(modified, usegmt=True)
    data = get("/plain.txt", extra=f"If-Modified-Since: {since}\r\n")
    expected = ask(ports[("stdlib", "Quiet11")], data)
    actual = ask(ports[("bastion", "Quiet11")], data)
    assert comparable(actual) == comparable(expected)
    assert expected[0][0].status == (200 if offset < 0 else 304)


def test_a_target_without_a_leading_slash_is_refused(ports: dict[tuple[str, str], int]) -> None:
    # http.server serves "GET plain.txt"; RFC 9112 §3.2 has no such request target, and a
    # server that guesses what one means is where request smuggling starts: a 400.
    (response,), kept_open = ask(ports[("bastion", "Quiet11")], get("plain.txt"))
    assert response.status == 400
    assert not kept_open
