"""Range requests: single, suffix, open-ended, multiple (multipart/byteranges), If-Range, 416."""

from __future__ import annotations

import email.parser
import email.policy
import os
from pathlib import Path

import pytest

from bastion.static import ranges
from tests.static.support import curl, get, serve_dir, write

SMALL = bytes(range(256)) * 4  # 1 KiB, every byte value
LARGE_SIZE = 2 * 1024 * 1024 + 17


@pytest.fixture
def site(tmp_path: Path) -> Path:
    write(tmp_path / "small.bin", SMALL)
    write(tmp_path / "large.bin", os.urandom(LARGE_SIZE))
    write(tmp_path / "text.txt", "0123456789")
    write(tmp_path / "empty", b"")
    return tmp_path


def parts_of(content_type: str, body: bytes) -> list[tuple[str, str, bytes]]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"content-type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    assert message.is_multipart()
    return [
        (part.get_content_type(), part["content-range"], part.get_payload(decode=True))
        for part in message.iter_parts()
    ]


@pytest.mark.parametrize(
    ("spec", "first", "last"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, 1023),
        ("bytes=-100", 924, 1023),
        ("bytes=1000-5000", 1000, 1023),
        ("bytes=-5000", 0, 1023),
        ("bytes=1023-1023", 1023, 1023),
        ("BYTES = 5-6", 5, 6),
        ("bytes=0-99999999999999999999999", 0, 1023),
    ],
)
def test_single_ranges(site: Path, spec: str, first: int, last: int) -> None:
    with serve_dir(site) as server:
        status, headers, body = get(server, "/small.bin", {"Range": spec})
        assert status == 206, spec
        assert headers["content-range"] == f"bytes {first}-{last}/1024"
        assert headers["content-length"] == str(last - first + 1)
        assert headers["content-type"] == "application/octet-stream"
        assert body == SMALL[first : last + 1]


def test_large_single_range_goes_by_sendfile(site: Path) -> None:
    data = (site / "large.bin").read_bytes()
    with serve_dir(site) as server:
        status, headers, body = get(server, "/large.bin", {"Range": "bytes=1000-1999999"})
        assert status == 206
        assert headers["content-range"] == f"bytes 1000-1999999/{LARGE_SIZE}"
        assert body == data[1000:2000000]


@pytest.mark.parametrize(
    "spec",
    [
        "bytes=1024-",
        "bytes=5000-6000",
        "bytes=-0",
        "bytes=2000-3000, 4000-",
        "bytes=99999999999999999999-",
    ],
)
def test_unsatisfiable_is_416(site: Path, spec: str) -> None:
    with serve_dir(site) as server:
        status, headers, body = get(server, "/small.bin", {"Range": spec})
        assert status == 416, spec
        assert headers["content-range"] == "bytes */1024"
        assert SMALL[:16] not in body


def test_any_range_of_an_empty_file_is_416(site: Path) -> None:
    with serve_dir(site) as server:
        status, headers, _ = get(server, "/empty", {"Range": "bytes=0-"})
        assert (status, headers["content-range"]) == (416, "bytes */0")


@pytest.mark.parametrize(
    "spec",
    [
        "bytes=5-2",
        "bytes=abc",
        "bytes=1-2-3",
        "bytes=+1-2",
        "bytes=0x10-20",
        "bytes=1_0-20",
        "bytes=\u00b2-3",
        "bytes=",
        "items=0-5",
        "bytes 0-5",
        "bytes=" + ",".join(f"{i * 10}-{i * 10 + 1}" for i in range(65)),
    ],
)
def test_malformed_or_excessive_range_is_ignored(site: Path, spec: str) -> None:
    with serve_dir(site) as server:
        status, headers, body = get(server, "/small.bin", {"Range": spec})
        assert status == 200, spec
        assert body == SMALL
        assert "content-range" not in headers


def test_multiple_ranges_are_multipart(site: Path) -> None:
    with serve_dir(site) as server:
        status, headers, body = get(server, "/text.txt", {"Range": "bytes=0-1,4-5,-2"})
        assert status == 206
        kind = headers["content-type"]
        assert kind.startswith("multipart/byteranges; boundary=")
        assert headers["content-length"] == str(len(body))
        assert "content-range" not in headers
        assert parts_of(kind, body) == [
            ("text/plain", "bytes 0-1/10", b"01"),
            ("text/plain", "bytes 4-5/10", b"45"),
            ("text/plain", "bytes 8-9/10", b"89"),
        ]
        assert b"\r\ncontent-type: text/plain; charset=utf-8\r\n" in body


def test_multipart_of_a_large_file_mixes_reads_and_sendfile(site: Path) -> None:
    data = (site / "large.bin").read_bytes()
    with serve_dir(site) as server:
        spec = "bytes=0-9,100000-1100000,-100"
        status, headers, body = get(server, "/large.bin", {"Range": spec})
        assert status == 206
        parts = parts_of(headers["content-type"], body)
        assert [p[2] for p in parts] == [data[0:10], data[100000:1100001], data[-100:]]
        assert parts[1][1] == f"bytes 100000-1100000/{LARGE_SIZE}"


def test_overlapping_ranges_are_merged(site: Path) -> None:
    with serve_dir(site) as server:
        status, headers, body = get(server, "/small.bin", {"Range": "bytes=0-10,5-20,21-30"})
        assert status == 206
        assert headers["content-range"] == "bytes 0-30/1024"
        assert body == SMALL[:31]
        many = "bytes=" + ",".join(["0-1023"] * 60)  # the "Apache Killer": sent once
        status, headers, body = get(server, "/small.bin", {"Range": many})
        assert (status, headers["content-range"], body) == (206, "bytes 0-1023/1024", SMALL)


def test_unsatisfiable_parts_are_dropped(site: Path) -> None:
    with serve_dir(site) as server:
        status, headers, body = get(server, "/text.txt", {"Range": "bytes=2-3,50-60"})
        assert (status, headers["content-range"], body) == (206, "bytes 2-3/10", b"23")


def test_if_range(site: Path) -> None:
    with serve_dir(site) as server:
        _, headers, _ = get(server, "/text.txt")
        etag, last_modified = headers["etag"], headers["last-modified"]
        assert get(server, "/text.txt", {"Range": "bytes=0-1", "If-Range": etag})[0] == 206
        assert get(server, "/text.txt", {"Range": "bytes=0-1", "If-Range": last_modified})[0] == 206
        for stale in ('"old"', f"W/{etag}", "Mon, 01 Jan 2001 00:00:00 GMT", "garbage"):
            status, _, body = get(server, "/text.txt", {"Range": "bytes=0-1", "If-Range": stale})
            assert (status, body) == (200, b"0123456789"), stale


def test_head_ignores_range(site: Path) -> None:
    with serve_dir(site) as server:
        status, headers, _ = get(server, "/text.txt", {"Range": "bytes=0-1"}, method="HEAD")
        assert (status, headers["content-length"]) == (200, "10")


def test_range_with_curl(site: Path, tmp_path: Path) -> None:
    data = (site / "large.bin").read_bytes()
    with serve_dir(site) as server:
        result = curl("-r", "10-19", f"{server.url}/large.bin")
        assert result.stdout == data[10:20]
        # resume a partial download
        partial = tmp_path / "partial.bin"
        partial.write_bytes(data[:12345])
        result = curl("-C", "-", "-o", str(partial), f"{server.url}/large.bin")
        assert result.returncode == 0, result.stderr
        assert partial.read_bytes() == data
        result = curl("-r", "0-1,5-6", "-i", f"{server.url}/text.txt")
        assert b"multipart/byteranges" in result.stdout
        assert b"content-range: bytes 5-6/10" in result.stdout


def test_parse_units() -> None:
    assert ranges.parse("bytes=0-4", 10) == [(0, 4)]
    assert ranges.parse("bytes=5-", 10) == [(5, 9)]
    assert ranges.parse("bytes=-3", 10) == [(7, 9)]
    assert ranges.parse("bytes=0-1, ,3-4", 10) == [(0, 1), (3, 4)]
    assert ranges.parse("bytes=3-4,0-1", 10) == [(0, 1), (3, 4)]
    assert ranges.parse("bytes=0-1,2-3", 10) == [(0, 3)]
    assert ranges.parse("bytes=10-", 10) == []
    assert ranges.parse("bytes=-0", 10) == []
    assert ranges.parse("bytes=4-3", 10) is None
    assert ranges.parse("bytes=-", 10) is None
    assert ranges.parse("bytes=1-2,", 10) == [(1, 2)]
    assert ranges.parse("bytes=,", 10) is None
    plan = ranges.Multipart([(0, 1), (5, 6)], 10, "text/plain", "XYZ")
    assert (
        plan.parts[0][0]
        == b"--XYZ\r\ncontent-type: text/plain\r\ncontent-range: bytes 0-1/10\r\n\r\n"
    )
    assert plan.parts[1][0].startswith(b"\r\n--XYZ\r\n")
    assert plan.closing == b"\r\n--XYZ--\r\n"
    assert plan.length == sum(len(h) + n for h, _, n in plan.parts) + len(plan.closing)
