"""``bastion balance`` as a user runs it: real processes, a real TOML file, real clients."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.running import ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


def bastion_out(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion", *args],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=cwd,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


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
    assert out.returncode == 2 and "unrecognized arguments: --upstream" in out.stderr
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
