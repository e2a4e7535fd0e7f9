"""The site builds with ``mkdocs build --strict``, and its figures match their sources.

The build needs the ``docs`` extra (``pip install -e '.[docs]'``); without it these tests
are skipped, except under ``.ci/docs``, which installs it and sets BASTION_DOCS_REQUIRED.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.pages import DOCS, README, ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

sys.path.insert(0, str(DOCS / "_build"))

import figures
import hooks


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    if not os.environ.get("BASTION_DOCS_REQUIRED"):  # set by .ci/docs: there, never skip
        for module in ("mkdocs", "material", "mkdocstrings"):
            pytest.importorskip(
                module, reason="the docs extra is not installed: pip install -e '.[docs]'"
            )
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


def test_the_figures_are_up_to_date() -> None:
    stale = figures.stale(figures.figures())
    assert not stale, f"out of date in docs/images: {stale}; run python docs/_build/figures.py"


def test_a_link_out_of_the_docs_becomes_the_files_path() -> None:
    page = "tutorials/x.md"
    text = "See [the example](../../examples/microservices/README.md) and [a page](../index.md)."
    assert hooks.rewrite_outside_links(text, page, str(DOCS)) == (
        "See the example (`examples/microservices/README.md`) and [a page](../index.md)."
    )


def test_a_link_out_of_the_docs_to_nothing_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    hooks.rewrite_outside_links("[gone](../bench/gone.py)", "index.md", str(DOCS))
    assert "index.md: link to ../bench/gone.py, which does not exist" in caplog.text


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    built = mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert built.returncode == 0, built.stderr
    reference = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    assert "--max-body-size" in reference and "--upstream" in reference
    assert "bastion.App" in (tmp_path / "site" / "reference" / "api" / "index.html").read_text()


def test_a_broken_link_fails_the_build_naming_it(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(DOCS / "_build", docs / "_build")
    (docs / "index.md").write_text("# Home\n\nSee [the guide](guide.md) and [this](missing.md).\n")
    (docs / "guide.md").write_text("# Guide\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text(
        "site_name: t\nstrict: true\nexclude_docs: |\n  _build/\nhooks:\n  - docs/_build/hooks.py\n"
        "nav:\n  - index.md\n  - guide.md\n"
    )
    built = mkdocs_build(config, tmp_path / "site")
    assert built.returncode != 0
    assert "missing.md" in built.stderr


def test_sphinx_roles_in_docstrings_become_code() -> None:
    html = "Pass it to :func:<code>bastion.engine.run</code> or :class:<code>~bastion.App</code>."
    assert hooks.on_page_content(html, None, None, None) == (
        "Pass it to <code>bastion.engine.run</code> or <code>bastion.App</code>."
    )


def test_the_site_is_published_where_the_package_and_the_readme_say() -> None:
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    published = urls["Documentation"]
    found = re.search(r"^site_url:\s*(\S+)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)
    assert found, "mkdocs.yml has no site_url"
    assert found.group(1) == published, (
        f"mkdocs.yml's site_url is {found.group(1)}, pyproject.toml's Documentation URL {published}"
    )
    assert published in README.read_text(), f"README.md does not point to {published}"
