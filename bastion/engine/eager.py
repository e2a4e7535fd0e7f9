"""Run a coroutine eagerly: its first step happens now, a Task is made only if it suspends.

Most request handlers finish without ever waiting, and a Task per request (creation, a
scheduled step, a done callback, one loop iteration later) is a large share of a fast
handler's cost. Running the first step inline also lets a pipelined batch of quick handlers
answer within the same ``data_received`` call, so their responses leave in one write.

Python 3.12+ has eager tasks built in and they set ``asyncio.current_task()`` during the first
step. On 3.11 the first step runs before any Task exists, so code that needs a current task
before its first ``await`` (``asyncio.timeout()``, anyio cancel scopes) must not be run this
way: adapters hosting third-party code (ASGI) pass ``eager=False`` on 3.11.

The native App runs its handlers through a compiled copy of :func:`run_eagerly`'s eager path
(``bastion/app/dispatch.py``), which uses the pieces here that are better left to Python: the
generator its first steps run through before 3.12 (:func:`stepping`, kept by
``bastion/engine/steps.py``), the hand-over of a coroutine that suspended to a Task
(:func:`continue_as_task`) and the report of how that Task ended.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import types
from collections.abc import Callable, Coroutine, Generator
from functools import partial
from typing import Any, Final

OnDone = Callable[[Any, Any, BaseException | None], None]

# Eager tasks (Task(eager_start=True), asyncio.eager_task_factory) are 3.12+.
NATIVE_EAGER: Final = sys.version_info >= (3, 12)


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
            if yielded.__class__ is tuple and len(yielded) == 2 and yielded[0] is STEP_DONE:
                # The coroutine waited inside stepping(), which has now passed on its result.
                return yielded[1]


async def _continue(coro: Coroutine[Any, Any, Any], yielded: Any) -> Any:
    return await _Resume(coro, yielded)


def report(on_done: OnDone, arg: Any, task: asyncio.Task[Any]) -> None:
    """Tell ``on_done`` how ``task`` ended: ``on_done(arg, result, error)``."""
    if task.cancelled():
        on_done(arg, None, asyncio.CancelledError())
        return
    error = task.exception()
    on_done(arg, None if error is not None else task.result(), error)


# What first_step says of a coroutine's first step.
SUSPENDED: Final = 0  # it yielded (it waits for something): the value is what it yielded
RETURNED: Final = 1  # it returned: the value is its result
RAISED: Final = 2  # it raised: the value is the exception


def first_step(coro: Coroutine[Any, Any, Any]) -> tuple[int, Any]:
    """Run ``coro`` up to its first suspension: ``(SUSPENDED | RETURNED | RAISED, value)``.

    For compiled callers (bastion/app/dispatch.py): the StopIteration that ends a coroutine
    is caught here, where it is cheap, rather than in compiled code, which records a
    traceback entry for every exception it catches.
    """
    try:
        return SUSPENDED, coro.send(None)
    except StopIteration as stop:
        return RETURNED, stop.value
    except BaseException as exc:
        return RAISED, exc


# What stepping() yields with a coroutine's result: a private marker, so that it is never
# taken for what a coroutine yields when it waits (asyncio's coroutines yield futures).
STEP_DONE: Final = object()


@types.coroutine
def stepping() -> Generator[Any, Any, None]:
    """Run each coroutine sent in to its first suspension; yield ``(STEP_DONE, result)``
    when it returned. For :class:`bastion.engine.steps.FirstSteps`.

    ``yield from`` receives the coroutine's return value without a StopIteration, and the
    generator's one frame serves coroutine after coroutine. A coroutine that waits yields
    through it (the generator is then its own, to be resumed by a Task); one that raises
    ends it. The last coroutine is held until the next arrives: it has finished by then,
    and its result went out with the marker.
    """
    coro = yield None
    while True:
        coro = yield (STEP_DONE, (yield from coro))


def continue_as_task(
    loop: asyncio.AbstractEventLoop,
    context: contextvars.Context,
    coro: Coroutine[Any, Any, Any],
    yielded: Any,
    on_done: OnDone,
    arg: Any,
) -> asyncio.Task[Any]:
    """Hand ``coro``, suspended at its first step (which yielded ``yielded``), over to a Task
    in ``context``; ``on_done(arg, result, error)`` is called when it ends. ``coro`` may be
    the :func:`stepping` generator the coroutine waits in."""
    task = context.run(loop.create_task, _continue(coro, yielded))
    task.add_done_callback(partial(report, on_done, arg))
    return task


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
        task.add_done_callback(partial(report, on_done, arg))
        return task
    if NATIVE_EAGER:
        # What asyncio.eager_task_factory makes, without its Python frame and a second copy
        # of the context.
        task = asyncio.Task(coro, loop=loop, context=context, eager_start=True)  # type: ignore[call-arg]
        if task.done():
            report(on_done, arg, task)
            return None
        task.add_done_callback(partial(report, on_done, arg))
        return task
    outcome, value = context.run(first_step, coro)
    if outcome == SUSPENDED:
        return continue_as_task(loop, context, coro, value, on_done, arg)
    # Reported after first_step's except clauses, so a later error does not chain onto
    # StopIteration.
    if outcome == RAISED:
        on_done(arg, None, value)
    else:
        on_done(arg, value, None)
    return None
