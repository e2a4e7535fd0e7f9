"""``bastion run`` as a user runs it: a real process, real signals, curl as the client."""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import sys
import threading
import time

from tests.cli.running import ROOT, bastion
from tests.serving import read_until_close


def test_run_serves_the_demo_app_to_curl() -> None:
    with bastion("run", "bastion.demo:app", "--bind", "127.0.0.1:0") as proc:
        url = f"http://127.0.0.1:{proc.port}"
        out = subprocess.run(
            ["curl", "-sS", "-i", f"{url}/hello/curl"], capture_output=True, timeout=10, check=True
        )
        assert out.stdout.startswith(b"HTTP/1.1 200 OK")
        assert out.stdout.endswith(b'{"hello":"curl"}')
        out = subprocess.run(
            ["curl", "-sS", "--data-binary", "ping", f"{url}/echo"],
            capture_output=True,
            timeout=10,
            check=True,
        )
        assert out.stdout == b"ping"
        proc.popen.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0


def test_sigterm_lets_in_flight_requests_finish_and_exits_zero() -> None:
    with bastion("run", "tests.app.hello:app", "--bind", "127.0.0.1:0") as proc:
        idle = socket.create_connection(("127.0.0.1", proc.port), timeout=5)
        idle.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        idle.recv(65536)  # answered; now an idle keep-alive connection
        result: dict[str, object] = {}

        def slow_request() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=10)
            conn.request("GET", "/sleep?s=1")
            response = conn.getresponse()
            result["status"] = response.status
            result["body"] = response.read()
            result["connection"] = response.getheader("connection")

        client = threading.Thread(target=slow_request)
        client.start()
        time.sleep(0.3)  # the slow request is in flight
        proc.popen.send_signal(signal.SIGTERM)
        assert read_until_close(idle, timeout=3) == b""  # idle connection closed at once
        client.join(10)
        assert result == {"status": 200, "body": b"slept", "connection": "close"}
        assert proc.wait(10) == 0
        assert "shutting down gracefully" in proc.text


def test_graceful_timeout_bounds_the_drain() -> None:
    args = ("run", "tests.app.hello:app", "--bind", "127.0.0.1:0", "--graceful-timeout", "0.5")
    with bastion(*args) as proc:
        sock = socket.create_connection(("127.0.0.1", proc.port), timeout=5)
        sock.sendall(b"GET /sleep?s=5 HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.3)
        started = time.monotonic()
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert time.monotonic() - started < 4
        assert "graceful timeout" in proc.text


def _bastion_fails(*args: str) -> str:
    """Run ``python -m bastion ARGS`` expecting a refusal (exit 2); return its stderr."""
    out = subprocess.run(
        [sys.executable, "-m", "bastion", *args],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=ROOT,
    )
    assert out.returncode == 2, out.stderr
    return out.stderr


def test_unimportable_target_is_explained() -> None:
    assert "cannot import 'no_such_module'" in _bastion_fails("run", "no_such_module:app")
    assert "has no attribute 'missing'" in _bastion_fails("run", "bastion.demo:missing")
    assert "cannot tell what kind of application" in _bastion_fails("run", "json:dumps")


def test_bad_flag_values_are_refused() -> None:
    stderr = _bastion_fails("run", "bastion.demo:app", "--header-timeout", "0")
    assert "--header-timeout" in stderr and "positive" in stderr
    assert "invalid port" in _bastion_fails("run", "bastion.demo:app", "--bind", "nope:x")


def test_serves_an_inherited_listening_socket() -> None:
    import os

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    fd = listener.fileno()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bastion", "run", "tests.app.hello:app", "--bind", f"fd://{fd}"],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        pass_fds=[fd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    listener.close()  # the child holds its own copy
    try:
        assert proc.stderr is not None
        for _ in range(20):
            if "serving on" in proc.stderr.readline():
                break
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"Hello, world!"
        conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
