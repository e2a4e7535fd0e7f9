"""``bastion balance`` reconfigured while it serves: a reload in place and the admin API.

Real processes throughout: upstream Bastion apps, the balancer with two workers, clients on
threads keeping it busy while its configuration changes under them.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli.running import Process, bastion, in_session
from tests.serving import LoadThreads

TOKEN = "s3cret-admin-token"
_ADMIN = re.compile(r"admin \(health, metrics, dashboard\) on (http://\S+)")


class Upstream:
    def __init__(self, process: Process) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{process.port}"
        self.key = f"127.0.0.1:{process.port}"
        self.pid = int(httpx.get(self.url + "/").json()["pid"])


@pytest.fixture(scope="module")
def upstreams() -> Iterator[list[Upstream]]:
    with ExitStack() as stack:
        yield [
            Upstream(
                stack.enter_context(bastion("run", "tests.cli.whoami:app", "--bind", "127.0.0.1:0"))
            )
            for _ in range(3)
        ]


class Load(LoadThreads):
    """Clients on kept-alive connections, noting when each request started and who answered."""

    def __init__(self, port: int, path: str = "/", threads: int = 4) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.path = path
        self.lock = threading.Lock()
        self.answers: list[tuple[float, float, int]] = []  # (started, ended, upstream pid)
        self.failures: list[str] = []
        super().__init__(threads)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    response = client.get(self.path)
                except httpx.HTTPError as exc:
                    with self.lock:
                        self.failures.append(repr(exc))
                    continue
                with self.lock:
                    if response.status_code != 200:
                        self.failures.append(f"{response.status_code} {response.text}")
                    else:
                        pid = int(response.json()["pid"])
                        self.answers.append((started, time.monotonic(), pid))

    def pids(self, since: float = 0.0) -> set[int]:
        with self.lock:
            return {pid for started, _, pid in self.answers if started >= since}

    def wait_for(self, pid: int, since: float, timeout: float = 5.0) -> tuple[float, float]:
        """When the first request started after ``since`` that ``pid`` answered started,
        and when the first such answer came."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [(s, e) for s, e, p in self.answers if p == pid and s >= since]
            if found:
                return min(s for s, _ in found), min(e for _, e in found)
            time.sleep(0.02)
        raise AssertionError(f"no request reached {pid} within {timeout}s")


def lb_file(path: Path, *upstreams: Upstream, workers: int = 2, extra: str = "") -> None:
    urls = ", ".join(f'"{u.url}"' for u in upstreams)
    path.write_text(f'workers = {workers}\n[[route]]\nname = "api"\nupstreams = [{urls}]\n{extra}')


@contextmanager
def loaded(where: Path, first: Upstream, threads: int) -> Iterator[tuple[Process, Load, Path]]:
    """A balancer over ``first`` alone (its file in ``where``), busy with ``threads``
    clients already answered; it is stopped (and must exit 0) once the load is."""
    config = where / "lb.toml"
    lb_file(config, first)
    with bastion("balance", "--config", str(config), "--bind", "127.0.0.1:0") as lb:
        with Load(lb.port, threads=threads) as load:
            load.wait_for(first.pid, 0.0)
            yield lb, load, config
        lb.popen.send_signal(signal.SIGTERM)
        assert lb.wait(10) == 0


def test_sighup_that_removes_the_busy_upstream_fails_no_request(
    tmp_path: Path, upstreams: list[Upstream]
) -> None:
    one, two, _ = upstreams
    with loaded(tmp_path, one, threads=4) as (lb, load, config):
        lb_file(config, two)
        sent = time.monotonic()
        lb.popen.send_signal(signal.SIGHUP)
        switched, answered = load.wait_for(two.pid, sent)
        time.sleep(1.2)
        last = max(s for s, _, pid in load.answers if pid == one.pid)
    assert load.failures == [], lb.text
    # Nothing that started after the switch went to the removed server.
    assert last < switched + 0.05, (last - sent, switched - sent)
    assert load.pids(sent + 1.0) == {two.pid}
    print(f"SIGHUP to an answer from the new upstream: {1000 * (answered - sent):.0f} ms")
    assert "SIGHUP received: applied to the running workers" in lb.text
    assert "starting generation" not in lb.text


def test_an_edited_file_takes_effect_and_a_broken_one_is_refused_once(
    tmp_path: Path, upstreams: list[Upstream]
) -> None:
    one, two, three = upstreams
    with loaded(tmp_path, one, threads=2) as (lb, load, config):
        lb_file(config, one, two)
        edited = time.monotonic()
        took = load.wait_for(two.pid, edited, timeout=3.0)[1] - edited
        assert took < 2.0
        # A broken file: the running configuration stays, one line names the key.
        lb_file(config, three, extra="[route.timeouts]\nconect = 1\n")
        time.sleep(2.5)
        assert load.pids(time.monotonic() - 1.0) == {one.pid, two.pid}
        # Mended: it loads.
        lb_file(config, three)
        load.wait_for(three.pid, time.monotonic(), timeout=3.0)
        time.sleep(0.3)
        assert load.pids(time.monotonic() - 0.2) == {three.pid}
        # An engine setting changed: new workers, and still nothing fails.
        lb_file(config, three, workers=3)
        deadline = time.monotonic() + 8
        while "reload complete: generation 1 is serving" not in "".join(lb.output):
            assert time.monotonic() < deadline, "".join(lb.output)
            assert lb.popen.stderr is not None
            lb.output.append(lb.popen.stderr.readline())
    assert load.failures == []
    print(f"file edit to an answer from the new upstream: {1000 * took:.0f} ms")
    refused = [line for line in lb.text.splitlines() if "reload failed" in line]
    assert len(refused) == 1, refused
    assert "route \"api\": unknown key 'timeouts.conect'" in refused[0]
    assert "starting generation 1 (3 workers)" in lb.text


# The admin API --------------------------------------------------------------------------------


class Admin:
    def __init__(self, lb: Process) -> None:
        found = _ADMIN.search(lb.text)
        assert found, lb.text
        self.client = httpx.Client(
            base_url=found.group(1), headers={"authorization": f"Bearer {TOKEN}"}, timeout=10
        )

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Any:
        content = raw if raw is not None else None
        return self.client.request(
            method, "/api/balancer" + path, json=body if raw is None else None, content=content
        )

    def upstreams(self) -> dict[str, dict[str, Any]]:
        (route,) = self.call("GET", "").json()["routes"]
        return {entry["key"]: entry for entry in route["upstreams"]}

    def settings(self) -> list[tuple[str, float, bool]]:
        return [(k, e["weight"], e["drained"]) for k, e in self.upstreams().items()]


@pytest.fixture
def admin_lb(tmp_path: Path, upstreams: list[Upstream]) -> Iterator[tuple[Process, Admin]]:
    one, two, _ = upstreams
    config = tmp_path / "lb.toml"
    lb_file(config, one, two, extra='[route.health]\npath = "/"\ninterval = 0.5\n')
    with bastion(
        "balance", "--config", str(config), "--bind", "127.0.0.1:0",
        "--admin-bind", "127.0.0.1:0", "--admin-token", TOKEN,
    ) as lb:  # fmt: skip
        admin = Admin(lb)
        yield lb, admin
        admin.client.close()


def test_drain_under_load_lets_in_flight_requests_finish(
    admin_lb: tuple[Process, Admin], upstreams: list[Upstream]
) -> None:
    lb, admin = admin_lb
    one, two, _ = upstreams
    with Load(lb.port, "/sleep/150", threads=6) as load:
        load.wait_for(one.pid, 0.0)
        load.wait_for(two.pid, 0.0)
        before = time.monotonic()
        response = admin.call("POST", f"/routes/api/upstreams/{one.key}/drain")
        drained = time.monotonic()
        assert response.status_code == 200, response.text
        assert response.json()["upstream"]["drained"] is True
        time.sleep(1.0)
        # Requests that one had when it was drained were answered there (and none failed).
        assert [e for s, e, pid in load.answers if pid == one.pid and s < before]
        assert load.pids(drained + 0.05) == {two.pid}
        response = admin.call("POST", f"/routes/api/upstreams/{one.key}/enable")
        assert response.status_code == 200 and response.json()["upstream"]["weight"] == 1.0
        load.wait_for(one.pid, time.monotonic())
    assert load.failures == []
    # Every worker's figures reach the listing, and the verdicts of the active checks.
    entry = admin.upstreams()[one.key]
    assert entry["health"] == "up"
    assert set(entry["workers"]) == {"0", "1"}
    assert {"outstanding", "latency_ewma_s", "ejected", "connections"} <= set(entry["workers"]["0"])


def test_add_weight_remove_and_the_metrics_follow(
    admin_lb: tuple[Process, Admin], upstreams: list[Upstream]
) -> None:
    lb, admin = admin_lb
    one, two, three = upstreams
    added = admin.call("POST", "/routes/api/upstreams", {"url": three.url, "weight": 3})
    assert added.status_code == 201, added.text
    assert added.json()["upstream"]["weight"] == 3.0
    assert admin.call("PUT", f"/routes/api/upstreams/{one.key}", {"weight": 0}).status_code == 200
    assert admin.call("DELETE", f"/routes/api/upstreams/{two.key}").status_code == 200
    assert admin.settings() == [(one.key, 0.0, False), (three.key, 3.0, False)]
    with httpx.Client(base_url=f"http://127.0.0.1:{lb.port}") as client:
        assert {client.get("/").json()["pid"] for _ in range(10)} == {three.pid}
    # Within a second or so (each worker's telemetry, which arrive independently), /metrics
    # shows it for both workers.
    deadline = time.monotonic() + 5
    weights = [
        f'bastion_upstream_weight{{route="api",upstream="{three.key}",worker="{slot}"}} 3.0'
        for slot in (0, 1)
    ]
    while True:
        metrics = admin.client.get("/metrics").text
        latest = metrics.split("bastion_upstream_weight")[-1]
        if all(w in metrics for w in weights) and f'upstream="{two.key}"' not in latest:
            break
        assert time.monotonic() < deadline, metrics
        time.sleep(0.1)


def test_the_admin_api_needs_the_token(admin_lb: tuple[Process, Admin]) -> None:
    _, admin = admin_lb
    base = str(admin.client.base_url)
    assert httpx.get(base + "/api/balancer").status_code == 401
    refused = httpx.post(
        base + "/api/balancer/routes/api/upstreams",
        json={"url": "http://127.0.0.1:1"},
        headers={"authorization": "Bearer wrong"},
    )
    assert refused.status_code == 401
    assert len(admin.settings()) == 2


BAD_CALLS = [
    ("POST", "/routes/api/upstreams", None, b"{not json", 400, "the body is not JSON"),
    ("POST", "/routes/api/upstreams", None, b"[1]", 400, "must be a JSON object"),
    ("POST", "/routes/api/upstreams", {"weight": 1}, None, 400, "url is required"),
    ("POST", "/routes/api/upstreams", {"url": "ftp://x:1"}, None, 400, "scheme must be http"),
    ("POST", "/routes/api/upstreams", {"url": "http://a:1/path"}, None, 400, "no path"),
    ("POST", "/routes/api/upstreams", {"url": 7}, None, 400, "url must be a string"),
    ("POST", "/routes/api/upstreams", {"url": "http://a:1", "wieght": 1}, None, 400,
     "unknown key 'wieght'"),
    ("POST", "/routes/api/upstreams", {"url": "http://a:1", "weight": -1}, None, 400,
     "weight must be between 0 and 10000"),
    ("POST", "/routes/api/upstreams", None, b'{"url": "http://a:1", "weight": NaN}', 400,
     "NaN is not a number JSON has"),
    ("POST", "/routes/nope/upstreams", {"url": "http://a:1"}, None, 404, "no route named 'nope'"),
    ("PUT", "/routes/api/upstreams/{one}", {"weight": 1e9}, None, 400, "between 0 and 10000"),
    ("PUT", "/routes/api/upstreams/{one}", {"weight": True}, None, 400, "must be a number"),
    ("PUT", "/routes/api/upstreams/{one}", {}, None, 400, "weight is required"),
    ("PUT", "/routes/api/upstreams/10.9.9.9:1", {"weight": 1}, None, 404, "has no upstream"),
    ("DELETE", "/routes/api/upstreams/10.9.9.9:1", None, None, 404, "has no upstream"),
    ("POST", "/routes/api/upstreams/{one}/enable", {"x": 1}, None, 400, "takes nothing"),
]  # fmt: skip


def test_bad_calls_get_a_reason_and_change_nothing(
    admin_lb: tuple[Process, Admin], upstreams: list[Upstream]
) -> None:
    _, admin = admin_lb
    one, two, _ = upstreams
    before = admin.settings()
    for method, path, body, raw, status, reason in BAD_CALLS:
        response = admin.call(method, path.format(one=one.key), body, raw)
        assert response.status_code == status, (method, path, response.text)
        assert reason in response.json()["error"], (reason, response.text)
    # A route must keep a server with weight: the last one cannot go or be drained.
    assert admin.call("PUT", f"/routes/api/upstreams/{one.key}", {"weight": 0}).status_code == 200
    last = admin.call("POST", f"/routes/api/upstreams/{two.key}/drain")
    assert last.status_code == 400 and "every weight is 0" in last.json()["error"]
    assert admin.call("PUT", f"/routes/api/upstreams/{one.key}", {"weight": 1}).status_code == 200
    taken = admin.call("POST", "/routes/api/upstreams", {"url": two.url})
    assert taken.status_code == 400 and "already has upstream" in taken.json()["error"]
    assert admin.settings() == before


def test_sighup_to_the_process_group_leaves_the_workers_serving(
    tmp_path: Path, upstreams: list[Upstream]
) -> None:
    config = tmp_path / "lb.toml"
    lb_file(config, upstreams[0])
    local = "127.0.0.1:0"
    with in_session("balance", "--config", str(config), "--bind", local) as lb:
        port = int(lb.wait_for(r"serving on http://127\.0\.0\.1:(\d+)").group(1))
        workers = set(lb.wait_workers(2))
        with Load(port) as load:
            load.wait_for(upstreams[0].pid, 0.0)
            mark = lb.mark()
            os.killpg(lb.pid, signal.SIGHUP)  # what a terminal hanging up does
            lb.wait_for("SIGHUP received", after=mark)
            since = time.monotonic()
            load.wait_for(upstreams[0].pid, since)
        assert load.failures == []
        assert "killed by SIGHUP" not in lb.text
        # Only the routes could have changed: the same workers serve on.
        assert set(lb.workers()) == workers
        lb.signal(signal.SIGTERM)
        assert lb.wait(10) == 0
