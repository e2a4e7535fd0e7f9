"""The dashboard of a running `bastion balance` lists its upstreams, in headless Chromium."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx

from tests.cli.running import bastion
from tests.observe.test_dashboard import DevTools
from tests.static.test_browser import chromium

_ADMIN = re.compile(r"admin \(health, metrics, dashboard\) on (http://\S+)")

UPSTREAM_ROWS = """(() => {
  const section = document.getElementById('upstreams-section');
  if (!section) return false;
  const rows = [...document.querySelectorAll('#upstreams tr')];
  return !section.hidden && rows.length === 2
    && rows.map(r => [...r.cells].map(c => c.textContent));
})()"""


def test_the_dashboard_lists_the_balancers_upstreams(tmp_path: Path) -> None:
    binary = chromium()
    with (
        bastion("run", "tests.cli.whoami:app", "--bind", "127.0.0.1:0") as one,
        bastion("run", "tests.cli.whoami:app", "--bind", "127.0.0.1:0") as two,
    ):
        upstreams = [f"127.0.0.1:{one.port}", f"127.0.0.1:{two.port}"]
        args = [arg for key in upstreams for arg in ("--upstream", key)]
        with bastion(
            "balance", *args, "--bind", "127.0.0.1:0", "--admin-bind", "127.0.0.1:0"
        ) as lb:
            found = _ADMIN.search(lb.text)
            assert found, lb.text
            with httpx.Client(base_url=f"http://127.0.0.1:{lb.port}") as client:
                for _ in range(20):
                    assert client.get("/").status_code == 200
            browser = DevTools(binary, tmp_path / "profile")
            try:
                browser.open_page()
                browser.viewport(1280, 900, 1, mobile=False)
                browser.call("Page.navigate", url=found.group(1) + "/")
                deadline = time.monotonic() + 10
                rows = browser.wait_for(UPSTREAM_ROWS, 10)
                while time.monotonic() < deadline and rows and rows[0][4] == "…":
                    rows = browser.evaluate(UPSTREAM_ROWS)
                assert rows, browser.evaluate("document.body.innerText")
                assert sorted(row[1] for row in rows) == sorted(upstreams)
                assert all(row[0] == "default" and row[2] == "unchecked" for row in rows)
                browser.screenshot(tmp_path / "dashboard-upstreams.png")
                assert browser.errors() == []
            finally:
                browser.close()
