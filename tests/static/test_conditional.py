"""ETag, Last-Modified and the If-* preconditions, over real connections."""

from __future__ import annotations

import time
from email.utils import formatdate
from pathlib import Path

import pytest

from bastion.static.conditional import etag_matches, evaluate, parse_http_date
from tests.static.support import curl, get, serve_dir, write

MTIME = 1_700_000_000


@pytest.fixture
def site(tmp_path: Path) -> Path:
    write(tmp_path / "f.txt", "conditional body", mtime=MTIME)
    return tmp_path


def date(seconds: float) -> str:
    return formatdate(seconds, usegmt=True)


def test_if_none_match(site: Path) -> None:
    with serve_dir(site, cache_control="max-age=5") as server:
        _, headers, _ = get(server, "/f.txt")
        etag = headers["etag"]
        status, not_modified, body = get(server, "/f.txt", {"If-None-Match": etag})
        assert (status, body) == (304, b"")
        assert not_modified["etag"] == etag
        assert not_modified["last-modified"] == date(MTIME)
        assert not_modified["cache-control"] == "max-age=5"
        assert "content-length" not in not_modified
        assert get(server, "/f.txt", {"If-None-Match": f'"x", W/{etag}'})[0] == 304
        assert get(server, "/f.txt", {"If-None-Match": "*"})[0] == 304
        assert get(server, "/f.txt", {"If-None-Match": '"other"'})[0] == 200
        assert get(server, "/f.txt", {"If-None-Match": etag}, method="HEAD")[0] == 304


def test_if_modified_since(site: Path) -> None:
    with serve_dir(site) as server:
        assert get(server, "/f.txt", {"If-Modified-Since": date(MTIME)})[0] == 304
        assert get(server, "/f.txt", {"If-Modified-Since": date(MTIME + 10)})[0] == 304
        assert get(server, "/f.txt", {"If-Modified-Since": date(MTIME - 1)})[0] == 200
        assert get(server, "/f.txt", {"If-Modified-Since": "yesterday"})[0] == 200
        # a date in the future is not a valid validator: ignored
        assert get(server, "/f.txt", {"If-Modified-Since": date(time.time() + 86400)})[0] == 200
        # If-None-Match wins over If-Modified-Since
        both = {"If-None-Match": '"other"', "If-Modified-Since": date(MTIME)}
        assert get(server, "/f.txt", both)[0] == 200


def test_if_match_and_if_unmodified_since(site: Path) -> None:
    with serve_dir(site) as server:
        etag = get(server, "/f.txt")[1]["etag"]
        assert get(server, "/f.txt", {"If-Match": etag})[0] == 200
        assert get(server, "/f.txt", {"If-Match": "*"})[0] == 200
        assert get(server, "/f.txt", {"If-Match": '"nope"'})[0] == 412
        assert get(server, "/f.txt", {"If-Match": f"W/{etag}"})[0] == 412  # strong comparison
        assert get(server, "/f.txt", {"If-Unmodified-Since": date(MTIME)})[0] == 200
        assert get(server, "/f.txt", {"If-Unmodified-Since": date(MTIME - 5)})[0] == 412


def test_change_invalidates_the_validators(site: Path) -> None:
    with serve_dir(site) as server:
        etag = get(server, "/f.txt")[1]["etag"]
        write(site / "f.txt", "a different body!", mtime=MTIME + 60)
        status, headers, body = get(server, "/f.txt", {"If-None-Match": etag})
        assert (status, body) == (200, b"a different body!")
        assert headers["etag"] != etag
        assert get(server, "/f.txt", {"If-Modified-Since": date(MTIME)})[0] == 200


def test_curl_time_cond(site: Path) -> None:
    with serve_dir(site) as server:
        url = f"{server.url}/f.txt"
        newer = curl("-o", "/dev/null", "-w", "%{http_code}", "-z", date(MTIME + 3600), url)
        assert newer.stdout == b"304"
        older = curl("-o", "/dev/null", "-w", "%{http_code}", "-z", date(MTIME - 3600), url)
        assert older.stdout == b"200"


def test_units() -> None:
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777
    assert parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == 784111777
    assert parse_http_date("Sun Nov  6 08:49:37 1994") == 784111777
    assert parse_http_date("not a date") is None
    assert etag_matches('"a", W/"b"', '"b"', strong=False)
    assert not etag_matches('"a", W/"b"', '"b"', strong=True)
    assert not etag_matches('"a" junk', '"a"', strong=False)
    assert evaluate("GET", '"e"', 100, if_none_match='"e"') == 304
    assert evaluate("GET", '"e"', 100, if_match='"x"', if_none_match='"e"') == 412
