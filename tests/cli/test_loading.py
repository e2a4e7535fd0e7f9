"""Loading the application as ``bastion run`` does it, from a folder of the user's files:
what is said when it cannot be loaded (one line of reason, no traceback, status 2), and
uvicorn's ``--factory``, ``--app-dir`` and ``--env-file``."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.cli.running import bastion, bastion_out

WSGI = """
import os

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [os.environ.get("GREETING", "no greeting").encode()]

def create_app():
    return app

def configured(config):
    return app

count = 3
"""

ASGI = """
async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"asgi"})
"""

LIFESPAN_FAILS = """
async def app(scope, receive, send):
    assert scope["type"] == "lifespan"
    await receive()
    await send({"type": "lifespan.startup.failed", "message": "the database is unreachable"})
"""

RAISES = """
import json

SETTINGS = json.loads("{")
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "web.py").write_text(WSGI)
    (tmp_path / "fast.py").write_text(ASGI)
    (tmp_path / "lifespan.py").write_text(LIFESPAN_FAILS)
    (tmp_path / "raises.py").write_text(RAISES)
    (tmp_path / "broken.py").write_text("def app(:\n    pass\n")
    (tmp_path / "needs.py").write_text("\nimport not_installed_anywhere\n")
    (tmp_path / "quits.py").write_text("import sys\nsys.exit(3)\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "inner.py").write_text(WSGI)
    return tmp_path


@pytest.mark.parametrize(
    ("target", "flags", "reason"),
    [
        ("broken:app", [], "broken.py:1: SyntaxError: invalid syntax"),
        ("missing:app", [], "cannot import 'missing' (No module named 'missing'); run from the "
         "folder that holds it or use --app-dir"),
        ("inner:app", [], "cannot import 'inner' (No module named 'inner'); run from the "
         "folder that holds it or use --app-dir"),
        ("needs:app", [], "needs.py:2: ModuleNotFoundError: No module named "
         "'not_installed_anywhere' (while importing it; --log-level debug shows the traceback)"),
        ("raises:app", [], "raises.py:4: JSONDecodeError: Expecting property name enclosed in "
         "double quotes: line 1 column 2 (char 1) (while importing it; --log-level debug shows "
         "the traceback)"),
        ("quits:app", [], "quits called sys.exit(3) while being imported"),
        ("web.py:app", [], "'web.py:app' is a file name, not a module: bastion run web:app"),
        ("src/inner.py:app", [], "'src/inner.py:app' is a file name, not a module: bastion run "
         "--app-dir src inner:app"),
        ("web", [], "expected 'module:attribute' such as myapp:app, got 'web'"),
        ("web:ap", [], "module 'web' has no attribute 'ap' (did you mean web:app?)"),
        ("web:count", [], "web:count is an int, not an application: expected a bastion.App, a "
         "WSGI or ASGI callable, or an http.server handler class"),
        ("web:create_app", [], "web:create_app takes no arguments, so it is not an application; "
         "if it makes one, add --factory"),
        ("web:count", ["--factory"], "web:count is an int, not a factory to call"),
        ("web:configured", ["--factory"], "bastion: error: TypeError: configured() missing 1 "
         "required positional argument: 'config' (in the factory web:configured(); --log-level "
         "debug shows the traceback)"),
        ("fast:app", ["--interface", "wsgi"], "fast:app is an ASGI application, not a WSGI "
         "application: use --interface asgi, or leave --interface out to have it worked out"),
        ("web:app", ["--interface", "asgi"], "web:app is a WSGI application, not an ASGI "
         "application: use --interface wsgi, or leave --interface out to have it worked out"),
        ("web:app", ["--interface", "http.server"], "web:app is a WSGI application, not an "
         "http.server handler class: use --interface wsgi, or leave --interface out to have it "
         "worked out"),
        ("web:app", ["--app-dir", "nowhere"], "--app-dir: nowhere is not a folder"),
        ("lifespan:app", [], "ASGI lifespan startup failed: the database is unreachable"),
    ],
)  # fmt: skip
def test_an_application_that_cannot_be_loaded_is_one_line_and_status_2(
    folder: Path, target: str, flags: list[str], reason: str
) -> None:
    out = bastion_out("run", target, "--bind", "127.0.0.1:0", *flags, cwd=folder)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.splitlines()
    assert lines[0].endswith(reason), out.stderr
    # At most the supervisor's own line follows: the application failed to start.
    assert len(lines) <= 2, out.stderr


def test_debug_level_shows_the_traceback_of_an_import_error(folder: Path) -> None:
    out = bastion_out("run", "raises:app", "--port", "0", "--log-level", "debug", cwd=folder)
    assert out.returncode == 2
    assert "Traceback" in out.stderr and 'raises.py", line 4' in out.stderr


def get(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text


@pytest.mark.parametrize("target", [("web:create_app", "--factory"), ("web:create_app()",)])
def test_a_factory_is_called(folder: Path, target: tuple[str, ...]) -> None:
    with bastion("run", *target, "--port", "0", cwd=folder) as proc:
        assert get(proc.port) == "no greeting"


def test_app_dir_imports_from_another_folder(folder: Path) -> None:
    with bastion("run", "inner:app", "--app-dir", "src", "--port", "0", cwd=folder) as proc:
        assert get(proc.port) == "no greeting"


def test_env_file_sets_the_applications_environment_and_settings(folder: Path) -> None:
    (folder / ".env").write_text(
        "# for the application\n"
        "NAME=world\n"
        'export GREETING="hello, ${NAME}"\n'
        "BASTION_WORKERS=2  # settings too\n"
    )
    with bastion("run", "web:app", "--env-file", ".env", "--port", "0", cwd=folder) as proc:
        assert get(proc.port) == "hello, world"
    shown = bastion_out("run", "web:app", "--env-file", ".env", "--print-config", cwd=folder)
    assert "workers = 2  # environment" in shown.stdout
    # The environment the server is started in wins over the file.
    with bastion(
        "run", "web:app", "--env-file", ".env", "--port", "0", cwd=folder,
        env={"GREETING": "set outside"},
    ) as proc:  # fmt: skip
        assert get(proc.port) == "set outside"


def test_a_bad_env_file_line_is_named(folder: Path) -> None:
    (folder / "bad.env").write_text("GOOD=1\nthis is not a setting\n")
    out = bastion_out("run", "web:app", "--env-file", "bad.env", cwd=folder)
    assert out.returncode == 2
    assert out.stderr == (
        "bastion: error: --env-file: bad.env:2: expected NAME=value, got 'this is not a setting'\n"
    )
    out = bastion_out("run", "web:app", "--env-file", "none.env", cwd=folder)
    assert out.stderr == "bastion: error: --env-file: none.env does not exist\n"
