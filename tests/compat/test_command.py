"""``python -m bastion.compat`` against ``python -m http.server``: flags, output, Ctrl-C."""

from __future__ import annotations

import http.client
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.cli.running import ROOT

BANNER = re.compile(r"Serving HTTP on (\S+) port (\d+) \(http://(\S+):(\d+)/\) \.\.\.")


class Command:
    def __init__(self, proc: subprocess.Popen[str], banner: str) -> None:
        self.proc = proc
        self.banner = banner
        found = BANNER.fullmatch(banner)
        assert found is not None, banner
        self.host = found.group(1)
        self.port = int(found.group(2))

    def get(self, path: str, host: str = "127.0.0.1") -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(host, self.port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


@contextmanager
def command(module: str, *args: str, cwd: Path | str = ROOT) -> Iterator[Command]:
    """Run ``python -m <module> 0 <args>``; on leaving, Ctrl-C it and check a clean exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "0", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        preexec_fn=_interruptible,
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline().rstrip("\n")
        yield Command(proc, banner)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert out.endswith("\nKeyboard interrupt received, exiting.\n"), out
    assert "Task was destroyed" not in err, err
    assert "Traceback" not in err, err


def _interruptible() -> None:
    # Both servers stop on Ctrl-C through Python's KeyboardInterrupt, which Python sets up only
    # when SIGINT is not ignored. An ignored or blocked SIGINT is inherited through exec (a
    # shell running the suite as a background job ignores it), and the child would then never
    # see the Ctrl-C this test sends.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"  # the banner is read before the process ends
    return env


def _has_ipv6() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_without_bind_it_serves_on_the_address_the_standard_library_picks(tmp_path: Any) -> None:
    (tmp_path / "hello.txt").write_text("hi\n")
    with command("http.server", cwd=tmp_path) as stdlib:
        expected_host = stdlib.host
        assert stdlib.get("/hello.txt") == (200, b"hi\n")  # serving, so Ctrl-C is handled
    with command("bastion.compat", cwd=tmp_path) as ours:
        assert ours.host == expected_host
        assert ours.banner == stdlib.banner.replace(str(stdlib.port), str(ours.port))
        assert ours.get("/hello.txt") == (200, b"hi\n")


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 on this machine")
def test_bound_to_any_ipv6_address_it_serves_ipv4_too(tmp_path: Any) -> None:
    (tmp_path / "hello.txt").write_text("hi\n")
    with command("bastion.compat", "-b", "::", cwd=tmp_path) as ours:
        assert ours.host == "::"
        assert ours.banner == f"Serving HTTP on :: port {ours.port} (http://[::]:{ours.port}/) ..."
        assert ours.get("/hello.txt", "127.0.0.1") == (200, b"hi\n")
        assert ours.get("/hello.txt", "::1") == (200, b"hi\n")


def test_directory_and_bind(tmp_path: Any) -> None:
    (tmp_path / "served.txt").write_text("from -d\n")
    with command("bastion.compat", "-b", "127.0.0.1", "--directory", str(tmp_path)) as ours:
        assert ours.host == "127.0.0.1"
        assert ours.get("/served.txt") == (200, b"from -d\n")


@pytest.mark.parametrize("flag", ["-p", "--protocol"])
def test_protocol_version(tmp_path: Any, flag: str) -> None:
    (tmp_path / "a.txt").write_text("a")
    with command("bastion.compat", "-b", "127.0.0.1", flag, "HTTP/1.1", cwd=tmp_path) as ours:
        conn = http.client.HTTPConnection("127.0.0.1", ours.port, timeout=10)
        for _ in range(2):  # HTTP/1.1 keeps the connection
            conn.request("GET", "/a.txt")
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, b"a")
            assert not response.will_close
        conn.close()
    with command("bastion.compat", "-b", "127.0.0.1", cwd=tmp_path) as ours:
        conn = http.client.HTTPConnection("127.0.0.1", ours.port, timeout=10)
        conn.request("GET", "/a.txt")
        assert conn.getresponse().will_close  # HTTP/1.0 by default, as http.server
        conn.close()


def test_ctrl_c_with_a_connection_open_ends_cleanly(tmp_path: Any) -> None:
    (tmp_path / "a.txt").write_text("a")
    with command("bastion.compat", "-b", "127.0.0.1", "-p", "HTTP/1.1", cwd=tmp_path) as ours:
        conn = http.client.HTTPConnection("127.0.0.1", ours.port, timeout=10)
        conn.request("GET", "/a.txt")
        assert conn.getresponse().read() == b"a"
        # the connection stays open, idle, while Ctrl-C arrives (checked on leaving)


def test_cgi_is_refused_clearly() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bastion.compat", "--cgi", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
    )
    assert done.returncode == 2
    assert "--cgi is not supported" in done.stderr
    assert "Traceback" not in done.stderr
