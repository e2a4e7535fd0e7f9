"""Loading the application as ``bastion run`` does it, from a folder of the user's files:
what is said when it cannot be loaded (one line of reason, no traceback, status 2), and
uvicorn's ``--factory``, ``--app-dir`` and ``--env-file``."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.cli.running import bastion, bastion_out
from tests.cli.userapps import write_apps


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_apps(tmp_path)


@pytest.mark.parametrize(
    ("target", "flags", "reason"),
    [
        # In a worker: importing, then checking what was imported (more: test_loader.py).
        ("broken:app", [], "broken.py:1: SyntaxError: invalid syntax"),
        ("missing:app", [], "cannot import 'missing' (No module named 'missing'); run from the "
         "folder that holds it or use --app-dir"),
        ("fast:app", ["--interface", "wsgi"], "fast:app is an ASGI application, not a WSGI "
         "application: use --interface asgi, or leave --interface out to have it worked out"),
        # In the supervisor, before any worker.
        ("web.py:app", [], "'web.py:app' is a file name, not a module: bastion run web:app"),
        ("web:app", ["--app-dir", "nowhere"], "--app-dir: nowhere is not a folder"),
        # The application's own startup.
        ("lifespan:app", [], "ASGI lifespan startup failed: the database is unreachable"),
        ("lifespan_raises:app", [], "ASGI lifespan startup failed: "
         "ConnectionError: the database is down"),
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


def test_a_factory_is_called(folder: Path) -> None:
    with bastion("run", "web:create_app", "--factory", "--port", "0", cwd=folder) as proc:
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
    shown = bastion_out(
        "run", "web:app", "--env-file", ".env", "--print-config", cwd=folder,
        env={"BASTION_WORKERS": "3"},
    )  # fmt: skip
    assert "workers = 3  # environment" in shown.stdout


def test_a_bad_env_file_line_is_named(folder: Path) -> None:
    (folder / "bad.env").write_text("GOOD=1\nthis is not a setting\n")
    out = bastion_out("run", "web:app", "--env-file", "bad.env", cwd=folder)
    assert out.returncode == 2
    assert out.stderr == (
        "bastion: error: --env-file: bad.env:2: expected NAME=value, got 'this is not a setting'\n"
    )
    out = bastion_out("run", "web:app", "--env-file", "none.env", cwd=folder)
    assert out.stderr == "bastion: error: --env-file: none.env does not exist\n"
