"""The live dashboard: its files over HTTP, the token exchange, and the page in headless Chromium.

The browser test drives Chromium over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
NUL-separated JSON on file descriptors 3 and 4), which needs no WebSocket client and lets the test
read the page's figures, canvas sizes and console errors, and take screenshots at two sizes.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import os
import select
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest

from bastion.observe.admin import ServerHealth, admin_app
from bastion.observe.aggregate import Aggregator
from bastion.observe.metrics import DURATION_BUCKETS
from tests.serving import RunningServer, serve
from tests.static.test_browser import chromium

BUDGET = 120 * 1024  # the whole page, gzipped
PAGE_FILES = ("index.html", "dashboard.css", "dashboard.js", "uPlot.min.css", "uPlot.iife.min.js")
PIDS = {0: 301, 1: 302}
ROUTES = (("GET", "/items/{id}"), ("POST", "/orders"), ("GET", "/"))


class Synthetic:
    """Two workers' cumulative snapshots, growing by a different amount every second."""

    def __init__(self) -> None:
        self.step = 0
        self.requests: dict[tuple[int, str, int, str], int] = {}
        self.durations: dict[tuple[int, str, str], list[float]] = {}

    def advance(self) -> list[dict[str, Any]]:
        self.step += 1
        k = self.step
        snapshots = []
        for slot, pid in PIDS.items():
            for index, (method, route) in enumerate(ROUTES):
                # Request rates and latencies that move every second, differently per route.
                count = 20 + 15 * (slot + 1) * (1 + math.sin(k / 4 + index)) + (k % 5)
                count = int(count) // (index + 1)
                for status, share in ((200, 0.9), (404, 0.07), (500, 0.03)):
                    key = (slot, method, status, route)
                    self.requests[key] = self.requests.get(key, 0) + max(1, int(count * share))
                buckets = self.durations.setdefault(
                    (slot, method, route), [0.0] * (len(DURATION_BUCKETS) + 2)
                )
                centre = (index * 2 + k) % 8
                for bucket in range(centre, centre + 3):
                    buckets[bucket] += count / 3
                buckets[-1] += count * DURATION_BUCKETS[centre + 1]
            served = sum(v for key, v in self.requests.items() if key[0] == slot)
            snapshots.append(
                {
                    "v": 1,
                    "pid": pid,
                    "slot": slot,
                    "requests": [
                        (m, s, r, n, 100 * n, 2000 * n)
                        for (owner, m, s, r), n in self.requests.items()
                        if owner == slot
                    ],
                    "durations": [
                        (m, r, *sums)
                        for (owner, m, r), sums in self.durations.items()
                        if owner == slot
                    ],
                    "engine": {
                        "requests": served,
                        "connections_opened": 40 + 3 * k + 10 * slot,
                        "connections_closed": 3 * k + (k % 7),
                        "in_flight": (k + slot) % 6,
                    },
                    "pool": {"threads": 8, "busy": (k * (slot + 1)) % 9, "queued": k % 3},
                    "process": {
                        "cpu_seconds": 0.35 * k * (slot + 1),
                        "rss_bytes": (60 + slot * 8 + k % 4) * 2**20,
                        "open_fds": 20,
                    },
                    "loop_lag": 0.0005 * ((k + slot) % 9),
                    "checks": {},
                    "app": [],
                }
            )
        return snapshots


def feed(aggregator: Aggregator, synthetic: Synthetic) -> dict[str, Any]:
    for snapshot in synthetic.advance():
        aggregator.update(snapshot)
    return aggregator.tick()


@pytest.fixture
def aggregator() -> Aggregator:
    """Two serving workers and two minutes of history already behind them."""
    aggregator = Aggregator()
    for slot, pid in PIDS.items():
        aggregator.worker_started(pid, slot, 1)
        aggregator.worker_state(pid, "serving")
    synthetic = Synthetic()
    aggregator.synthetic = synthetic  # type: ignore[attr-defined]
    now = time.time()
    for second in range(120, 0, -1):
        feed(aggregator, synthetic)["time"] = now - second
    return aggregator


@contextmanager
def fed_every_second(server: RunningServer, aggregator: Aggregator) -> Iterator[None]:
    """Ship new snapshots and tick once a second, on the server's loop, as the supervisor does."""
    synthetic: Synthetic = aggregator.synthetic  # type: ignore[attr-defined]
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(1.0):
            server.call(feed, aggregator, synthetic)

    feeder = threading.Thread(target=run, name="snapshot-feeder", daemon=True)
    feeder.start()
    try:
        yield
    finally:
        stop.set()
        feeder.join(5)


def wait_for_streams_to_end(server: RunningServer) -> None:
    """Let an event stream whose client has left notice it before the server is stopped."""
    engine = server.server.state
    assert engine is not None
    deadline = time.monotonic() + 3
    while engine.connections and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not engine.connections


# -- the files ------------------------------------------------------------------------------------


def test_page_and_assets_are_served_with_their_types(aggregator: Aggregator) -> None:
    with serve(admin_app(ServerHealth(aggregator))) as server:
        with httpx.Client(base_url=server.url) as client:
            page = client.get("/", headers={"accept-encoding": "identity"})
            assert page.status_code == 200
            assert page.headers["content-type"] == "text/html; charset=utf-8"
            csp = page.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "script-src 'self'" in csp
            for src in ("assets/uPlot.iife.min.js", "assets/dashboard.js", "assets/dashboard.css"):
                assert f'"{src}"' in page.text
            assert "http://" not in page.text and "https://" not in page.text
            kinds = {
                "dashboard.js": "text/javascript; charset=utf-8",
                "uPlot.iife.min.js": "text/javascript; charset=utf-8",
                "dashboard.css": "text/css; charset=utf-8",
                "uPlot.min.css": "text/css; charset=utf-8",
            }
            for name, kind in kinds.items():
                plain = client.get(f"/assets/{name}", headers={"accept-encoding": "identity"})
                assert plain.status_code == 200, name
                assert plain.headers["content-type"] == kind
                assert "content-encoding" not in plain.headers
                packed = client.get(f"/assets/{name}", headers={"accept-encoding": "gzip"})
                assert packed.headers["content-encoding"] == "gzip"
                assert packed.content == plain.content  # httpx undid the gzip
            for name in ("nope.js", "uPlot.LICENSE", "README.md", "x.py", ".hidden.js"):
                assert client.get(f"/assets/{name}").status_code == 404, name
        # Dot segments and encoded slashes straight onto the socket: a client library would
        # normalise them away before sending.
        for target in (
            "/assets/..",
            "/assets/../admin.py",
            "/assets/../x",
            "/assets/..%2fadmin.py",
            "/assets/%2e%2e%2fadmin.py",
            "/assets/dashboard/../../admin.py",
            "/assets/..\\admin.py",
        ):
            with server.connect() as sock:
                sock.sendall(f"GET {target} HTTP/1.1\r\nHost: admin\r\n\r\n".encode())
                head = sock.recv(65536).split(b"\r\n", 1)[0]
            assert head in (b"HTTP/1.1 404 Not Found", b"HTTP/1.1 400 Bad Request"), target
            assert not head.startswith(b"HTTP/1.1 2"), target


def test_whole_page_is_within_its_gzipped_budget(aggregator: Aggregator) -> None:
    with serve(admin_app(ServerHealth(aggregator))) as server:
        total = 0
        sizes = {}
        for name in PAGE_FILES:
            path = "/" if name == "index.html" else f"/assets/{name}"
            body = httpx.get(f"{server.url}{path}", headers={"accept-encoding": "identity"})
            assert body.status_code == 200, name
            sizes[name] = len(gzip.compress(body.content, 9))
            total += sizes[name]
    print(f"dashboard, gzipped: {total} bytes {sizes}")
    assert total <= BUDGET


def test_token_is_exchanged_for_a_dashboard_cookie(aggregator: Aggregator) -> None:
    with serve(admin_app(ServerHealth(aggregator), token="s3cret", tick=0.1)) as server:
        with httpx.Client(base_url=server.url) as client:
            assert client.get("/?token=wrong").status_code == 401
            assert client.get("/").status_code == 401
            given = client.get("/?token=s3cret")
            assert given.status_code == 303
            assert given.headers["location"] == "./"
            cookie = given.headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
            assert "s3cret" not in cookie  # a digest of the token, not the token
            assert client.cookies.get("bastion_admin")
            for path in ("/", "/assets/dashboard.js", "/api/summary"):
                assert client.get(path).status_code == 200, path
            with client.stream("GET", "/events") as events:
                assert events.status_code == 200
                assert events.headers["content-type"].startswith("text/event-stream")
            # The cookie opens the dashboard only: probes and metrics keep to the header.
            for path in ("/metrics", "/healthz", "/readyz"):
                assert client.get(path).status_code == 401, path
        forged = httpx.get(f"{server.url}/api/summary", headers={"cookie": "bastion_admin=x"})
        assert forged.status_code == 401
        wait_for_streams_to_end(server)


# -- the page in a browser ------------------------------------------------------------------------


class DevTools:
    """A headless Chromium driven over the DevTools protocol on a pair of pipes."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # Chromium reads commands on fd 3 and writes answers on fd 4; bash puts our pipe ends
        # there (pass_fds keeps their own numbers, which are not 3 and 4).
        redirect = (
            f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w} '
            f"{to_browser_r}<&- {from_browser_w}>&-"
        )
        self.process = subprocess.Popen(
            [
                "bash",
                "-c",
                redirect,
                binary,
                "--headless",
                "--remote-debugging-pipe",
                f"--user-data-dir={profile}",
                # The same flags as the listing test: no sandbox (root in CI), no GPU, no
                # shared-memory limits of a container, and none of a desktop browser's chatter.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--hide-scrollbars",
                "about:blank",
            ],
            pass_fds=(to_browser_r, from_browser_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session = ""
        self.target = ""

    def close(self) -> None:
        with suppress(OSError, TimeoutError, RuntimeError):
            self.call("Browser.close", session=False, timeout=5)
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        os.close(self._to_browser)
        os.close(self._from_browser)

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)  # type: ignore[no-any-return]

    def call(
        self, method: str, session: bool = True, timeout: float = 10, **params: Any
    ) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") != self._next_id:
                self.events.append(answer)
                continue
            if "error" in answer:
                raise RuntimeError(f"{method}: {answer['error']}")
            return answer.get("result", {})  # type: ignore[no-any-return]

    def open_page(self) -> None:
        target = self.call("Target.createTarget", session=False, url="about:blank")
        attached = self.call(
            "Target.attachToTarget", session=False, targetId=target["targetId"], flatten=True
        )
        self.session = attached["sessionId"]
        self.target = target["targetId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.1)

    def viewport(self, width: int, height: int, scale: float, mobile: bool) -> None:
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=scale,
            mobile=mobile,
        )

    def screenshot(self, path: Path) -> None:
        """The whole page, not just the viewport."""
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = self.call("Page.captureScreenshot", captureBeyondViewport=True, clip=clip)
        path.write_bytes(base64.b64decode(shot["data"]))

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads (CSP refusals included)."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(json.dumps(params["exceptionDetails"])[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(json.dumps(params.get("args"))[:500])
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                found.append(f"{params['entry'].get('url')}: {params['entry'].get('text')}")
        return found


CHARTS_DRAWN = """(() => {
  const canvases = [...document.querySelectorAll('.uplot canvas')];
  return canvases.length === 5 && canvases.every(c => c.width > 0 && c.height > 0)
    && document.getElementById('conn').dataset.state === 'live'
    && document.getElementById('v-rps').textContent !== '\u2013'
    && document.querySelectorAll('#workers tr').length === 2;
})()"""

FIGURES = """(() => {
  const text = id => document.getElementById(id).textContent;
  return {
    updated: text('updated'), rps: text('v-rps'), p99: text('v-p99'), status: text('v-status'),
    pool: text('v-pool'), workers: text('workers'), busiest: text('busiest'),
    conn: document.getElementById('conn').dataset.state,
    canvases: [...document.querySelectorAll('.uplot canvas')].map(c => [c.width, c.height]),
    charts: [...document.querySelectorAll('.uplot')].map(c => c.getBoundingClientRect().width),
    scrollWidth: document.documentElement.scrollWidth,
    dark: matchMedia('(prefers-color-scheme: dark)').matches,
  };
})()"""


def test_dashboard_in_headless_chromium(aggregator: Aggregator, tmp_path: Path) -> None:
    binary = chromium()
    started = time.monotonic()
    browser = DevTools(binary, tmp_path / "profile")
    try:
        browser.open_page()
        browser.viewport(1280, 900, 1, mobile=False)
        app = admin_app(ServerHealth(aggregator), tick=0.2)
        with serve(app) as server, fed_every_second(server, aggregator):
            browser.call("Page.navigate", url=f"{server.url}/")
            assert browser.wait_for(CHARTS_DRAWN, 8), browser.evaluate(FIGURES)
            first = browser.evaluate(FIGURES)
            laptop = tmp_path / "dashboard-laptop-1.png"
            browser.screenshot(laptop)

            # A few seconds later, the figures have moved with the feed.
            time.sleep(2.5)
            second = browser.wait_for(f"{FIGURES}.updated !== {json.dumps(first['updated'])}", 3)
            assert second, "the page stopped updating"
            second = browser.evaluate(FIGURES)
            later = tmp_path / "dashboard-laptop-2.png"
            browser.screenshot(later)
            moved = ("rps", "workers", "pool", "status")
            assert [second[k] for k in moved] != [first[k] for k in moved]
            assert "GET /items/{id}" in second["busiest"]
            assert "2xx" in second["status"] and "5xx" in second["status"]

            # A phone, in the dark: the charts shrink to the screen, nothing scrolls sideways.
            browser.viewport(390, 844, 2, mobile=True)
            browser.call(
                "Emulation.setEmulatedMedia",
                features=[{"name": "prefers-color-scheme", "value": "dark"}],
            )
            fits = f"(f => f.dark && f.charts.every(w => w <= 390))({FIGURES})"
            assert browser.wait_for(fits, 3), browser.evaluate(FIGURES)
            phone = browser.evaluate(FIGURES)
            assert phone["scrollWidth"] <= 390
            assert len(phone["canvases"]) == 5
            assert all(w > 0 and h > 0 for w, h in phone["canvases"])
            mobile = tmp_path / "dashboard-phone-dark.png"
            browser.screenshot(mobile)
            assert browser.errors() == []
            seen = len(browser.events)

            # The stream breaks (the supervisor restarting, a proxy timing out): the page says
            # it is reconnecting, and is live again once the browser's own retry (2 s) is in.
            state = "document.getElementById('conn').dataset.state"
            engine = server.server.state
            assert engine is not None

            def break_streams() -> None:
                for connection in list(engine.connections):
                    connection.abort()

            server.call(break_streams)
            assert browser.wait_for(f"{state} === 'reconnecting'", 3), browser.evaluate(FIGURES)
            assert browser.wait_for(f"{state} === 'live'", 5), browser.evaluate(FIGURES)
            # The browser logs the broken stream; nothing else.
            del browser.events[:seen]
            assert all("/events: Failed to load resource: net::ERR_" in e for e in browser.errors())

            # Close the page before the server stops, so its stream ends as a client's would
            # (navigating away is not enough: the page may stay alive in the back/forward cache).
            streams = len(engine.connections)
            browser.call("Target.closeTarget", session=False, targetId=browser.target)
            deadline = time.monotonic() + 3
            while len(engine.connections) >= streams > 0:
                assert time.monotonic() < deadline, "the event stream outlived its page"
                time.sleep(0.05)
            time.sleep(0.3)  # the feed notices its client left within a quarter tick
    finally:
        browser.close()
    for shot in (laptop, later, mobile):
        assert shot.stat().st_size > 20_000, shot
    print(f"dashboard screenshots: {tmp_path}")
    assert time.monotonic() - started < 20
