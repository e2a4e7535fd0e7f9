"""``bastion balance`` as a user runs it: real processes, a real TOML file, real clients."""

from __future__ import annotations

import http.client
import json
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli.running import ROOT, Process, bastion, bastion_out
from tests.ops.certs import make_certificates

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


def refusal(*args: str, cwd: Path = ROOT) -> str:
    """The one line ``bastion ARGS`` refuses to start with (exit status 2, no traceback)."""
    out = bastion_out(*args, cwd=cwd)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("bastion: error: ")
    return lines[0].removeprefix("bastion: error: ")


ROUTE = '[[route]]\nname = "api"\nupstreams = ["http://10.0.0.2:8000"]\n'

BAD_FILES = [
    ("wokers = 2\n" + ROUTE, "lb.toml: unknown setting 'wokers' (did you mean 'workers'?)"),
    ('[[routes]]\nupstreams = ["a:1"]', "lb.toml: unknown setting 'routes' (did you mean "
     "'route'?)"),
    ('app = "bastion.demo:app"\n' + ROUTE, "lb.toml: 'app' is not a setting of bastion balance"),
    ("workers = -1\n" + ROUTE, "lb.toml: workers: must be a positive number, 0 or auto"),
    (ROUTE + "[route.timeouts]\nconnect = 0", 'lb.toml: route "api": timeouts.connect must be '
     "> 0, not 0"),
    (ROUTE + "retyr = {attempts = 2}", "lb.toml: route \"api\": unknown key 'retyr' (did you "
     "mean 'retry'?)"),
    ('[[route]]\nupstreams = ["http://10.0.0.2:8000/app"]', 'lb.toml: route "default": upstream '
     "http://10.0.0.2:8000/app: give only scheme, host and port (no path or user)"),
    ('[[route]]\nupstreams = [{url = "a:1", weight = -2}]', 'lb.toml: route "default": upstream '
     "a:1: weight must be >= 0, not -2"),
    (ROUTE + 'hash_key = "path"', 'lb.toml: route "api": hash_key: only a hashing strategy '
     "(bounded-load, maglev, ring-hash) uses a hash key, not round-robin"),
    (ROUTE + "[route.outlier]\nbase_ejection = 60\nmax_ejection = 30", 'lb.toml: route "api": '
     "outlier.max_ejection must be >= outlier.base_ejection"),
    (ROUTE + '[[route]]\nname = "web"\nupstreams = ["a:1"]', 'lb.toml: route "web": another '
     "route has the same host and path_prefix"),
    ("[balancer]\nforwarding = 'all'\n" + ROUTE, "lb.toml: balancer: forwarding must be one of "
     "both, x-forwarded, forwarded, none, not 'all'"),
    ("workers = [", "config file lb.toml is not valid TOML: "),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_a_bad_file_stops_startup_with_one_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "lb.toml").write_text(text)
    assert refusal("balance", "--config", "lb.toml", cwd=tmp_path).startswith(message)


BAD_FLAGS = [
    ((), "nothing to balance: give --upstream URL (repeatable), or [[route]] tables in a "
     "--config file"),
    (("--upstream", "ftp://a"), "--upstream: upstream ftp://a: the scheme must be http or https"),
    (("--upstream", "a:1,weight=x"), "--upstream: 'a:1,weight=x': the weight must be a number"),
    (("--upstream", "a:1,max=3"), "--upstream: expected URL or URL,weight=N, not 'a:1,max=3'"),
    (("--upstream", "a:1", "--upstream", "http://a:1"), "--upstream: upstreams: a:1 is listed "
     "twice"),
    (("--upstream", "a:1", "--strategy", "fastest"), "--strategy: unknown strategy 'fastest'"),
    (("--upstream", "a:1", "--hash-key", "cookie:"), "--hash-key: hash_key 'cookie:': expected "),
    (("--upstream", "a:1", "--hash-key", "path"), "--hash-key: only a hashing strategy "),
    (("--upstream", "a:1", "--connect-timeout", "0"), "--connect-timeout: must be positive"),
    (("--upstream", "a:1", "--retries", "-1"), "--retries: must not be below 0, got '-1'"),
    (("--upstream", "a:1", "--health-path", "up"), "--health-path: health.path must start "),
    (("--upstream", "a:1", "--workers", "x"), "--workers: expected a whole number, got 'x'"),
    (("--upstream", "https://a:1", "--upstream-key", "k.pem"), "upstream tls.key needs "
     "tls.cert"),
    (("--upstream", "https://a:1", "--upstream-ca", "/nonexistent/ca.pem"), "upstream tls: "
     "cannot load /nonexistent/ca.pem: "),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), BAD_FLAGS)
def test_a_bad_flag_stops_startup_with_one_line(args: tuple[str, ...], message: str) -> None:
    assert refusal("balance", *args).startswith(message)


@pytest.mark.parametrize("flag", [("--upstream", "a:1"), ("--strategy", "maglev")])
def test_route_flags_and_route_tables_do_not_mix(tmp_path: Path, flag: tuple[str, str]) -> None:
    (tmp_path / "lb.toml").write_text(ROUTE)
    assert refusal("balance", "--config", "lb.toml", *flag, cwd=tmp_path) == (
        f"{flag[0]}: cannot be combined with the [[route]] tables of lb.toml; set it in a "
        "route there instead"
    )


def test_bastion_run_knows_nothing_of_balancing(tmp_path: Path) -> None:
    (tmp_path / "lb.toml").write_text(ROUTE)
    message = refusal("run", "bastion.demo:app", "--config", "lb.toml", cwd=tmp_path)
    assert message == "lb.toml: unknown setting 'route'"
    out = bastion_out("run", "bastion.demo:app", "--upstream", "a:1")
    assert out.returncode == 2 and "unknown option --upstream" in out.stderr
    assert "--upstream" not in bastion_out("run", "--help").stdout


def test_print_config_shows_engine_and_balancer_and_loads_back(tmp_path: Path) -> None:
    out = bastion_out(
        "balance",
        "--upstream", "http://10.0.0.2:8000",
        "--upstream", "10.0.0.3:8000,weight=2",
        "--strategy", "p2c-ewma",
        "--connect-timeout", "1.5",
        "--retries", "0",
        "--health-path", "/healthz",
        "--workers", "3",
        "--proxy-headers",
        "--print-config",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("# bastion balance: resolved settings")
    document = tomllib.loads(out.stdout)
    assert "app" not in out.stdout and "interface" not in document
    assert document["workers"] == 3
    # Behind trusted proxies (--proxy-headers), their forwarding fields are passed on.
    assert document["balancer"]["trusted_proxies"] == ["127.0.0.1"]
    (route,) = document["route"]
    assert route["upstreams"] == [
        {"url": "http://10.0.0.2:8000", "weight": 1.0},
        {"url": "10.0.0.3:8000", "weight": 2.0},
    ]
    assert route["strategy"] == "peak-ewma"
    assert route["timeouts"]["connect"] == 1.5
    assert route["retry"]["attempts"] == 1
    assert route["health"]["path"] == "/healthz"
    (tmp_path / "lb.toml").write_text(out.stdout)
    again = bastion_out("balance", "--config", "lb.toml", "--print-config", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert tomllib.loads(again.stdout) == document


def test_help_lists_the_balancing_flags_and_the_engine_flags() -> None:
    text = bastion_out("balance", "--help").stdout
    for flag in ("--upstream", "--strategy", "--hash-key", "--connect-timeout",
                 "--response-timeout", "--retries", "--health-path", "--workers", "--tls-cert",
                 "--access-log", "--admin-bind", "--print-config"):  # fmt: skip
        assert flag in text
    assert "--interface" not in text and "--root-path" not in text


# End to end: upstream Bastion apps and the balancer in front of them --------------------------


@contextmanager
def upstreams(count: int) -> Iterator[list[Process]]:
    with ExitStack() as stack:
        yield [
            stack.enter_context(bastion("run", "tests.cli.whoami:app", "--bind", "127.0.0.1:0"))
            for _ in range(count)
        ]


def pid_of(process: Process) -> int:
    """The worker that serves for an upstream (each runs one)."""
    return int(whoami(process.port, "/")["pid"])


def whoami(port: int, path: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = httpx.get(f"http://127.0.0.1:{port}{path}", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_balances_requests_over_two_upstreams() -> None:
    with upstreams(2) as (one, two):
        pids = {pid_of(one): "one", pid_of(two): "two"}
        args = ["--upstream", f"http://127.0.0.1:{one.port}", "--upstream", f"127.0.0.1:{two.port}"]
        with bastion("balance", *args, "--bind", "127.0.0.1:0", "--workers", "2") as lb:
            seen: Counter[str] = Counter()
            conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
            for number in range(20):
                conn.request("GET", f"/item/{number}", headers={"X-Forwarded-For": "6.6.6.6"})
                response = conn.getresponse()
                assert response.status == 200
                answer = json.loads(response.read())
                assert answer["path"] == f"/item/{number}"
                # A client that is not a trusted proxy cannot choose the address upstream sees.
                assert answer["headers"]["x-forwarded-for"] == "127.0.0.1"
                seen[pids[answer["pid"]]] += 1
            conn.close()
            with httpx.Client(base_url=f"http://127.0.0.1:{lb.port}", timeout=10) as client:
                for _ in range(20):
                    seen[pids[client.get("/").json()["pid"]]] += 1
            # Round robin, per worker: each upstream gets its share whichever worker answers.
            assert seen["one"] >= 10 and seen["two"] >= 10, seen
            lb.popen.send_signal(signal.SIGTERM)
            assert lb.wait(10) == 0


def test_an_https_upstream_from_a_private_ca(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path)
    tls = ["--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key)]
    with bastion("run", "tests.cli.whoami:app", "--bind", "127.0.0.1:0", *tls) as upstream:
        url = f"https://127.0.0.1:{upstream.port}"
        for extra in ([], ["--upstream-server-name", "localhost"]):
            args = ["--upstream", url, "--upstream-ca", str(certs.ca), *extra]
            with bastion("balance", *args, "--bind", "127.0.0.1:0") as lb:
                assert whoami(lb.port, "/tls")["path"] == "/tls"
        # Without the CA the upstream's certificate is not believed: 502, and a line says why.
        with bastion("balance", "--upstream", url, "--bind", "127.0.0.1:0") as lb:
            assert httpx.get(f"http://127.0.0.1:{lb.port}/", timeout=10).status_code == 502
            lb.popen.send_signal(signal.SIGTERM)
            assert lb.wait(10) == 0
            assert "CERTIFICATE_VERIFY_FAILED" in lb.text or "certificate" in lb.text


def route_file(path: Path, api: int, rest: int, balancer: str = "") -> None:
    path.write_text(
        "workers = 1\n"
        f"{balancer}\n"
        f'[[route]]\nname = "api"\npath_prefix = "/api"\nstrip_prefix = true\n'
        f'upstreams = ["http://127.0.0.1:{api}"]\n'
        f'[[route]]\nname = "rest"\nupstreams = ["http://127.0.0.1:{rest}"]\n'
    )


def test_routes_from_the_file_and_sighup_rereads_it(tmp_path: Path) -> None:
    config = tmp_path / "lb.toml"
    with upstreams(2) as (one, two):
        one_pid, two_pid = pid_of(one), pid_of(two)
        route_file(config, api=one.port, rest=two.port)
        with bastion("balance", "--config", str(config), "--bind", "127.0.0.1:0") as lb:
            answer = whoami(lb.port, "/api/users")
            assert (answer["pid"], answer["path"]) == (one_pid, "/users")
            assert whoami(lb.port, "/users")["pid"] == two_pid
            route_file(config, api=two.port, rest=one.port)
            lb.popen.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while whoami(lb.port, "/users")["pid"] != one_pid:
                assert time.monotonic() < deadline, "the reload did not take effect"
                time.sleep(0.1)
            assert whoami(lb.port, "/api/users")["pid"] == two_pid
            # A broken file on reload leaves the running configuration serving.
            config.write_text(config.read_text() + "[route.timeouts]\nconnect = -1\n")
            lb.popen.send_signal(signal.SIGHUP)
            time.sleep(1)
            assert whoami(lb.port, "/users")["pid"] == one_pid
            lb.popen.send_signal(signal.SIGTERM)
            assert lb.wait(10) == 0
    assert f'reload failed: {config}: route "rest": timeouts.connect must be > 0' in (lb.text)


def test_the_balancer_table_reaches_the_proxy(tmp_path: Path) -> None:
    config = tmp_path / "lb.toml"
    with upstreams(1) as (one,):
        balancer = '[balancer]\nforwarding = "none"\nrequest_id = ""\n'
        route_file(config, api=one.port, rest=one.port, balancer=balancer)
        with bastion("balance", "--config", str(config), "--bind", "127.0.0.1:0") as lb:
            headers = whoami(lb.port, "/")["headers"]
            assert "x-forwarded-for" not in headers and "forwarded" not in headers
            assert "x-request-id" not in headers


def test_active_health_checks_take_a_failing_upstream_out(tmp_path: Path) -> None:
    config = tmp_path / "lb.toml"
    with upstreams(2) as (one, two):
        two_pid = pid_of(two)
        config.write_text(
            "workers = 2\n[[route]]\n"
            f'upstreams = ["127.0.0.1:{one.port}", "127.0.0.1:{two.port}"]\n'
            f'health = {{path = "/down-if/{one.port}", interval = 0.2, fall = 1}}\n'
        )
        with bastion("balance", "--config", str(config), "--bind", "127.0.0.1:0") as lb:
            deadline = time.monotonic() + 10
            while {whoami(lb.port, "/")["pid"] for _ in range(6)} != {two_pid}:
                assert time.monotonic() < deadline, "the failing upstream stayed in"
                time.sleep(0.2)
            # Every worker has the verdict: a fresh connection may land on either.
            assert {whoami(lb.port, "/")["pid"] for _ in range(20)} == {two_pid}
            lb.popen.send_signal(signal.SIGTERM)
            assert lb.wait(10) == 0
    # Checked once, by the supervisor, not by each worker.
    assert lb.text.count(f'upstream 127.0.0.1:{one.port} (route "default") is down') == 1
