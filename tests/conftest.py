from __future__ import annotations

import fcntl
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Test helpers live beside the tests; make ``tests.serving`` importable however pytest is run.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "alone: run while no other test runs, in any of the parallel runners (the test "
        "compares how fast things happen, which other tests' load would blur)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("alone") is not None:
            # Its wait for the tests already running counts against its timeout too.
            item.add_marker(pytest.mark.timeout(180))


@pytest.fixture(autouse=True)
def _share_the_machine(request: pytest.FixtureRequest) -> Iterator[None]:
    """A readers-writer lock across the parallel runners (pytest-xdist's processes).

    Every test holds it shared; a test marked ``alone`` holds it exclusively. The turnstile
    makes the exclusive taker wait only for the tests already running: a runner that starts
    its next test meanwhile queues behind it, so a run of short tests cannot starve it.
    """
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run is None:  # one runner: nothing else runs at the same time
        yield
        return
    folder = Path(tempfile.gettempdir()) / f"bastion-tests-{run}"
    folder.mkdir(exist_ok=True)
    alone = request.node.get_closest_marker("alone") is not None
    with open(folder / "turnstile", "a") as turnstile, open(folder / "lock", "a") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        if alone:
            fcntl.flock(lock, fcntl.LOCK_EX)
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        else:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
            fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
