"""What the compiled build (see setup.py) needs to know of a class, and whether it is in use.

A compiled class cannot be given attributes it does not declare, and only a class marked
``mypyc_attr(allow_interpreted_subclasses=True)`` can be subclassed by Python code: the
classes applications extend or decorate (``App``, ``Response``) are therefore never compiled
(what an ``App`` does for each request is, in ``bastion/app/dispatch.py``), and the handlers
an application may subclass carry the mark. mypy_extensions, which defines
it, comes with the compiler; without it the mark does nothing, as nothing needs it then.

A compiled coroutine passes an exception thrown into it (a task's cancellation) on to what it
awaits with the three-argument ``throw(type, value, traceback)``, which Python 3.12 deprecates:
awaiting anything but another compiled coroutine goes through :func:`awaiting`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Generator
from types import TracebackType
from typing import Any, TypeVar, cast

try:
    from mypy_extensions import mypyc_attr
except ImportError:

    def mypyc_attr(*args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
        return lambda cls: cls


_T = TypeVar("_T")


class _Awaiting:
    """What a compiled coroutine awaits in place of a future or an interpreted coroutine.

    mypyc's ``await`` throws into the awaited iterator with three arguments (its runtime's
    ``CPy_YieldFromErrorHandle``, as of mypy 2.4.1; mypyc/mypyc#1214). Python 3.12 deprecates
    that signature of ``coroutine.throw`` and of asyncio's future iterator, so every cancellation
    of a task waiting there warns, and where warnings are errors the warning replaces the
    ``CancelledError``: the task then dies of it, and ``asyncio.wait_for`` never turns its
    timeout into ``TimeoutError``. This iterator takes the three arguments and passes the
    exception on alone. Interpreted code gets the same semantics through it.
    """

    __slots__ = ("_inner",)

    def __init__(self, awaitable: Awaitable[Any]) -> None:
        self._inner: Generator[Any, Any, Any] = awaitable.__await__()

    def __await__(self) -> _Awaiting:
        return self

    def __next__(self) -> Any:
        return self._inner.send(None)

    def send(self, value: Any) -> Any:
        return self._inner.send(value)

    def throw(
        self,
        kind: type[BaseException] | BaseException,
        value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> Any:
        if value is None:
            return self._inner.throw(kind)
        if traceback is not None:
            value = value.with_traceback(traceback)
        return self._inner.throw(value)

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


def awaiting(awaitable: Awaitable[_T]) -> Awaitable[_T]:
    """``awaitable``, to be awaited by a compiled coroutine without the deprecated ``throw``."""
    return cast("Awaitable[_T]", _Awaiting(awaitable))


def is_compiled() -> bool:
    """Whether this installation runs the compiled request path."""
    from bastion.engine import connection

    return not connection.__file__.endswith(".py")


__all__ = ["awaiting", "is_compiled", "mypyc_attr"]
