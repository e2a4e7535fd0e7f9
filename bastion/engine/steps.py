"""A request coroutine's first step without a StopIteration (Python before 3.12).

Most handlers return without ever waiting. Run with ``coro.send(None)``, such a coroutine
ends in a StopIteration that is made, raised and caught in a Python frame
(:func:`bastion.engine.eager.first_step`) on every request. A generator that delegates to
the coroutine with ``yield from`` is handed its return value by the interpreter instead,
with no exception at all. :class:`FirstSteps` keeps one such generator
(:func:`bastion.engine.eager.stepping`) for all the first steps its server runs: each one
resumes it rather than starting a frame of its own.

A coroutine that waits leaves the generator suspended inside it. That generator is then the
coroutine's for good (a Task resumes it, :func:`bastion.engine.eager.continue_as_task`), and
the next first step gets a new one, as it does after a coroutine raised (the exception ends
the generator it passed through). A first step begun while another is running on the same
generator (a handler driving a connection of its own server inline) runs the ordinary way.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Final

from bastion.engine.eager import RAISED, RETURNED, STEP_DONE, SUSPENDED, first_step, stepping

_STEP_DONE: Final = STEP_DONE
_FIRST_STEP: Final = first_step
_TUPLE: Final = tuple


class FirstSteps:
    """One server's first steps (see the module); used on its loop's thread only."""

    __slots__ = ("_generator", "_send", "_busy", "outcome", "_waiting")

    def __init__(self) -> None:
        self._generator, self._send = _started()
        self._busy = False
        # What the last run's first step did: SUSPENDED, RETURNED or RAISED.
        self.outcome = RETURNED
        self._waiting: Any = None

    def _renew(self) -> None:
        self._generator, self._send = _started()

    def run(self, context: contextvars.Context, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coro``'s first step in ``context``; :attr:`outcome` says what it did.

        Returns its result when it returned, its exception when it raised, and what it
        yielded when it waits; then :meth:`take_waiting` is what a Task must resume.
        """
        if self._busy:
            step: tuple[int, Any] = context.run(_FIRST_STEP, coro)
            self.outcome, value = step
            if self.outcome == SUSPENDED:
                self._waiting = coro
            return value
        self._busy = True
        try:
            yielded = context.run(self._send, coro)
        except BaseException as error:
            self._busy = False
            self._renew()
            self.outcome = RAISED
            return error
        self._busy = False
        if type(yielded) is _TUPLE and len(yielded) == 2 and yielded[0] is _STEP_DONE:
            self.outcome = RETURNED
            return yielded[1]
        self._waiting = self._generator
        self._renew()
        self.outcome = SUSPENDED
        return yielded

    def take_waiting(self) -> Any:
        """What resumes the coroutine whose first step waited: the generator it waits in."""
        waiting = self._waiting
        self._waiting = None
        return waiting


def _started() -> tuple[Generator[Any, Any, None], Callable[[Any], Any]]:
    generator = stepping()
    generator.send(None)
    return generator, generator.send
