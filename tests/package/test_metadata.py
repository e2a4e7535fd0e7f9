"""What the package promises its users, checked from the source tree in a few milliseconds.

Building, checking and installing the real sdist and wheel is ``.ci/package``'s job (it takes
half a minute); these tests catch the usual ways to break it before that runs: a data file the
build configuration leaves out, a second place for the version, a missing ``py.typed``.
"""

from __future__ import annotations

import ast
import importlib.metadata
import sys
from pathlib import Path
from typing import Any

import pytest

import bastion
from bastion._compiled import is_compiled
from bastion.cli import main

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent.parent
PACKAGE = ROOT / "bastion"
# Files that are in the tree but never part of a package: byte code, and (one day) the C
# sources and compiled objects of optional extension modules, which the build handles itself.
NOT_DATA = {".py", ".pyc", ".pyo", ".c", ".so", ".pyd"}


def pyproject() -> dict[str, Any]:
    with open(ROOT / "pyproject.toml", "rb") as file:
        return tomllib.load(file)


def data_files() -> list[Path]:
    """Every file under bastion/ that is not Python code."""
    return sorted(
        path
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in NOT_DATA
    )


def packaged(config: dict[str, list[str]]) -> set[Path]:
    """The files ``[tool.setuptools.package-data]`` selects, globbed as setuptools does: each
    pattern relative to its package's folder (``*`` for every package)."""
    selected: set[Path] = set()
    folders = {path.parent for path in PACKAGE.rglob("*.py")} | {PACKAGE}
    for package, patterns in config.items():
        roots = sorted(folders) if package == "*" else [ROOT.joinpath(*package.split("."))]
        for folder in roots:
            for pattern in patterns:
                selected.update(path for path in folder.glob(pattern) if path.is_file())
    return selected


def test_every_data_file_is_in_the_package_data() -> None:
    config = pyproject()["tool"]["setuptools"].get("package-data", {})
    covered = packaged(config)
    missing = [str(path.relative_to(ROOT)) for path in data_files() if path not in covered]
    assert not missing, (
        "not in pyproject.toml's [tool.setuptools.package-data], so not in the wheel: "
        + ", ".join(missing)
    )


def test_the_dashboard_and_py_typed_are_data_files() -> None:
    # The check above is only as good as its walk: make sure it sees what must ship.
    names = {str(path.relative_to(PACKAGE)) for path in data_files()}
    assert "py.typed" in names, "bastion/py.typed is missing: type checkers would see Any"
    for asset in ("index.html", "dashboard.js", "uPlot.iife.min.js", "uPlot.LICENSE"):
        assert f"observe/dashboard/{asset}" in names


def test_the_version_is_written_once() -> None:
    project = pyproject()
    assert "version" not in project["project"], "pyproject.toml must not repeat the version"
    assert "version" in project["project"].get("dynamic", [])
    dynamic = project["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "bastion.__version__"}
    # setuptools reads a literal without importing bastion (whose dependencies a build lacks).
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    literals = [
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and [getattr(target, "id", None) for target in node.targets] == ["__version__"]
        and isinstance(node.value, ast.Constant)
    ]
    assert literals == [bastion.__version__], "bastion/__init__.py: one __version__ = '...'"
    others = [
        str(path.relative_to(ROOT))
        for path in PACKAGE.rglob("*.py")
        if path != PACKAGE / "__init__.py" and "__version__ =" in path.read_text()
    ]
    assert not others, f"a second __version__ in {', '.join(others)}"


def test_the_installed_metadata_has_the_same_version() -> None:
    installed = importlib.metadata.version("bastion-http")
    assert installed == bastion.__version__, (
        f"installed bastion-http is {installed}, bastion.__version__ is {bastion.__version__}: "
        "reinstall (pip install -e .)"
    )


def test_bastion_version_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    build = "compiled" if is_compiled() else "pure Python"
    assert capsys.readouterr().out.strip() == f"bastion {bastion.__version__} ({build})"


def test_the_changelog_has_the_version() -> None:
    headings = [
        line for line in (ROOT / "CHANGELOG.md").read_text().splitlines() if line.startswith("## [")
    ]
    assert any(line.startswith(f"## [{bastion.__version__}]") for line in headings), (
        f"CHANGELOG.md has no '## [{bastion.__version__}]' section"
    )


def test_the_files_the_metadata_names_exist() -> None:
    project = pyproject()["project"]
    for name in [project["readme"], *project["license-files"], "CHANGELOG.md"]:
        assert (ROOT / name).is_file(), f"{name} is named by the package but does not exist"
    manifest = (ROOT / "MANIFEST.in").read_text().splitlines()
    assert "include CHANGELOG.md" in manifest, "MANIFEST.in must put CHANGELOG.md in the sdist"
