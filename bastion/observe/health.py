"""Readiness checks an application registers: each runs in the worker, with a timeout.

A check is a plain or ``async`` callable taking no arguments. It passes by returning ``None``
or ``True`` and fails by returning ``False`` or raising (the exception's message is the
detail shown in ``/readyz?verbose``). Checks run once a second in every worker, off the
request path: ``async`` ones on the worker's loop, plain ones on a thread of their own (never
on the pool that serves requests), so a probe never waits for one, and a check that hangs is
reported as timed out while it stays hung instead of being started again and again.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bastion.engine.bounded import within

Check = Callable[[], Any]
DEFAULT_TIMEOUT = 5.0


@dataclass
class _Registered:
    name: str
    fn: Check
    timeout: float
    is_async: bool
    running: threading.Event = field(default_factory=threading.Event)
    result: dict[str, Any] = field(default_factory=dict)


class HealthChecks:
    """The checks of one application, and their latest results."""

    def __init__(self) -> None:
        self._checks: list[_Registered] = []

    def __len__(self) -> int:
        return len(self._checks)

    def add(self, fn: Check, name: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        name = name or getattr(fn, "__name__", None) or repr(fn)
        if any(check.name == name for check in self._checks):
            raise ValueError(f"a health check named {name!r} is already registered")
        if timeout <= 0:
            raise ValueError("a health check's timeout must be positive")
        is_async = inspect.iscoroutinefunction(fn)
        self._checks.append(_Registered(name, fn, timeout, is_async))

    def extend(self, other: HealthChecks) -> None:
        for check in other._checks:
            self.add(check.fn, check.name, check.timeout)

    @classmethod
    def of(cls, handler: object) -> HealthChecks:
        """The checks an application registered (``App.health_checks``), wrappers seen through."""
        checks = cls()
        for fn, name, timeout in getattr(handler, "health_checks", None) or ():
            checks.add(fn, name, timeout)
        return checks

    async def run_all(self) -> None:
        if self._checks:
            await asyncio.gather(*(self._run(check) for check in self._checks))

    async def _run(self, check: _Registered) -> None:
        started = time.monotonic()
        if check.running.is_set():
            # Still stuck in its thread from an earlier round: report it, do not pile on.
            check.result = _verdict(False, f"timed out after {check.timeout:g}s (still running)")
            return
        try:
            if check.is_async:
                outcome = await within(_call(check.fn), check.timeout)
            else:
                outcome = await within(_in_thread(check), check.timeout)
        except asyncio.TimeoutError:
            check.result = _verdict(False, f"timed out after {check.timeout:g}s")
        except Exception as error:
            check.result = _verdict(False, f"{type(error).__name__}: {error}")
        else:
            passed = outcome is None or outcome is True
            check.result = _verdict(passed, "" if passed else f"returned {outcome!r}")
        check.result["seconds"] = round(time.monotonic() - started, 6)

    def results(self) -> dict[str, dict[str, Any]]:
        """Name → ``{"ok": bool, "detail": str, "seconds": float}`` for checks that have run."""
        return {check.name: dict(check.result) for check in self._checks if check.result}


def load_check(spec: str) -> Check:
    """``module:function`` (or ``module:object.method``) imported; ValueError if not callable."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"a health check is module:function, not {spec!r}")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"health check {spec} is not callable")
    return target  # type: ignore[no-any-return]


def _verdict(ok: bool, detail: str) -> dict[str, Any]:
    return {"ok": ok, "detail": detail}


async def _call(fn: Callable[[], Awaitable[Any]]) -> Any:
    return await fn()


def _in_thread(check: _Registered) -> asyncio.Future[Any]:
    """Run a plain check on a thread of its own; the future settles on the loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    check.running.set()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def work() -> None:
        try:
            result, error = check.fn(), None
        except BaseException as exc:
            result, error = None, exc
        finally:
            check.running.clear()
        # A closed loop means nobody waits for this result any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name=f"bastion-health-{check.name}", daemon=True).start()
    return future
