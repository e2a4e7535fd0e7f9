"""``bastion serve`` as a user runs it: a real process, curl as the client, Ctrl-C to stop."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.static.cli import bind_address
from tests.static.support import ROOT, curl, serve_process, write

ACCESS = re.compile(
    r'^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4} \d\d:\d\d:\d\d\] "(\S+) (\S+) HTTP/1\.1" (\d{3}) (\S+)$'
)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    write(tmp_path / "index.txt", "hello from the cli\n")
    write(tmp_path / "sub" / "a.txt", "a")
    return tmp_path


def test_serves_prints_url_and_access_lines_and_stops_on_ctrl_c(site: Path) -> None:
    with serve_process(str(site), "--port", "0") as proc:
        assert proc.url.startswith("http://127.0.0.1:")
        assert f"(directory {site}; press Ctrl-C to stop)" in proc.lines[-1]
        result = curl(f"{proc.url}/index.txt")
        assert result.stdout == b"hello from the cli\n"
        # http.server's line, size included: it logs "-" (before the body is known).
        line = proc.read_line()
        assert ACCESS.match(line.rstrip("\n")).groups() == ("GET", "/index.txt", "200", "-")  # type: ignore[union-attr]
        curl(f"{proc.url}/missing")
        assert ACCESS.match(proc.read_line().rstrip("\n")).groups()[2:] == ("404", "-")  # type: ignore[union-attr]
        curl("-I", f"{proc.url}/index.txt")
        assert ACCESS.match(proc.read_line().rstrip("\n")).groups() == (
            "HEAD",
            "/index.txt",
            "200",
            "-",
        )  # type: ignore[union-attr]
        assert proc.stop() == 0
    assert "Traceback" not in "".join(proc.lines)


def test_flags(site: Path) -> None:
    args = (
        "--directory",
        str(site),
        "--port",
        "0",
        "--no-listings",
        "--cache-control",
        "max-age=9",
        "-q",
    )
    with serve_process(*args) as proc:
        assert curl("-o", "/dev/null", "-w", "%{http_code}", f"{proc.url}/sub/").stdout == b"404"
        headers = curl("-I", f"{proc.url}/index.txt").stdout
        assert b"cache-control: max-age=9" in headers
        assert proc.stop() == 0
    assert not any(ACCESS.match(line.rstrip("\n")) for line in proc.lines)  # --quiet


def test_bind_with_host_and_port_flag(site: Path) -> None:
    with serve_process(str(site), "--bind", "127.0.0.1", "--port", "0", "-q") as proc:
        assert curl(f"{proc.url}/sub/a.txt").stdout == b"a"
        assert proc.stop() == 0


def test_bind_address_forms() -> None:
    assert bind_address("0.0.0.0", 8080) == "0.0.0.0:8080"
    assert bind_address("localhost", 80) == "localhost:80"
    assert bind_address("::", 8000) == "[::]:8000"
    assert bind_address("[::1]:9000", 8000) == "[::1]:9000"
    assert bind_address("127.0.0.1:9000", 8000) == "127.0.0.1:9000"
    assert bind_address("unix:/tmp/s.sock", 8000) == "unix:/tmp/s.sock"


def test_errors_are_explained(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = [sys.executable, "-m", "bastion.static"]
    missing = subprocess.run(
        [*run, str(tmp_path / "nope")], capture_output=True, text=True, env=env, timeout=30
    )
    assert missing.returncode == 2
    assert "not a directory" in missing.stderr
    bad_bind = subprocess.run(
        [*run, str(tmp_path), "--bind", "1.2.3.4:99999"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert bad_bind.returncode == 2
    assert "invalid port" in bad_bind.stderr
    port_first = subprocess.run(
        [*run, "8080"], capture_output=True, text=True, env=env, timeout=30, cwd=tmp_path
    )
    assert port_first.returncode == 2
    assert "use --port 8080" in port_first.stderr


def test_bastion_serve_subcommand(site: Path) -> None:
    """``bastion serve`` once the command is wired into ``bastion.cli``."""
    from bastion.cli.main import build_parser

    commands = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    if not commands or "serve" not in commands[0].choices:
        pytest.skip("bastion.cli does not offer the serve command yet")
    with serve_process(str(site), "--port", "0", command=("-m", "bastion", "serve")) as proc:
        assert curl(f"{proc.url}/index.txt").stdout == b"hello from the cli\n"
        assert proc.stop() == 0


def test_unreadable_file_is_403_and_server_keeps_serving(tmp_path: Path) -> None:
    site = tmp_path / "site"
    write(site / "secret.txt", "secret").chmod(0)
    (site / "locked").mkdir()
    write(site / "locked" / "x.txt", "x")
    (site / "locked").chmod(0)
    write(site / "fine.txt", "fine")
    prefix: list[str] = []
    if os.geteuid() == 0:
        # root reads everything; drop the capabilities that let it, as a service user would be
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("setpriv (util-linux) is needed to run the server without root's powers")
        prefix = [setpriv, "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search"]
    try:
        with serve_process(str(site), "--port", "0", "-q", prefix=prefix) as proc:
            code = "%{http_code}"
            assert curl("-o", "/dev/null", "-w", code, f"{proc.url}/secret.txt").stdout == b"403"
            assert curl("-o", "/dev/null", "-w", code, f"{proc.url}/locked/").stdout == b"403"
            assert curl("-o", "/dev/null", "-w", code, f"{proc.url}/locked/x.txt").stdout == b"403"
            assert curl(f"{proc.url}/fine.txt").stdout == b"fine"
            listing = curl(f"{proc.url}/").stdout
            assert b"fine.txt" in listing
            assert proc.stop() == 0
    finally:
        (site / "locked").chmod(0o755)
