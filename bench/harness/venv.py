"""The benchmark's own virtualenv, so peer servers never leak into the project's env.

Bastion is measured as users get it: its request path compiled (setup.py), here in place
next to the sources, which the servers import from the repository. ``BASTION_COMPILE=0`` in
the environment measures the pure-Python build instead. Installs are skipped when a stamp
file shows the same requirements, ``pyproject.toml``, build choice and compiled sources were
installed before, which keeps repeated runs fast.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# Servers to compare with, and the frameworks of the flask-json and fastapi-json workloads.
PEERS = ("uvicorn[standard]", "granian", "waitress", "gunicorn", "flask", "fastapi")
# Bastion's runtime deps, installed directly when the editable install is not possible.
BASTION_DEPS = ("httptools", "uvloop")
VERSION_PACKAGES = (
    "uvloop",
    "httptools",
    "uvicorn",
    "granian",
    "gunicorn",
    "waitress",
    "flask",
    "fastapi",
    "bastion-http",
)
INSTALL_TIMEOUT_S = 900
LISTED = "compiled-modules.txt"


@dataclass(frozen=True)
class Venv:
    root: Path

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def python(self) -> Path:
        return self.bin_dir / "python"

    @property
    def stamp(self) -> Path:
        return self.root / ".bench-stamp"


def _pip(venv: Venv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv.python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *args],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )


def _compile_choice() -> str:
    return os.environ.get("BASTION_COMPILE", "1")


def _wanted_stamp(repo_root: Path) -> str:
    digest = hashlib.sha256()
    # The build's inputs: a changed compiled module must be compiled again.
    for name in ("pyproject.toml", "setup.py", LISTED, *sorted(_hot_path(repo_root))):
        path = repo_root / name
        if path.exists():
            digest.update(name.encode() + b"\0" + path.read_bytes())
    return json.dumps(
        {
            "peers": PEERS,
            "deps": BASTION_DEPS,
            "build": digest.hexdigest(),
            "compile": _compile_choice(),
        }
    )


def _hot_path(repo_root: Path) -> list[str]:
    """The modules setup.py compiles, read from its list the way setup.py reads it."""
    path = repo_root / LISTED
    listed = path.read_text().splitlines() if path.exists() else []
    return [name for line in listed if (name := line.partition("#")[0].strip())]


def _install_project(venv: Venv, repo_root: Path, log: list[str]) -> None:
    """Editable-install the project; fall back to its deps (bastion then comes from PYTHONPATH)."""
    if (repo_root / "pyproject.toml").exists():
        os.environ["BASTION_COMPILE"] = _compile_choice()  # inherited by pip's build
        done = _pip(venv, "-e", str(repo_root))
        if done.returncode == 0:
            log.append("installed the project in editable mode")
            return
        log.append(f"editable install failed, using PYTHONPATH instead:\n{done.stderr.strip()}")
    else:
        log.append("no pyproject.toml yet: bastion is imported from the repo via PYTHONPATH")
    done = _pip(venv, *BASTION_DEPS)
    if done.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(BASTION_DEPS)} failed:\n{done.stderr}")


def ensure(root: Path, repo_root: Path, install: bool = True) -> tuple[Venv, list[str]]:
    """Create the venv if needed and install peers + project; returns notes for the user."""
    venv = Venv(root)
    log: list[str] = []
    if not venv.python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=300)
        log.append(f"created {root}")
    wanted = _wanted_stamp(repo_root)
    if not install or (venv.stamp.exists() and venv.stamp.read_text() == wanted):
        return venv, log
    done = _pip(venv, *PEERS)
    if done.returncode != 0:
        raise RuntimeError(f"pip install of peers failed:\n{done.stderr}")
    _install_project(venv, repo_root, log)
    venv.stamp.write_text(wanted)
    return venv, log


def server_env(repo_root: Path) -> dict[str, str]:
    """Environment for servers: the repo importable, no bytecode noise, unbuffered logs."""
    env = dict(os.environ)
    existing = env.get("PYTHONPATH")
    env["PYTHONPATH"] = f"{repo_root}{os.pathsep}{existing}" if existing else str(repo_root)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("VIRTUAL_ENV", None)
    return env


_VERSIONS_SNIPPET = """
import importlib.metadata as md, json, platform, sys
out = {"python": platform.python_version()}
for name in sys.argv[1:]:
    try:
        out[name] = md.version(name)
    except md.PackageNotFoundError:
        out[name] = None
print(json.dumps(out))
"""


def _tool_version(argv: list[str], pattern: str) -> str | None:
    """First match of ``pattern`` in what ``argv`` prints (nginx and wrk print to stderr)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    match = re.search(pattern, done.stdout + done.stderr)
    return match.group(1) if match else None


def versions(venv: Venv, repo_root: Path) -> dict[str, str | None]:
    """Versions that belong next to any published number."""
    done = subprocess.run(
        [str(venv.python), "-c", _VERSIONS_SNIPPET, *VERSION_PACKAGES],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    found: dict[str, str | None] = json.loads(done.stdout) if done.returncode == 0 else {}
    found["bastion-commit"] = _tool_version(
        ["git", "-C", str(repo_root), "describe", "--always", "--dirty"], r"(\S+)"
    )
    # "compiled" or "pure Python": which request path the Bastion rows ran.
    found["bastion-build"] = _tool_version(
        [str(venv.python), "-m", "bastion", "--version"], r"\((.+)\)"
    )
    found["nginx"] = _tool_version(["nginx", "-v"], r"nginx/(\S+)")
    found["wrk"] = _tool_version(["wrk", "--version"], r"^wrk (\S+)")
    return found
