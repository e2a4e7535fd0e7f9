"""The command line a newcomer from ``http.server``, uvicorn or gunicorn types, and what they
get back: every case runs ``python -m bastion`` and reads its stderr and exit status."""

from __future__ import annotations

import httpx
import pytest

from tests.cli.running import bastion, bastion_out

APP = "tests.app.hello:app"


def refused(*args: str) -> list[str]:
    """The lines of stderr of a command line refused before anything starts (status 2)."""
    out = bastion_out(*args)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    return out.stderr.splitlines()


@pytest.mark.parametrize(
    ("args", "usage", "error"),
    [
        (["run", APP, "--wokers", "2"], "usage: bastion run [OPTIONS] APP",
         "bastion run: error: unknown option --wokers (did you mean --workers?)"),
        (["run", APP, "--worker", "2"], "usage: bastion run [OPTIONS] APP",
         "bastion run: error: ambiguous option: --worker could match --workers, "
         "--worker-timeout"),
        (["run", APP, "--ssl-keyfile=key.pem"], "usage: bastion run [OPTIONS] APP",
         "bastion run: error: unknown option --ssl-keyfile: Bastion spells it --tls-key"),
        (["run", APP, "8000"], "usage: bastion run [OPTIONS] APP",
         "bastion run: error: unexpected argument '8000' (to choose the port, use --port 8000)"),
        (["balance", "--upstrem", "http://10.0.0.2"], "usage: bastion balance [OPTIONS]",
         "bastion balance: error: unknown option --upstrem (did you mean --upstream?)"),
        (["serve", "--no-listing", "--bogus"], "usage: bastion serve [OPTIONS] [DIR]",
         "bastion serve: error: unknown option --bogus"),
        (["up", "--chek"], "usage: bastion up", "bastion up: error: unknown option --chek "
         "(did you mean --check?)"),
        (["top", "--once", "--admni", "x"], "usage: bastion top",
         "bastion top: error: unknown option --admni (did you mean --admin?)"),
        (["top", "--admin", "x:1", "9000"], "usage: bastion top",
         "bastion top: error: unexpected argument '9000'"),
        (["main:app"], "usage: bastion ",
         "bastion: error: 'main:app' is not a command; to serve it: bastion run main:app"),
        (["serv"], "usage: bastion ", "bastion: error: unknown command 'serv' (did you mean "
         "serve?): expected one of run, serve, balance, up, top"),
        ([], "usage: bastion ", "bastion: error: give a command: run, serve, balance, up, top"),
        (["--workers", "2", "run", APP], "usage: bastion ", "bastion: error: --workers is "
         "not an option of bastion itself: options go after the command"),
    ],
)  # fmt: skip
def test_a_mistyped_command_line_gets_its_commands_usage_and_a_suggestion(
    args: list[str], usage: str, error: str
) -> None:
    lines = refused(*args)
    assert len(lines) == 2, lines
    assert lines[0].startswith(usage) and lines[0].endswith("--help lists every option)")
    assert lines[1] == error


def test_top_without_an_address_says_which_flag_is_missing() -> None:
    assert refused("top", "--once") == [
        "bastion top: error: which server? give --admin ADDRESS, the --admin-bind of the "
        "server to watch"
    ]


@pytest.mark.parametrize("address", ["nope:x", "ftp://127.0.0.1:9000", "http://:9000"])
def test_top_names_an_admin_address_it_cannot_use(address: str) -> None:
    assert refused("top", "--admin", address, "--once") == [
        f"bastion top: error: --admin {address}: expected http://host:port, host:port or unix:/path"
    ]


def resolved(*args: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """``bastion run --print-config``'s values, as written (TOML right-hand sides)."""
    out = bastion_out("run", APP, "--print-config", *args, env=env)
    assert out.returncode == 0, out.stderr
    pairs = (line.split(" = ", 1) for line in out.stdout.splitlines() if " = " in line)
    return {key: value.split("  #")[0] for key, value in pairs}


def test_uvicorn_and_gunicorn_spellings_of_the_address_and_workers() -> None:
    assert resolved()["bind"] == '["127.0.0.1:8000"]'
    config = resolved("--host", "0.0.0.0", "--port", "9000", "-w", "3")
    assert (config["bind"], config["workers"]) == ('["0.0.0.0:9000"]', "3")
    assert resolved("--bind", "0.0.0.0")["bind"] == '["0.0.0.0:8000"]'
    assert resolved("--bind", "localhost", "-b", "::1", "-b", "[::]")["bind"] == (
        '["localhost:8000", "[::1]:8000", "[::]:8000"]'
    )
    assert resolved(env={"BASTION_PORT": "9001"})["bind"] == '["127.0.0.1:9001"]'
    assert resolved(env={"BASTION_HOST": "0.0.0.0"})["bind"] == '["0.0.0.0:8000"]'


def test_a_port_no_address_takes_is_refused() -> None:
    assert refused("run", APP, "--bind", "127.0.0.1:8001", "--port", "9000") == [
        "bastion: error: --port: no address takes it: each of 127.0.0.1:8001 names its own port"
    ]
    assert refused("run", APP, "--port", "65536") == [
        "bastion: error: --port: must be at most 65535, got 65536"
    ]


def test_a_health_check_nothing_would_run_is_refused() -> None:
    assert refused("run", APP, "--health-check", "checks:database") == [
        "bastion: error: --health-check: is set but neither admin_bind nor health_path_prefix is"
    ]


def test_host_port_and_a_log_level_in_capitals_serve_as_asked() -> None:
    args = ("run", APP, "--host", "127.0.0.1", "--port", "0", "--log-level", "TRACE")
    with bastion(*args) as proc:
        assert httpx.get(f"http://127.0.0.1:{proc.port}/").text == "Hello, world!"
        assert " DEBUG " in proc.text  # trace shows everything debug does


def test_log_levels_are_case_insensitive_in_every_source() -> None:
    assert resolved("--log-level", "WARNING")["log-level"] == '"warning"'
    assert resolved(env={"BASTION_LOG_LEVEL": "Debug"})["log-level"] == '"debug"'
    assert "invalid choice: 'loud'" in refused("run", APP, "--log-level", "loud")[1]


def test_bastion_serve_takes_the_same_log_levels() -> None:
    with bastion("serve", "--port", "0", "--log-level", "TRACE") as proc:
        assert httpx.get(f"http://127.0.0.1:{proc.port}/").status_code == 200
