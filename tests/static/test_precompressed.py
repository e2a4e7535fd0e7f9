"""Precompressed siblings (name.br, name.gz) chosen by Accept-Encoding, with Vary."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from bastion.static.encoding import preferences
from tests.static.support import curl, get, serve_dir, write

TEXT = b"body { color: red; }\n" * 50
BROTLI = b"pretend brotli bytes"
MTIME = 1_700_000_000


@pytest.fixture
def site(tmp_path: Path) -> Path:
    write(tmp_path / "style.css", TEXT, mtime=MTIME)
    write(tmp_path / "style.css.gz", gzip.compress(TEXT), mtime=MTIME + 1)
    write(tmp_path / "style.css.br", BROTLI, mtime=MTIME + 1)
    write(tmp_path / "only-gz.js", "js()", mtime=MTIME)
    write(tmp_path / "only-gz.js.gz", gzip.compress(b"js()"), mtime=MTIME)
    write(tmp_path / "plain.txt", "plain")
    return tmp_path


@pytest.mark.parametrize(
    ("accept", "coding"),
    [
        ("gzip, deflate, br", "br"),
        ("br", "br"),
        ("gzip", "gzip"),
        ("x-gzip", "gzip"),
        ("br;q=0.5, gzip", "gzip"),
        ("br;q=0, gzip;q=0.1", "gzip"),
        ("gzip;q=1.0, br;q=1", "br"),
        ("*", "br"),
        ("*;q=0.5, br;q=0", "gzip"),
        ("br;q=0, gzip;q=0", None),
        ("identity", None),
        ("deflate", None),
        ("*;q=0", None),
        ("gzip;q=abc", None),
    ],
)
def test_encoding_is_chosen_by_q_values(site: Path, accept: str, coding: str | None) -> None:
    with serve_dir(site) as server:
        status, headers, body = get(server, "/style.css", {"Accept-Encoding": accept})
        assert status == 200
        assert headers["content-type"] == "text/css; charset=utf-8"
        assert headers["vary"] == "accept-encoding"
        assert headers.get("content-encoding") == coding
        expected = {"br": BROTLI, "gzip": gzip.compress(TEXT), None: TEXT}[coding]
        if coding == "gzip":
            assert gzip.decompress(body) == TEXT
        else:
            assert body == expected


def test_each_encoding_has_its_own_etag_and_ranges_apply_to_it(site: Path) -> None:
    with serve_dir(site) as server:
        tags = {
            accept: get(server, "/style.css", {"Accept-Encoding": accept})[1]["etag"]
            for accept in ("identity", "gzip", "br")
        }
        assert len(set(tags.values())) == 3
        status, headers, _ = get(
            server, "/style.css", {"Accept-Encoding": "br", "If-None-Match": tags["br"]}
        )
        assert (status, headers["vary"]) == (304, "accept-encoding")
        assert (
            get(server, "/style.css", {"Accept-Encoding": "gzip", "If-None-Match": tags["br"]})[0]
            == 200
        )
        status, headers, body = get(
            server, "/style.css", {"Accept-Encoding": "br", "Range": "bytes=0-6"}
        )
        assert (status, body) == (206, BROTLI[:7])
        assert headers["content-range"] == f"bytes 0-6/{len(BROTLI)}"
        assert headers["content-encoding"] == "br"


def test_only_existing_siblings_are_used(site: Path) -> None:
    with serve_dir(site) as server:
        _, headers, body = get(server, "/only-gz.js", {"Accept-Encoding": "br, gzip"})
        assert headers["content-encoding"] == "gzip"
        assert gzip.decompress(body) == b"js()"
        _, headers, body = get(server, "/only-gz.js", {"Accept-Encoding": "br"})
        assert (body, headers["vary"]) == (b"js()", "accept-encoding")
        assert "content-encoding" not in headers
        _status, headers, body = get(server, "/plain.txt", {"Accept-Encoding": "br, gzip"})
        assert body == b"plain"
        assert "vary" not in headers and "content-encoding" not in headers


def test_stale_sibling_is_not_served(site: Path) -> None:
    with serve_dir(site) as server:
        write(site / "style.css", b"h1 { color: blue }", mtime=MTIME + 100)
        _status, headers, body = get(server, "/style.css", {"Accept-Encoding": "br, gzip"})
        assert body == b"h1 { color: blue }"
        assert "content-encoding" not in headers
        assert headers["vary"] == "accept-encoding"


def test_siblings_can_be_turned_off(site: Path) -> None:
    with serve_dir(site, precompressed=False) as server:
        _status, headers, body = get(server, "/style.css", {"Accept-Encoding": "br, gzip"})
        assert body == TEXT
        assert "vary" not in headers and "content-encoding" not in headers


def test_sibling_symlink_outside_the_root_is_ignored(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root / "x.txt", "x", mtime=MTIME)
    write(tmp_path / "secret.gz", b"SECRET", mtime=MTIME + 5)
    os.symlink(tmp_path / "secret.gz", root / "x.txt.gz")
    with serve_dir(root) as server:
        _status, headers, body = get(server, "/x.txt", {"Accept-Encoding": "gzip"})
        assert body == b"x"
        assert "content-encoding" not in headers


def test_curl_compressed(site: Path) -> None:
    with serve_dir(site) as server:
        result = curl("--compressed", "-H", "Accept-Encoding: gzip", f"{server.url}/style.css")
        assert result.stdout == TEXT


def test_preferences_units() -> None:
    assert [c for c, _, _ in preferences("gzip, br")] == ["br", "gzip"]
    assert [c for c, _, _ in preferences("gzip;q=0.9, br;q=0.8")] == ["gzip", "br"]
    assert preferences("identity;q=1, *;q=0") == ()
    assert preferences("") == ()
