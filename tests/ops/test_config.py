"""Settings from flags, BASTION_* variables and a TOML file: precedence and error messages."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ops.running import ROOT, bastion_env, supervisor

APP = "tests.ops.apps:app"


def bastion_run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion", "run", *args],
        cwd=ROOT,
        env=bastion_env(env),
        capture_output=True,
        text=True,
        timeout=30,
    )


def printed(*args: str, env: dict[str, str] | None = None) -> dict[str, str]:
    out = bastion_run(*args, "--print-config", env=env)
    assert out.returncode == 0, out.stderr
    lines = {}
    for line in out.stdout.splitlines():
        if line.startswith("#"):
            continue
        key, _, rest = line.partition(" = ")
        lines[key] = rest
    return lines


def test_precedence_is_flags_then_environment_then_file_then_defaults(tmp_path: Path) -> None:
    config = tmp_path / "bastion.toml"
    config.write_text(
        'app = "tests.ops.apps:app"\n'
        "workers = 3\n"
        "header-timeout = 7\n"
        "keepalive_timeout = 2.5\n"
        'bind = ["127.0.0.1:9001", "unix:/tmp/bastion-test.sock"]\n'
        "access-log = true\n"
    )
    env = {"BASTION_WORKERS": "2", "BASTION_HEADER_TIMEOUT": "8", "BASTION_CONFIG": str(config)}
    seen = printed("--workers", "4", env=env)
    assert seen["workers"] == "4  # command line"
    assert seen["header-timeout"] == "8.0  # environment"
    assert seen["keepalive-timeout"] == f"2.5  # {config}"
    assert seen["bind"] == f'["127.0.0.1:9001", "unix:/tmp/bastion-test.sock"]  # {config}'
    assert seen["access-log"] == f"true  # {config}"
    assert seen["app"] == f'"tests.ops.apps:app"  # {config}'
    assert seen["body-timeout"] == "30.0  # default"
    seen = printed("--config", str(config), "--no-access-log", env={"BASTION_WORKERS": "auto"})
    assert seen["access-log"] == "false  # command line"
    assert seen["workers"].endswith("# environment") and int(seen["workers"].split()[0]) >= 1


def test_the_printed_config_is_a_valid_config_file(tmp_path: Path) -> None:
    out = bastion_run(APP, "--workers", "2", "--forwarded-allow-ips", "10.0.0.0/8,unix",
                      "--print-config")  # fmt: skip
    config = tmp_path / "printed.toml"
    config.write_text(out.stdout)
    assert printed("--config", str(config)) == {
        key: value.replace("# command line", f"# {config}").replace("# default", f"# {config}")
        for key, value in printed(APP, "--workers", "2", "--forwarded-allow-ips",
                                  "10.0.0.0/8,unix").items()
    }  # fmt: skip


def test_pyproject_tool_table(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\n\n[tool.bastion]\nmax-requests = 500\n')
    assert printed(APP, "-c", str(pyproject))["max-requests"] == f"500  # {pyproject}"


@pytest.mark.parametrize(
    ("args", "env", "file", "message"),
    [
        (["--header-timeout", "0"], {}, "", "--header-timeout: must be positive, got '0'"),
        (["--workers", "many"], {}, "", "--workers: expected a whole number, got 'many'"),
        ([], {"BASTION_MAX_BODY_SIZE": "-1"}, "", "BASTION_MAX_BODY_SIZE: must not be below 0"),
        ([], {"BASTION_PROXY_HEADERS": "maybe"}, "", "BASTION_PROXY_HEADERS: expected true or"),
        ([], {}, 'header-timeout = "fast"\n', "header-timeout: expected a number, got 'fast'"),
        ([], {}, "workers = 2\nreload = true\n", "reload: cannot be combined with workers = 2"),
        ([], {}, "max-request = 5\n", "unknown setting 'max-request' (did you mean"),
        ([], {}, "workers = [\n", "is not valid TOML"),
        ([], {}, 'bind = ["nope:x"]\n', "bind: invalid port in bind 'nope:x'"),
        (["--forwarded-allow-ips", "10.0.0.0/33"], {}, "", "--forwarded-allow-ips: '10.0.0.0/33'"),
        (["--access-log-format", "%h %Z"], {}, "", "--access-log-format: unsupported directive"),
        (["--log-level", "loud"], {}, "", "invalid choice: 'loud'"),
        (["--tls-key", "k.pem"], {}, "", "--tls-key: is set but tls_cert is not"),
    ],
)  # fmt: skip
def test_bad_values_stop_start_up_naming_the_setting(
    tmp_path: Path, args: list[str], env: dict[str, str], file: str, message: str
) -> None:
    if file:
        config = tmp_path / "bastion.toml"
        config.write_text(file)
        args = [*args, "--config", str(config)]
    out = bastion_run(APP, *args, env=env)
    assert out.returncode == 2
    assert message in out.stderr


def test_a_missing_config_file_and_a_missing_app_are_explained(tmp_path: Path) -> None:
    out = bastion_run("--config", str(tmp_path / "nope.toml"))
    assert out.returncode == 2 and "nope.toml does not exist" in out.stderr
    out = bastion_run()
    assert out.returncode == 2 and "no application given" in out.stderr


def test_settings_from_the_environment_and_a_file_take_effect(tmp_path: Path) -> None:
    config = tmp_path / "bastion.toml"
    config.write_text('bind = "127.0.0.1:0"\nworkers = 1\n')
    env = {"BASTION_CONFIG": str(config), "BASTION_APP": APP, "BASTION_WORKRES": "9"}
    env["BASTION_COMPILE"] = "0"  # the build's, not a setting: no warning for it
    with supervisor(env=env) as proc:
        proc.wait_workers(1)
        assert proc.get("/")[0] == 200
        assert "ignoring unknown environment variable BASTION_WORKRES" in proc.text
        assert "BASTION_COMPILE" not in proc.text
        # SIGHUP reads the file again.
        config.write_text('bind = "127.0.0.1:0"\nworkers = 2\n')
        mark = proc.mark()
        proc.signal(signal.SIGHUP)
        proc.wait_for(r"starting generation 1 \(2 workers\)", after=mark)
        proc.wait_for("reload complete", after=mark)
        proc.wait_workers(2)
        # A broken file on SIGHUP leaves everything as it was.
        config.write_text("workers = 0.5\n")
        mark = proc.mark()
        proc.signal(signal.SIGHUP)
        proc.wait_for("reload failed: .*workers: expected a whole number", after=mark)
        assert len(proc.workers()) == 2
        assert proc.get("/")[0] == 200
