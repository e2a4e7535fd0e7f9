"""MkDocs hooks: the generated reference, and links that leave the documentation folder.

``mkdocs.yml`` names this file under ``hooks:``. A page holding ``<!-- generated: cli -->`` or
``<!-- generated: config -->`` gets the tables :mod:`clireference` renders from the CLI's own
parsers. A relative link from a page to a file of the repository outside ``docs/`` (an
example, a benchmark script) works when the Markdown is read in the repository but has no
page on the site: it becomes the file's path, and a link to a file that does not exist is
reported as a warning, which ``--strict`` turns into a failed build. In the API reference,
the docstrings' Sphinx roles (``:class:`App```) are shown as plain code.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import clireference

log = logging.getLogger("mkdocs.plugins.bastion")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s#]+)(#[^)\s]*)?\)")
# Docstrings are written with Sphinx roles, which mkdocstrings leaves as text before the code.
_ROLE = re.compile(r":(?:class|func|meth|mod|attr|exc|data|obj):(<code>)~?")


def outside_link(target: str, page_path: str, docs_dir: str) -> str | None:
    """The repository path a relative link leads to when it leaves ``docs_dir``, else None."""
    if "://" in target or target.startswith(("/", "mailto:")):
        return None
    resolved = os.path.normpath(os.path.join(docs_dir, os.path.dirname(page_path), target))
    if resolved == docs_dir or resolved.startswith(docs_dir + os.sep):
        return None
    return os.path.relpath(resolved, os.path.dirname(docs_dir))


def rewrite_outside_links(markdown: str, page_path: str, docs_dir: str) -> str:
    def replace(match: re.Match[str]) -> str:
        path = outside_link(match.group(2), page_path, docs_dir)
        if path is None:
            return match.group(0)
        if not os.path.exists(os.path.join(os.path.dirname(docs_dir), path)):
            log.warning("%s: link to %s, which does not exist", page_path, match.group(2))
        text = match.group(1)
        return text if f"`{path}`" in text or text == f"`{path}`" else f"{text} (`{path}`)"

    return _LINK.sub(replace, markdown)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    markdown = clireference.expand(markdown)
    docs_dir = os.path.abspath(config["docs_dir"])
    return rewrite_outside_links(markdown, page.file.src_path, docs_dir)


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    return _ROLE.sub(r"\1", html)
