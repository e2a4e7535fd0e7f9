"""The retry budget: retries may add at most a share of the traffic, never a storm.

When every server of a pool is failing, a retry per failed request doubles the load on a pool
that is already down. The budget caps retries over a sliding window of ten one-second slots:
at most ``ratio`` of the requests seen in the window, plus ``min_per_s`` per second so a
quiet route can still retry at all (Envoy's and Finagle's retry budgets work the same way).
"""

from __future__ import annotations

from typing import Final

_SLOTS: Final = 10


class RetryBudget:
    """Counts requests and retries per second; answers whether one more retry fits."""

    __slots__ = ("ratio", "floor", "_second", "_requests", "_retries", "_request_sum", "_retry_sum")

    def __init__(self, ratio: float, min_per_s: float) -> None:
        self.ratio = ratio
        self.floor = min_per_s * _SLOTS
        self._second = 0
        self._requests = [0] * _SLOTS
        self._retries = [0] * _SLOTS
        self._request_sum = 0
        self._retry_sum = 0

    def _advance(self, now: float) -> int:
        second = int(now)
        if second != self._second:
            # Clear the slots of the seconds that passed since the last call (all, after a
            # quiet spell of ten seconds or more).
            for step in range(min(second - self._second, _SLOTS)):
                slot = (self._second + step + 1) % _SLOTS
                self._request_sum -= self._requests[slot]
                self._retry_sum -= self._retries[slot]
                self._requests[slot] = 0
                self._retries[slot] = 0
            self._second = second
        return second % _SLOTS

    def record_request(self, now: float) -> None:
        slot = self._advance(now)
        self._requests[slot] += 1
        self._request_sum += 1

    def try_retry(self, now: float) -> bool:
        """Take one retry from the budget; False when it is spent."""
        slot = self._advance(now)
        if self._retry_sum >= self.floor + self.ratio * self._request_sum:
            return False
        self._retries[slot] += 1
        self._retry_sum += 1
        return True
