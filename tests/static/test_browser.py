"""The listing page in a real browser (headless Chromium): its DOM, and a phone-sized screenshot."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.static.support import serve_dir, write

WEIRD = '<img src=x onerror=alert(1)> & "quotes".txt'


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("Chromium is not installed (Debian package: chromium)")


def run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


class Rows(HTMLParser):
    """Collects (href, link text, size cell data-bytes, size text) per table row."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, str]] = []
        self.scripts = 0
        self.images = 0
        self._cell = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script":
            self.scripts += 1
        elif tag == "img":
            self.images += 1
        elif tag == "tr" and "class" in found and found["class"] != "":
            self.rows.append({"class": found["class"] or ""})
        elif tag == "a" and self.rows:
            self.rows[-1]["href"] = found.get("href") or ""
            self._cell = "name"
        elif tag == "td" and self.rows and found.get("class") == "size":
            self.rows[-1]["bytes"] = found.get("data-bytes") or ""
            self._cell = "size"

    def handle_endtag(self, tag: str) -> None:
        if tag in ("a", "td"):
            self._cell = ""

    def handle_data(self, data: str) -> None:
        if self._cell and self.rows:
            self.rows[-1][self._cell] = self.rows[-1].get(self._cell, "") + data


def test_listing_in_headless_chromium(tmp_path: Path) -> None:
    binary = chromium()
    site = tmp_path / "site"
    write(site / "README.md", "# readme\n" * 100)
    write(site / "photo.jpg", b"\xff" * 150_000)
    write(site / WEIRD, "x")
    write(
        site / "a very long file name that has to wrap on a narrow phone screen.tar.gz",
        b"z" * 5_000_000,
    )
    write(site / "docs" / "guide.txt", "guide")
    write(site / "Ünïcødé ✓.txt", "u")
    with serve_dir(site) as server:
        url = f"{server.url}/"
        dom = run_chromium(binary, tmp_path / "profile", "--dump-dom", url)
        assert dom.returncode == 0, dom.stderr
        screenshot = tmp_path / "listing-phone.png"
        shot = run_chromium(
            binary,
            tmp_path / "profile",
            f"--screenshot={screenshot}",
            "--window-size=390,844",
            "--force-device-scale-factor=2",
            url,
        )
        assert shot.returncode == 0, shot.stderr
    parser = Rows()
    parser.feed(dom.stdout)
    # the escaped name stayed text: no element was created from it
    assert parser.scripts == 0 and parser.images == 0
    rows = {row["name"]: row for row in parser.rows if "name" in row}
    assert list(rows) == [
        "docs/",
        WEIRD,
        "a very long file name that has to wrap on a narrow phone screen.tar.gz",
        "photo.jpg",
        "README.md",
        "Ünïcødé ✓.txt",
    ]
    assert rows["docs/"]["href"] == "docs/"
    assert (
        rows[WEIRD]["href"]
        == "%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E%20%26%20%22quotes%22.txt"
    )
    assert rows["Ünïcødé ✓.txt"]["href"] == "%C3%9Cn%C3%AFc%C3%B8d%C3%A9%20%E2%9C%93.txt"
    assert (rows["photo.jpg"]["bytes"], rows["photo.jpg"]["size"]) == ("150000", "146 KiB")
    assert rows["README.md"]["size"] == "900 B"
    big = rows["a very long file name that has to wrap on a narrow phone screen.tar.gz"]
    assert big["size"] == "4.8 MiB"
    assert "<title>Index of /</title>" in dom.stdout
    assert screenshot.stat().st_size > 10_000
    # A copy beside the test run's temporary files, for a person to look at.
    shutil.copy(screenshot, tmp_path.parent / "static-listing-phone.png")
