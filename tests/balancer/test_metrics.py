"""Per-upstream figures on the admin listener's /metrics, from a real `bastion balance`."""

from __future__ import annotations

import re
import time
from collections import defaultdict

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.cli.running import bastion

_ADMIN = re.compile(r"admin \(health, metrics, dashboard\) on (http://\S+)")


def scrape(admin: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    text = httpx.get(admin + "/metrics", timeout=10).text
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_upstream_requests_latency_and_state_are_on_metrics() -> None:
    with (
        bastion("run", "tests.cli.whoami:app", "--bind", "127.0.0.1:0") as one,
        bastion("run", "tests.cli.whoami:app", "--bind", "127.0.0.1:0") as two,
    ):
        upstreams = [f"127.0.0.1:{one.port}", f"127.0.0.1:{two.port}"]
        args = [arg for key in upstreams for arg in ("--upstream", key)]
        with bastion(
            "balance", *args, "--bind", "127.0.0.1:0", "--workers", "2",
            "--admin-bind", "127.0.0.1:0",
        ) as lb:  # fmt: skip
            found = _ADMIN.search(lb.text)
            assert found, lb.text
            admin = found.group(1)
            with httpx.Client(base_url=f"http://127.0.0.1:{lb.port}", timeout=10) as client:
                for _ in range(30):
                    assert client.get("/").status_code == 200
            deadline = time.monotonic() + 10
            while True:
                metrics = scrape(admin)
                requests = metrics.get("bastion_upstream_requests_total", {})
                if sum(requests.values()) >= 30 or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            # Summed over both workers: every attempt counted once, under its upstream.
            assert sum(requests.values()) == 30
            assert {dict(labels)["upstream"] for labels in requests} == set(upstreams)
            assert {dict(labels)["route"] for labels in requests} == {"default"}
            counts = metrics["bastion_upstream_latency_seconds_count"]
            assert sum(counts.values()) == 30
            # Gauges are each worker's own view, labelled with the worker.
            healthy = metrics["bastion_upstream_healthy"]
            assert healthy and all(value == 1.0 for value in healthy.values())
            assert all("worker" in dict(labels) for labels in healthy)
            assert "bastion_upstream_connections" in metrics
