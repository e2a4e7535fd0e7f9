"""A deadline on one awaitable that never loses a cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

_T = TypeVar("_T")


async def within(work: Awaitable[_T], timeout: float) -> _T:
    """``work``'s result, or ``asyncio.TimeoutError`` after ``timeout`` seconds.

    Not ``asyncio.wait_for``: before Python 3.12 it can swallow a cancellation that arrives
    as ``work`` finishes, so a loop of checks told to stop would go on for ever (and whatever
    awaits its end would wait for ever too). ``asyncio.wait`` on a task never does; ``work``
    is cancelled when the deadline passes or the caller is cancelled.
    """
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait((task,), timeout=timeout)
    except BaseException:
        task.cancel()
        raise
    if not done:
        task.cancel()
        raise asyncio.TimeoutError
    return task.result()
