"""Readiness checks: plain and async, passing, failing, raising and hanging; and the probes
answered on the main listener."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from bastion import App, Request, Response
from bastion.engine.server import new_event_loop
from bastion.observe.health import HealthChecks
from bastion.observe.probes import ProbeRoutes
from tests.serving import serve


def run(checks: HealthChecks) -> dict[str, dict[str, object]]:
    loop = new_event_loop()
    try:
        loop.run_until_complete(checks.run_all())
    finally:
        loop.close()
    return checks.results()


def test_verdicts_of_every_kind_of_check() -> None:
    release = threading.Event()
    checks = HealthChecks()

    def passes() -> None:
        return None

    async def async_passes() -> bool:
        await asyncio.sleep(0)
        return True

    def returns_false() -> bool:
        return False

    async def raises() -> None:
        raise ConnectionError("database unreachable")

    def hangs() -> None:
        release.wait(10)

    async def async_hangs() -> None:
        await asyncio.sleep(10)

    checks.add(passes)
    checks.add(async_passes)
    checks.add(returns_false)
    checks.add(raises)
    checks.add(hangs, timeout=0.1)
    checks.add(async_hangs, timeout=0.1)
    started = time.monotonic()
    results = run(checks)
    assert time.monotonic() - started < 5  # a hung check costs its timeout, not more
    assert results["passes"]["ok"] and results["async_passes"]["ok"]
    assert results["returns_false"] == {
        "ok": False,
        "detail": "returned False",
        "seconds": pytest.approx(0, abs=1),
    }
    assert results["raises"]["detail"] == "ConnectionError: database unreachable"
    assert results["hangs"]["detail"] == "timed out after 0.1s"
    assert results["async_hangs"]["detail"] == "timed out after 0.1s"
    # Still stuck: reported again without starting a second copy of it.
    assert run(checks)["hangs"]["detail"] == "timed out after 0.1s (still running)"
    release.set()
    deadline = time.monotonic() + 5
    while run(checks)["hangs"]["ok"] is not True and time.monotonic() < deadline:
        time.sleep(0.01)
    assert checks.results()["hangs"]["ok"]


def test_names_must_be_unique_and_timeouts_positive() -> None:
    checks = HealthChecks()
    checks.add(lambda: None, "db")
    with pytest.raises(ValueError):
        checks.add(lambda: None, "db")
    with pytest.raises(ValueError):
        checks.add(lambda: None, "cache", timeout=0)


def test_app_registers_checks() -> None:
    app = App()

    @app.health_check
    def database() -> None:
        pass

    @app.health_check(name="cache", timeout=1.5)
    async def cache_ok() -> bool:
        return True

    checks = HealthChecks.of(app)
    assert set(run(checks)) == {"database", "cache"}


def test_probe_paths_on_the_main_listener() -> None:
    app = App()
    healthy = threading.Event()
    healthy.set()

    @app.get("/{rest:path}")
    async def everything(request: Request) -> Response:
        return Response(b"app")

    checks = HealthChecks()
    checks.add(lambda: healthy.is_set(), "flag")
    with (
        serve(ProbeRoutes(app, "/_bastion/", checks)) as server,
        httpx.Client(base_url=server.url) as client,
    ):
        assert client.get("/_bastion/healthz").text == "ok\n"
        run(checks)
        assert client.get("/_bastion/readyz").status_code == 200
        healthy.clear()
        run(checks)
        failing = client.get("/_bastion/readyz")
        assert failing.status_code == 503 and "- flag" in failing.text
        assert client.get("/_bastion/other").text == "app"
        assert client.get("/healthz").text == "app"
