"""The access log: a request observer writing to the ``bastion.access`` logger."""

from __future__ import annotations

import base64
import json
import logging
import re
import signal
import subprocess
import time

import pytest

from bastion.engine import ServerConfig
from bastion.engine.accesslog import compile_format
from tests.app.hello import app
from tests.ops.running import supervisor
from tests.serving import serve


def requests_logged(
    caplog: pytest.LogCaptureFixture, spec: str, raw: bytes, count: int = 1
) -> list[str]:
    config = ServerConfig(access_log=True, access_log_format=spec)
    with caplog.at_level(logging.INFO, logger="bastion.access"), serve(app, config) as server:
        sock = server.connect()
        sock.sendall(raw)
        deadline = time.monotonic() + 5
        while len(_access(caplog)) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        sock.close()
    return _access(caplog)


def _access(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bastion.access"]


COMMON = re.compile(
    r"^127\.0\.0\.1 - (?P<user>\S+) \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "
    r'"(?P<line>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+|-)$'
)


def test_common_format(caplog: pytest.LogCaptureFixture) -> None:
    auth = base64.b64encode(b"alice:secret").decode()
    raw = (
        b"GET /?x=1 HTTP/1.1\r\nHost: t\r\n\r\n"
        + f"GET /nope HTTP/1.1\r\nHost: t\r\nAuthorization: Basic {auth}\r\n\r\n".encode()
        + b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    first, second, third = requests_logged(caplog, "common", raw, count=3)
    found = COMMON.match(first)
    assert found, first
    assert found["line"] == "GET /?x=1 HTTP/1.1" and found["status"] == "200"
    assert found["bytes"] == "13" and found["user"] == "-"
    found = COMMON.match(second)
    assert found and found["status"] == "404" and found["user"] == "alice"
    found = COMMON.match(third)
    assert found and found["bytes"] == "-"


def test_combined_format_escapes_quotes(caplog: pytest.LogCaptureFixture) -> None:
    raw = b'GET / HTTP/1.1\r\nHost: t\r\nReferer: http://x/"y"\r\nUser-Agent: t\\est\r\n\r\n'
    (line,) = requests_logged(caplog, "combined", raw)
    assert line.endswith(' 200 13 "http://x/\\"y\\"" "t\\\\est"'), line


def test_json_format(caplog: pytest.LogCaptureFixture) -> None:
    raw = b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nUser-Agent: ua\r\n\r\nping"
    (line,) = requests_logged(caplog, "json", raw)
    record = json.loads(line)
    assert record["client"] == "127.0.0.1" and record["method"] == "POST"
    assert record["path"] == "/echo" and record["status"] == 200 and record["bytes"] == 4
    assert record["host"] == "h" and record["user_agent"] == "ua" and record["referer"] is None
    assert record["scheme"] == "http" and record["duration_ms"] >= 0


def test_custom_format(caplog: pytest.LogCaptureFixture) -> None:
    raw = b"GET /sleep?s=0.05 HTTP/1.1\r\nHost: h\r\nX-Id: 42\r\n\r\n"
    spec = "%m %U%q %H %>s %B %{X-Id}i %{Missing}i %v %D %{ms}T %% done"
    (line,) = requests_logged(caplog, spec, raw)
    method, path, proto, status, size, xid, missing, host, micros, millis, *rest = line.split()
    assert (method, path, proto, status, size) == ("GET", "/sleep?s=0.05", "HTTP/1.1", "200", "5")
    assert (xid, missing, host, rest) == ("42", "-", "h", ["%", "done"])
    # Both fields render the same measured duration, in their own units (and the handler slept,
    # so it is not zero); no bound on the time itself.
    assert int(micros) > 0
    assert abs(int(micros) // 1000 - int(millis)) <= 1


@pytest.mark.parametrize("spec", ["%Z", "%{x}o", "%", "trailing %"])
def test_bad_formats_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        compile_format(spec)
    with pytest.raises(ValueError, match="access_log_format"):
        ServerConfig(access_log_format=spec)


def test_the_access_log_is_off_by_default_and_goes_to_stdout_when_on() -> None:
    with supervisor("tests.ops.apps:app", "--bind", "127.0.0.1:0",
                    stdout=subprocess.PIPE) as proc:  # fmt: skip
        proc.get("/")
        proc.signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert proc.popen.stdout is not None and proc.popen.stdout.read() == ""
    args = ("--bind", "127.0.0.1:0", "--access-log", "--access-log-format", "json")
    with supervisor("tests.ops.apps:app", *args, stdout=subprocess.PIPE) as proc:
        proc.get("/pid")
        proc.signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert proc.popen.stdout is not None
        (line,) = proc.popen.stdout.read().splitlines()
        assert json.loads(line)["path"] == "/pid"
        assert '"path"' not in proc.text  # not on stderr with the error log
