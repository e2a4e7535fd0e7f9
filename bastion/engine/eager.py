"""Run a coroutine eagerly: its first step happens now, a Task is made only if it suspends.

Most request handlers finish without ever waiting, and a Task per request (creation, a
scheduled step, a done callback, one loop iteration later) is a large share of a fast
handler's cost. Running the first step inline also lets a pipelined batch of quick handlers
answer within the same ``data_received`` call, so their responses leave in one write.

Python 3.12+ has eager tasks built in and they set ``asyncio.current_task()`` during the first
step. On 3.11 the first step runs before any Task exists, so code that needs a current task
before its first ``await`` (``asyncio.timeout()``, anyio cancel scopes) must not be run this
way: adapters hosting third-party code (ASGI) pass ``eager=False`` on 3.11.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Callable, Coroutine, Generator
from functools import partial
from typing import Any

OnDone = Callable[[Any, Any, BaseException | None], None]

_eager_factory = getattr(asyncio, "eager_task_factory", None)
NATIVE_EAGER = _eager_factory is not None and sys.version_info >= (3, 12)


class _Resume:
    """Hands a coroutine that already ran its first step over to a Task, mid-flight."""

    __slots__ = ("_coro", "_yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self._coro = coro
        self._yielded = yielded

    def __await__(self) -> Generator[Any, None, Any]:
        coro = self._coro
        yielded = self._yielded
        while True:
            try:
                yield yielded
            except BaseException as exc:
                try:
                    yielded = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    yielded = coro.send(None)
                except StopIteration as stop:
                    return stop.value


async def _continue(coro: Coroutine[Any, Any, Any], yielded: Any) -> Any:
    return await _Resume(coro, yielded)


def _report(on_done: OnDone, arg: Any, task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        on_done(arg, None, asyncio.CancelledError())
        return
    error = task.exception()
    on_done(arg, None if error is not None else task.result(), error)


def run_eagerly(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, Any],
    on_done: OnDone,
    arg: Any = None,
    eager: bool = True,
) -> asyncio.Task[Any] | None:
    """Run ``coro``; call ``on_done(arg, result, error)`` when it ends, inline if it never waits."""
    context = contextvars.copy_context()
    if not eager:
        # create_task(context=) is 3.11+; a Task takes the context it is created in.
        task = context.run(loop.create_task, coro)
        task.add_done_callback(partial(_report, on_done, arg))
        return task
    if NATIVE_EAGER:
        task = context.run(_eager_factory, loop, coro)  # type: ignore[arg-type, misc]
        if task.done():
            _report(on_done, arg, task)
            return None
        task.add_done_callback(partial(_report, on_done, arg))
        return task
    try:
        yielded = context.run(coro.send, None)
    except StopIteration as stop:
        result: Any = stop.value
        error: BaseException | None = None
    except BaseException as exc:
        result, error = None, exc
    else:
        task = context.run(loop.create_task, _continue(coro, yielded))
        task.add_done_callback(partial(_report, on_done, arg))
        return task
    # Reported outside the except clauses so a later error does not chain onto StopIteration.
    on_done(arg, result, error)
    return None
