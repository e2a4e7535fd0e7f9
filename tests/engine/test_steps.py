"""A server's first steps (bastion/engine/steps.py): one generator, coroutine after coroutine."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from bastion.engine.eager import RAISED, RETURNED, SUSPENDED, continue_as_task
from bastion.engine.steps import FirstSteps

_SEEN: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="")


async def _returns(value: Any) -> Any:
    return value


async def _raises(error: BaseException) -> None:
    raise error


def _step(steps: FirstSteps, coro: Any) -> tuple[int, Any]:
    value = steps.run(contextvars.copy_context(), coro)
    return steps.outcome, value


def test_results_and_errors_come_back_in_turn_through_one_generator() -> None:
    steps = FirstSteps()
    error = ValueError("boom")
    assert _step(steps, _returns(1)) == (RETURNED, 1)
    assert _step(steps, _raises(error)) == (RAISED, error)
    assert _step(steps, _returns((1, 2))) == (RETURNED, (1, 2))
    assert _step(steps, _raises(KeyboardInterrupt()))[0] == RAISED
    assert _step(steps, _returns(None)) == (RETURNED, None)


def test_each_first_step_runs_in_the_context_it_is_given() -> None:
    async def sets(value: str) -> str:
        before = _SEEN.get()
        _SEEN.set(value)
        return before

    steps = FirstSteps()
    first, second = contextvars.copy_context(), contextvars.copy_context()
    assert steps.run(first, sets("a")) == ""
    assert steps.run(second, sets("b")) == ""
    assert first[_SEEN] == "a" and second[_SEEN] == "b"
    assert _SEEN.get() == ""


def test_a_coroutine_that_waits_is_finished_by_a_task_while_others_go_on() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        steps = FirstSteps()
        gate = loop.create_future()
        done: list[tuple[Any, Any, BaseException | None]] = []

        async def waits() -> str:
            return f"got {await gate}"

        context = contextvars.copy_context()
        yielded = steps.run(context, waits())
        assert steps.outcome == SUSPENDED
        task = continue_as_task(
            loop,
            context,
            steps.take_waiting(),
            yielded,
            lambda arg, result, error: done.append((arg, result, error)),
            "waits",
        )
        # The generator the first coroutine waits in is its own; the next ones get another.
        assert _step(steps, _returns(2)) == (RETURNED, 2)
        gate.set_result("it")
        await task
        assert done == [("waits", "got it", None)]
        assert _step(steps, _returns(3)) == (RETURNED, 3)

    asyncio.run(main())


def test_a_waiting_coroutine_raising_later_or_cancelled_is_reported_so() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        steps = FirstSteps()
        ended: list[BaseException | None] = []
        cancelled_inside: list[bool] = []

        async def fails_later() -> None:
            await asyncio.sleep(0)
            raise LookupError("late")

        async def waits_forever() -> None:
            try:
                await loop.create_future()
            except asyncio.CancelledError:
                cancelled_inside.append(True)
                raise

        tasks = []
        for coro in (fails_later(), waits_forever()):
            context = contextvars.copy_context()
            yielded = steps.run(context, coro)
            assert steps.outcome == SUSPENDED
            tasks.append(
                continue_as_task(
                    loop,
                    context,
                    steps.take_waiting(),
                    yielded,
                    lambda arg, result, error: ended.append(error),
                    None,
                )
            )
        await asyncio.sleep(0.01)
        tasks[1].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(ended[0], LookupError)
        assert isinstance(ended[1], asyncio.CancelledError)
        assert cancelled_inside == [True]

    asyncio.run(main())


def test_a_first_step_started_inside_another_runs_on_its_own() -> None:
    steps = FirstSteps()

    async def outer() -> tuple[int, Any]:
        inner = _step(steps, _returns("inner"))
        return inner

    assert _step(steps, outer()) == (RETURNED, (RETURNED, "inner"))

    async def outer_waiting() -> Any:
        value = steps.run(contextvars.copy_context(), asyncio.sleep(0, "slept"))
        return steps.outcome, steps.take_waiting() is not None, value

    assert _step(steps, outer_waiting()) == (RETURNED, (SUSPENDED, True, None))
    assert _step(steps, _returns("after")) == (RETURNED, "after")


def test_what_a_first_step_returned_is_not_kept_alive() -> None:
    import gc
    import weakref

    class Result:
        pass

    steps = FirstSteps()
    gc.disable()
    try:
        result = steps.run(contextvars.copy_context(), _returns(Result()))
        assert steps.outcome == RETURNED
        gone = weakref.ref(result)
        del result
        assert gone() is None
    finally:
        gc.enable()


@pytest.mark.parametrize("value", [("not", "a", "marker"), (object(), 1)])
def test_a_coroutine_returning_a_tuple_returns_it(value: tuple[Any, ...]) -> None:
    assert _step(FirstSteps(), _returns(value)) == (RETURNED, value)
