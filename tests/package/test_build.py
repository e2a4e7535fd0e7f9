"""Which request path is running: compiled (mypyc) or pure Python, and that they agree.

CI runs the whole suite both ways and says which it expects in ``BASTION_EXPECT_COMPILED``,
so that a build that silently fell back to pure Python cannot pass for a compiled one.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import importlib
import os
import warnings
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from bastion._compiled import awaiting, is_compiled

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


# Module constants that cannot be Final: mypyc leaves a Final tuple of floats unset at import
# (the first two), and the tests set the last one.
NOT_FINAL = {
    "bastion/observe/metrics.py": {"DURATION_BUCKETS"},
    "bastion/balancer/stats.py": {"LATENCY_BUCKETS"},
    "bastion/static/cache.py": {"SETTLE"},
}


def test_compiled_modules_declare_their_constants_final() -> None:
    # Compiled code reads a Final module constant directly and any other module-level name
    # from the module's dictionary, on every use; a tuple assignment is never Final.
    found: list[str] = []
    for path in hot_path():
        tree = ast.parse((ROOT / path).read_text())
        allowed = NOT_FINAL.get(path, set())
        for node in tree.body:
            if not isinstance(node, ast.Assign):
                continue
            for target in node.targets:
                names = target.elts if isinstance(target, ast.Tuple) else [target]
                for name in names:
                    if (
                        isinstance(name, ast.Name)
                        and name.id.lstrip("_")[:1].isupper()
                        and name.id.upper() == name.id
                        and name.id not in allowed
                    ):
                        found.append(f"{path}:{node.lineno} {name.id}")
    assert not found, "module constants not declared Final: " + ", ".join(found)


def test_compiled_coroutines_await_through_awaiting() -> None:
    # A compiled coroutine throws into what it awaits with the three-argument throw() that
    # Python 3.12 deprecates; only another compiled coroutine takes that silently, so
    # everything else is awaited through bastion._compiled.awaiting. Coroutines are told
    # apart by name: a call to a name no compiled module defines as a coroutine is not one.
    trees = {path: ast.parse((ROOT / path).read_text()) for path in hot_path()}
    coroutines = {
        node.name
        for tree in trees.values()
        for node in ast.walk(tree)
        if isinstance(node, ast.AsyncFunctionDef)
    }
    found: list[str] = []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Await):
                continue
            called = node.value.func if isinstance(node.value, ast.Call) else None
            name = getattr(called, "id", getattr(called, "attr", None))
            if name != "awaiting" and name not in coroutines:
                found.append(f"{path}:{node.lineno}")
    assert not found, "awaited directly in compiled modules: " + ", ".join(found)


class _Recording:
    """An awaitable whose iterator records how it is thrown into."""

    def __init__(self) -> None:
        self.thrown: list[tuple[Any, ...]] = []

    def __await__(self) -> Generator[Any, Any, Any]:
        return self  # type: ignore[return-value]

    def __next__(self) -> None:
        return None

    def send(self, value: Any) -> None:
        return None

    def throw(self, *args: Any) -> None:
        self.thrown.append(args)
        raise args[0]


def test_awaiting_passes_the_exception_of_a_three_argument_throw_on_alone() -> None:
    recording = _Recording()
    waiting = awaiting(recording).__await__()
    error = asyncio.CancelledError()
    with pytest.raises(asyncio.CancelledError) as raised:
        waiting.throw(asyncio.CancelledError, error, None)
    assert raised.value is error
    assert recording.thrown == [(error,)]


def test_awaiting_a_future_cancels_and_completes_as_awaiting_it_does() -> None:
    async def wait(future: asyncio.Future[int]) -> int:
        return await awaiting(future)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[int] = loop.create_future()
        loop.call_soon(done.set_result, 7)
        assert await wait(done) == 7
        task = loop.create_task(wait(loop.create_future()))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(asyncio.TimeoutError):
            await awaiting(asyncio.wait_for(loop.create_future(), 0.01))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        asyncio.run(main())
