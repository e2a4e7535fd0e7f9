"""``--reload``: a development server that restarts when the application's source changes."""

from __future__ import annotations

import time
from pathlib import Path

from tests.ops.running import ROOT, Supervisor, supervisor

VERSION = """
from bastion import App, Response

app = App()

@app.get("/")
async def index(request):
    return Response(b"%s")
"""


def wait_body(proc: Supervisor, body: bytes, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    seen = b""
    while time.monotonic() < deadline:
        _, seen = proc.get("/")
        if seen == body:
            return
        time.sleep(0.1)
    raise AssertionError(f"still {seen!r}, not {body!r}:\n{proc.text}")


def test_reload_restarts_on_a_source_change_and_survives_a_broken_save(tmp_path: Path) -> None:
    package = tmp_path / "devapp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    module = package / "main.py"
    module.write_text(VERSION % "first")
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}"}
    with supervisor("devapp.main:app", "--bind", "127.0.0.1:0", "--reload", env=env) as proc:
        assert proc.get("/") == (200, b"first")
        time.sleep(0.6)  # let a poll see the first version
        module.write_text(VERSION % "second version")
        proc.wait_for(r"devapp/main\.py changed")
        wait_body(proc, b"second version")
        mark = proc.mark()
        module.write_text("this is not python\n")
        proc.wait_for("reload failed", after=mark)
        assert proc.get("/") == (200, b"second version")  # the old worker keeps serving
        (package / "extra.py").write_text("VALUE = 3\n")  # a new file counts as a change
        module.write_text("from devapp.extra import VALUE\n" + VERSION % "third 3")
        wait_body(proc, b"third 3")
