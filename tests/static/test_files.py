"""Serving files and directories end to end: GET, HEAD, types, listings, redirects, changes."""

from __future__ import annotations

import html
import os
import re
import socket
import time
from pathlib import Path

import pytest

from tests.serving import read_response
from tests.static.support import curl, get, raw, serve_dir, write


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    write(root / "hello.txt", "Hello, static world!\n")
    write(root / "page.html", "<h1>hi</h1>")
    write(root / "app.js", "console.log(1)")
    write(root / "data.json", "{}")
    write(root / "blob", b"\x00\x01\x02")
    write(root / "archive.tar.gz", b"\x1f\x8b")
    write(root / "big.bin", os.urandom(300_000))
    write(root / "empty.txt", b"")
    write(root / "docs" / "index.html", "<p>docs index</p>")
    write(root / "files" / "a.txt", "a")
    return root


def test_get_and_head_of_a_small_file(site: Path) -> None:
    with serve_dir(site) as server:
        status, headers, body = get(server, "/hello.txt")
        assert status == 200
        assert body == b"Hello, static world!\n"
        assert headers["content-type"] == "text/plain; charset=utf-8"
        assert headers["content-length"] == str(len(body))
        assert headers["accept-ranges"] == "bytes"
        assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+"', headers["etag"])
        mtime = int((site / "hello.txt").stat().st_mtime)
        assert headers["last-modified"] == time.strftime(
            "%a, %d %b %Y %H:%M:%S GMT", time.gmtime(mtime)
        )
        assert "cache-control" not in headers
        status, head_headers, body = get(server, "/hello.txt", method="HEAD")
        assert status == 200 and body == b""
        assert head_headers["content-length"] == headers["content-length"]
        assert head_headers["etag"] == headers["etag"]


def test_large_file_is_sent_whole_and_head_has_its_length(site: Path) -> None:
    with serve_dir(site) as server:
        status, headers, body = get(server, "/big.bin")
        assert status == 200
        assert body == (site / "big.bin").read_bytes()
        assert headers["content-length"] == "300000"
        status, headers, body = get(server, "/big.bin", method="HEAD")
        assert (status, headers["content-length"], body) == (200, "300000", b"")


def test_zero_copy_path_is_taken_on_plain_tcp(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.sendfile

    def counting(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        sent = real(out_fd, in_fd, offset, count)
        calls.append(sent)
        return sent

    monkeypatch.setattr(os, "sendfile", counting)
    with serve_dir(site) as server:
        status, _, body = get(server, "/big.bin")
    assert status == 200 and len(body) == 300_000
    assert sum(calls) == 300_000


def test_content_types(site: Path) -> None:
    expected = {
        "/page.html": "text/html; charset=utf-8",
        "/app.js": "text/javascript; charset=utf-8",
        "/data.json": "application/json",
        "/blob": "application/octet-stream",
        "/archive.tar.gz": "application/gzip",
        "/empty.txt": "text/plain; charset=utf-8",
    }
    with serve_dir(site) as server:
        for path, kind in expected.items():
            status, headers, _ = get(server, path)
            assert status == 200, path
            assert headers["content-type"] == kind, path
            assert "content-encoding" not in headers, path


def test_empty_file(site: Path) -> None:
    with serve_dir(site) as server:
        assert get(server, "/empty.txt")[::2] == (200, b"")


def test_keep_alive_serves_many_files_on_one_connection(site: Path) -> None:
    with serve_dir(site) as server:
        sock = socket.create_connection((server.host, server.port), timeout=5)
        request = (
            b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\nGET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        sock.sendall(request * 3)  # pipelined: small and sendfile responses in order
        for _ in range(3):
            assert read_response(sock)[2] == b"Hello, static world!\n"
            assert len(read_response(sock)[2]) == 300_000
        sock.close()


def test_methods_other_than_get_and_head_are_405(site: Path) -> None:
    with serve_dir(site) as server:
        for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
            status, headers, _ = get(server, "/hello.txt", method=method)
            assert status == 405, method
            assert headers["allow"] == "GET, HEAD"


def test_cache_control_is_configurable(site: Path) -> None:
    with serve_dir(site, cache_control="public, max-age=60") as server:
        assert get(server, "/hello.txt")[1]["cache-control"] == "public, max-age=60"
        assert get(server, "/big.bin")[1]["cache-control"] == "public, max-age=60"


def test_directory_redirects_to_slash_keeping_the_query(site: Path) -> None:
    with serve_dir(site) as server:
        status, headers, _ = get(server, "/files?sort=name")
        assert status == 301
        assert headers["location"] == "/files/?sort=name"
        # "//evil.example" must never become a protocol-relative redirect to another host
        (site / "evil.example").mkdir()
        status, headers, _ = raw(server, "//evil.example")
        assert status == 301
        assert headers["location"] == "/evil.example/"


def test_index_html_is_served_for_its_directory(site: Path) -> None:
    with serve_dir(site) as server:
        status, headers, body = get(server, "/docs/")
        assert (status, body) == (200, b"<p>docs index</p>")
        assert headers["content-type"] == "text/html; charset=utf-8"
    with serve_dir(site, index="") as server:
        status, _, body = get(server, "/docs/")
        assert status == 200 and b"index.html" in body  # a listing now


def test_listing(site: Path) -> None:
    weird = 'we<ird> & "name".txt'
    write(site / "files" / weird, "x" * 2048)
    write(site / "files" / "B.txt", "bb")
    (site / "files" / "sub dir").mkdir()
    with serve_dir(site) as server:
        status, headers, body = get(server, "/files/")
        assert status == 200
        assert headers["content-type"] == "text/html; charset=utf-8"
        page = body.decode()
        assert "<title>Index of /files/</title>" in page
        assert 'name="viewport"' in page
        hrefs = re.findall(r'<td class="name"><a href="([^"]*)">([^<]*)</a>', page)
        assert hrefs == [
            ("../", "../"),
            ("sub%20dir/", "sub dir/"),
            ("a.txt", "a.txt"),
            ("B.txt", "B.txt"),
            ("we%3Cird%3E%20%26%20%22name%22.txt", html.escape(weird)),
        ]
        assert "<ird>" not in page
        assert 'data-bytes="2048"' in page and "2.0 KiB" in page
        # every link on the page works
        for href, _ in hrefs[1:]:
            assert get(server, "/files/" + href)[0] in (200, 301), href
        root_page = get(server, "/")[2].decode()
        assert 'href="../"' not in root_page  # no parent above the root


def test_listings_can_be_turned_off(site: Path) -> None:
    with serve_dir(site, listings=False) as server:
        assert get(server, "/files/")[0] == 404
        assert get(server, "/")[0] == 404
        assert get(server, "/docs/")[0] == 200  # an index still works
        assert get(server, "/files/a.txt")[0] == 200


def test_trailing_slash_on_a_file_is_404(site: Path) -> None:
    with serve_dir(site) as server:
        assert get(server, "/hello.txt/")[0] == 404


def test_missing_file_is_404(site: Path) -> None:
    with serve_dir(site) as server:
        assert get(server, "/nope.txt")[0] == 404
        assert get(server, "/hello.txt/more")[0] == 404


def test_files_added_changed_and_removed_while_serving(site: Path) -> None:
    target = site / "live.txt"
    with serve_dir(site) as server:
        assert get(server, "/live.txt")[0] == 404
        assert "live.txt" not in get(server, "/")[2].decode()
        write(target, "version one", mtime=1_700_000_000)
        status, first, body = get(server, "/live.txt")
        assert (status, body) == (200, b"version one")
        assert "live.txt" in get(server, "/")[2].decode()
        write(target, "version two!", mtime=1_700_000_100)
        status, second, body = get(server, "/live.txt")
        assert (status, body) == (200, b"version two!")
        assert second["etag"] != first["etag"]
        # same size, only the time changes: still a new ETag
        write(target, "version 3 !!", mtime=1_700_000_200)
        status, third, body = get(server, "/live.txt")
        assert body == b"version 3 !!" and third["etag"] != second["etag"]
        target.unlink()
        assert get(server, "/live.txt")[0] == 404


def test_fifo_is_refused_without_blocking(site: Path) -> None:
    os.mkfifo(site / "pipe")
    with serve_dir(site) as server:
        assert get(server, "/pipe")[0] == 403
        assert get(server, "/hello.txt")[0] == 200
        assert "pipe" not in get(server, "/")[2].decode()


def test_unreadable_file_is_403(site: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads any file; covered by test_cli's unprivileged run")
    secret = write(site / "secret.txt", "secret")
    secret.chmod(0)
    with serve_dir(site) as server:
        assert get(server, "/secret.txt")[::2] == (403, b"403 Forbidden\n")


def test_file_truncated_mid_response_closes_the_connection(site: Path) -> None:
    big = write(site / "shrinks.bin", b"a" * (64 * 1024 * 1024))
    with serve_dir(site) as server:
        sock = socket.create_connection((server.host, server.port), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(b"GET /shrinks.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        received = sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 200 OK")
        os.truncate(big, 1024 * 1024)  # the server has sent at most a few MiB yet
        total = len(received)
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            total += len(chunk)
        sock.close()
        assert total < 64 * 1024 * 1024  # cut short, and the connection closed
        assert get(server, "/hello.txt")[0] == 200  # server unharmed
        assert get(server, "/shrinks.bin")[0] == 200


def test_file_deleted_mid_response(site: Path) -> None:
    """A file removed while it is being sent: the open file is finished, the server is fine."""
    doomed = write(site / "doomed.bin", b"z" * (16 * 1024 * 1024))
    with serve_dir(site) as server:
        sock = socket.create_connection((server.host, server.port), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(b"GET /doomed.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        received = sock.recv(65536)
        doomed.unlink()
        expected = len(received.split(b"\r\n\r\n", 1)[0]) + 4 + 16 * 1024 * 1024
        total = len(received)
        while total < expected:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            total += len(chunk)
        sock.close()
        assert total == expected
        assert get(server, "/doomed.bin")[0] == 404
        assert get(server, "/hello.txt")[0] == 200


def test_curl_downloads_match(site: Path, tmp_path: Path) -> None:
    with serve_dir(site) as server:
        out = tmp_path / "download.bin"
        result = curl("-o", str(out), "-w", "%{http_code}", f"{server.url}/big.bin")
        assert result.stdout == b"200"
        assert out.read_bytes() == (site / "big.bin").read_bytes()
        result = curl("-I", f"{server.url}/hello.txt")
        assert result.stdout.startswith(b"HTTP/1.1 200 OK")
        assert b"content-length: 21" in result.stdout


def test_http_1_0_client_gets_the_whole_file_then_close(site: Path) -> None:
    with serve_dir(site) as server:
        sock = socket.create_connection((server.host, server.port), timeout=10)
        sock.sendall(b"GET /big.bin HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := sock.recv(1 << 20):
            data += chunk
        sock.close()
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert b"connection: close" in head
        assert body == (site / "big.bin").read_bytes()


def test_head_of_a_listing(site: Path) -> None:
    with serve_dir(site) as server:
        _, get_headers, body = get(server, "/files/")
        status, headers, empty = get(server, "/files/", method="HEAD")
        assert (status, empty) == (200, b"")
        assert headers["content-length"] == get_headers["content-length"] == str(len(body))
