"""What ``bastion run`` says when it starts, and when it cannot: one line naming where it
serves (every interface said as such), on the ``bastion.server`` logger, and an address it
cannot have named with the reason."""

from __future__ import annotations

import os
import pty
import select
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.cli.running import ROOT, bastion, bastion_out

APP = "tests.app.hello:app"


def stopped(*args: str) -> str:
    """Everything ``bastion run APP ARGS`` writes on stderr from its start to a SIGTERM."""
    with bastion("run", APP, *args) as proc:
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        return proc.text


def test_one_startup_line_on_the_server_logger_naming_every_address() -> None:
    text = stopped("--bind", "127.0.0.1:0", "--bind", "0.0.0.0:0")
    (line,) = [line for line in text.splitlines() if "serving on http" in line]
    assert " INFO bastion.server: serving on http://127.0.0.1:" in line
    assert "http://0.0.0.0:" in line and "(every IPv4 address of this machine)" in line
    assert line.endswith(" (press Ctrl-C to stop)")
    # The server's own lines are no errors: none of them on a logger called error.
    assert "bastion.error" not in text


def test_the_startup_line_is_printed_when_the_log_would_not_show_it() -> None:
    text = stopped("--bind", "127.0.0.1:0", "--log-level", "warning")
    (line,) = [line for line in text.splitlines() if "serving on" in line]
    assert line.startswith("Bastion serving on http://127.0.0.1:")


@pytest.mark.parametrize("reuse_port", ["--reuse-port", "--no-reuse-port"])
def test_an_address_in_use_is_named(reuse_port: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = bastion_out("run", APP, "--port", str(port), reuse_port)
    assert out.returncode == 1
    assert out.stderr == (
        f"bastion: error: cannot listen on 127.0.0.1:{port}: address already in use (is another "
        "server running there? stop it, or choose another port)\n"
    )


def test_bastion_serve_names_the_address_in_use_too() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = bastion_out("serve", "--port", str(port))
    assert out.returncode == 1
    assert out.stderr == (
        f"bastion serve: error: cannot listen on 127.0.0.1:{port}: address already in use\n"
    )


def test_the_access_log_is_on_at_a_terminal() -> None:
    terminal, stdout = pty.openpty()
    try:
        with bastion("run", APP, "--bind", "127.0.0.1:0", stdout=stdout) as proc:
            assert httpx.get(f"http://127.0.0.1:{proc.port}/").status_code == 200
            seen = b""
            while b'"GET / HTTP/1.1" 200 13' not in seen:
                ready, _, _ = select.select([terminal], [], [], 10)
                assert ready, seen  # the batch is written within a second, not ten
                seen += os.read(terminal, 4096)
    finally:
        os.close(terminal)
        os.close(stdout)


@pytest.mark.parametrize(("flags", "lines"), [([], 0), (["--access-log"], 1)])
def test_the_access_log_is_off_in_a_pipe_unless_asked_for(flags: list[str], lines: int) -> None:
    with bastion("run", APP, "--bind", "127.0.0.1:0", *flags, stdout=subprocess.PIPE) as proc:
        assert httpx.get(f"http://127.0.0.1:{proc.port}/").status_code == 200
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert proc.popen.stdout is not None
        assert proc.popen.stdout.read().count('"GET / HTTP/1.1" 200') == lines
        proc.popen.stdout.close()


def test_an_access_log_file_turns_the_access_log_on(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    with bastion("run", APP, "--bind", "127.0.0.1:0", "--access-log-file", str(log)) as proc:
        assert httpx.get(f"http://127.0.0.1:{proc.port}/").status_code == 200
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert '"GET / HTTP/1.1" 200 13' in log.read_text()


NO_FORK = """
import os, sys
del os.fork  # as on Windows: one process, no supervisor
from bastion.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_without_fork_the_startup_line_is_one_too() -> None:
    popen = subprocess.Popen(
        [sys.executable, "-c", NO_FORK, "run", APP, "--bind", "127.0.0.1:0"],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1"),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert popen.stderr is not None
        first = popen.stderr.readline()
        assert "serving on http://127.0.0.1:" in first, first
        popen.send_signal(signal.SIGTERM)
        rest = popen.communicate(timeout=15)[1]
        assert popen.returncode == 0
        assert "serving on" not in rest
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait(5)
