"""``bastion up``: the stack file, what it refuses, and the groups it starts in order."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bastion.cli.main import main
from bastion.cli.up import load_stack, plans
from tests.cli.running import in_session
from tests.ops.running import Load

ROOT = Path(__file__).resolve().parents[2]

APP = """
import os
import sys
import bastion

app = bastion.App()
print("loaded", os.environ.get("INSTANCE"))
print("to stderr", file=sys.stderr)

@app.get("/")
async def home(request):
    return {"instance": os.environ.get("INSTANCE", "?")}
"""

GOOD = """
workers = 1

[[service]]
name = "a"
app = "svc:app"
bind = "127.0.0.1:{a}"
env = {{ INSTANCE = "a" }}

[[service]]
name = "b"
app = "svc:app"
bind = "127.0.0.1:{b}"
threads = 2
env = {{ INSTANCE = "b" }}

[balancer]
bind = "127.0.0.1:{lb}"
request_id = ""

[[route]]
upstreams = ["service:a", {{ url = "service:b", weight = 2 }}]
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "svc.py").write_text(APP)
    path = tmp_path / "stack.toml"
    path.write_text(text)
    return path


def good(tmp_path: Path, **ports: int) -> Path:
    chosen = {"a": 18001, "b": 18002, "lb": 18000, **ports}
    return write(tmp_path, GOOD.format(**chosen))


def test_a_stack_file_becomes_one_plan_per_group(tmp_path: Path) -> None:
    stack = load_stack(str(good(tmp_path)))
    assert [s.name for s in stack.services] == ["a", "b"]
    assert stack.routed == ("a", "b")
    assert stack.services[1].settings["threads"] == 2
    assert stack.services[0].env == {"INSTANCE": "a"}
    built = plans(stack)
    assert list(built) == ["a", "b", "balancer"]
    assert [str(spec) for spec in built["balancer"].binds] == ["127.0.0.1:18000"]
    route = stack.balancer.tables["route"][0] if stack.balancer else {}
    assert route["upstreams"] == [
        "http://127.0.0.1:18001",
        {"url": "http://127.0.0.1:18002", "weight": 2},
    ]


def test_a_service_takes_the_application_settings_spelt_either_way(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    path = write(
        tmp_path,
        '[[service]]\nname = "a"\napp = "svc:make"\nbind = "127.0.0.1:18001"\n'
        'app-dir = "src"\nfactory = true\nroot-path = "/a"\n',
    )
    (settings,) = [service.settings for service in load_stack(str(path)).services]
    # The folder is the file's, wherever bastion up was started from.
    assert settings["app_dir"] == str(tmp_path / "src")
    assert (settings["factory"], settings["root_path"]) == (True, "/a")


def test_check_prints_the_groups(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["up", str(good(tmp_path)), "--check"]) == 0
    out = capsys.readouterr().out
    assert "service a: svc:app on 127.0.0.1:18001" in out
    assert "balancer: on 127.0.0.1:18000, 1 worker(s), starts after a, b" in out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("threads = 2", "thraeds = 2"),
            "stack.toml: service \"b\": unknown key 'thraeds' (did you mean 'threads'?)",
        ),
        (('name = "b"', 'name = "a"'), 'stack.toml: service "a" is defined twice'),
        (
            ('bind = "127.0.0.1:18002"', 'bind = "127.0.0.1:18001"'),
            'stack.toml: port 18001 is used twice: service "a" (127.0.0.1:18001) and '
            'service "b" (127.0.0.1:18001)',
        ),
        (
            ('bind = "127.0.0.1:18000"', 'bind = "0.0.0.0:18002"'),
            'stack.toml: port 18002 is used twice: service "b" (127.0.0.1:18002) and '
            "[balancer] (0.0.0.0:18002)",
        ),
        (
            ('"service:a"', '"service:c"'),
            "stack.toml: route \"default\": upstreams: no service named 'c' (the services "
            "are a, b)",
        ),
        (
            ('request_id = ""', 'request_idd = ""'),
            "stack.toml: [balancer]: unknown key 'request_idd' (did you mean 'request_id'?)",
        ),
        (
            ("workers = 1", "wrkers = 1"),
            "stack.toml: unknown setting 'wrkers' (did you mean 'workers'?)",
        ),
        (
            ('app = "svc:app"\nbind = "127.0.0.1:18002"', 'app = "svc:app"'),
            'stack.toml: service "b": bind is required (bind = "127.0.0.1:8001")',
        ),
        (
            ("threads = 2", 'admin-bind = "127.0.0.1:9999"'),
            'stack.toml: service "b": admin-bind belongs to the whole stack: set it at the top',
        ),
        (
            ("threads = 2", "workers = -1"),
            'stack.toml: service "b": workers: must be a positive number, 0 or auto, got -1',
        ),
    ],
)
def test_a_bad_stack_file_stops_with_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    change: tuple[str, str],
    message: str,
) -> None:
    text = GOOD.format(a=18001, b=18002, lb=18000)
    assert change[0] in text
    write(tmp_path, text.replace(change[0], change[1], 1))
    monkeypatch.chdir(tmp_path)
    assert main(["up"]) == 2
    err = capsys.readouterr().err
    assert err == f"bastion: error: {message}\n"


def test_a_missing_stack_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["up"]) == 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="bastion up needs fork()")
def test_up_routes_to_every_service_and_stops_on_sigint(tmp_path: Path) -> None:
    lb = free_port()
    good(tmp_path, a=free_port(), b=free_port(), lb=lb)
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", NO_COLOR="1")
    popen = subprocess.Popen(
        [sys.executable, "-m", "bastion", "up"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert popen.stderr is not None
        lines: list[str] = []
        # Generous: three groups of workers start one after another on a busy machine.
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            line = popen.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "every service is ready" in line:
                break
        text = "".join(lines)
        assert "every service is ready" in text, text
        # The balancer started only once both services were serving.
        assert text.index("balancer: starting") > text.index("a worker 0 (pid")
        assert text.index("balancer: starting") > text.index("b worker 0 (pid")
        # Where each group serves is said once, when all are ready.
        assert text.count(f"balancer serving on http://127.0.0.1:{lb}\n") == 1, text
        seen = []
        for _ in range(6):
            with urllib.request.urlopen(f"http://127.0.0.1:{lb}/", timeout=5) as response:
                seen.append(response.read().decode())
        assert any('"a"' in body for body in seen) and any('"b"' in body for body in seen)
        popen.send_signal(signal.SIGINT)
        out, err = popen.communicate(timeout=15)
        assert popen.returncode == 0, err
        # Each worker's output reaches stdout and stderr behind its group's name.
        assert "every group stopped" in err
        assert "a        | loaded a\n" in out and "b        | loaded b\n" in out
        assert "a        | to stderr\n" in text + err
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait(5)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="bastion up needs fork()")
def test_health_lists_each_service_and_a_group_sighup_fails_no_request(tmp_path: Path) -> None:
    lb = free_port()
    text = good(tmp_path, a=free_port(), b=free_port(), lb=lb).read_text()
    (tmp_path / "stack.toml").write_text('admin-bind = "127.0.0.1:0"\n' + text)
    with in_session("up", cwd=tmp_path, env={"NO_COLOR": "1"}) as stack:
        admin = stack.wait_for(r"admin \(health, metrics, dashboard\) on (http://\S+)", 40)
        stack.wait_for("every service is ready", 40)
        url = admin.group(1)

        def get(path: str) -> str:
            with urllib.request.urlopen(url + path, timeout=5) as response:
                return str(response.read().decode())

        # Each service has a worker 0: each is listed under its service, none hides another.
        live = get("/healthz?verbose")
        for name in ("a", "b", "balancer"):
            assert f"\n{name}:\n  [+] worker 0 (pid " in live, live
        # The admin listener hears of each worker's readiness on its next report: wait for it.
        deadline = time.monotonic() + 20
        while True:
            try:
                ready = get("/readyz?verbose")
                break
            except urllib.error.HTTPError as error:
                if error.code != 503 or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert ready.startswith("ok\na: 1 serving\n"), ready
        services = json.loads(get("/readyz?format=json"))["services"]
        assert {name: part["workers"] for name, part in services.items()} == {
            "a": 1,
            "b": 1,
            "balancer": 1,
        }
        with Load(lb, expect=b'{"instance"') as load:
            load.wait_ok(30)
            mark = stack.mark()
            # What a terminal hanging up does: every worker gets it too.
            os.killpg(stack.pid, signal.SIGHUP)
            stack.wait_for("balancer: SIGHUP received", after=mark, timeout=40)
            for name in ("a", "b"):
                stack.wait_for(f"{name}: reload complete", after=mark, timeout=40)
            load.wait_ok(30)
        assert load.failures == []
        assert "killed by SIGHUP" not in stack.text
        stack.signal(signal.SIGTERM)
        assert stack.wait(30) == 0
