"""Which request path is running: compiled (mypyc) or pure Python, and that they agree.

CI runs the whole suite both ways and says which it expects in ``BASTION_EXPECT_COMPILED``,
so that a build that silently fell back to pure Python cannot pass for a compiled one.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import os
from pathlib import Path

import pytest

from bastion._compiled import is_compiled

ROOT = Path(__file__).resolve().parent.parent.parent


def hot_path() -> list[str]:
    """The modules setup.py compiles: compiled-modules.txt, read the way setup.py reads it."""
    listed = (ROOT / "compiled-modules.txt").read_text().splitlines()
    return [name for line in listed if (name := line.partition("#")[0].strip())]


def test_the_build_is_the_one_expected() -> None:
    expected = os.environ.get("BASTION_EXPECT_COMPILED")
    if expected is None:
        pytest.skip("BASTION_EXPECT_COMPILED is not set (CI sets it)")
    assert is_compiled() == (expected == "1"), (
        f"BASTION_EXPECT_COMPILED={expected}, but the request path is "
        + ("compiled" if is_compiled() else "pure Python")
    )


def test_the_hot_path_is_all_compiled_or_all_pure() -> None:
    # mypyc's modules share one library: a mix means a stale or partial build.
    paths = hot_path()
    assert paths, "compiled-modules.txt lists no modules"
    kinds: dict[str, bool] = {}
    for path in paths:
        module = importlib.import_module(path[: -len(".py")].replace("/", "."))
        kinds[path] = not str(module.__file__).endswith(".py")
    assert len(set(kinds.values())) == 1, f"some modules compiled, some not: {kinds}"
    assert set(kinds.values()) == {is_compiled()}


def test_no_compiled_module_defines_an_exception() -> None:
    # A compiled subclass of a built-in exception is either refused by mypyc or, for
    # Exception itself, compiled in a way that `except` clauses elsewhere no longer match:
    # exceptions live in modules that stay Python (bastion/engine/errors.py and the like).
    builtin_exceptions = {
        name
        for name, value in vars(builtins).items()
        if isinstance(value, type) and issubclass(value, BaseException)
    }
    found: list[str] = []
    for path in hot_path():
        tree = ast.parse((ROOT / path).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = {getattr(base, "id", getattr(base, "attr", "")) for base in node.bases}
                named = any(base.endswith(("Error", "Exception")) for base in bases)
                if named or bases & builtin_exceptions:
                    found.append(f"{path}: class {node.name}")
    assert not found, "exceptions in compiled modules: " + ", ".join(found)
