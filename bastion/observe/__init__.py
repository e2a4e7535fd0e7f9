"""Observers: what reads the engine's counters and hooks and shows them to people.

Workers only count (:mod:`bastion.observe.metrics`, :mod:`bastion.observe.telemetry`); the
supervisor merges what they ship (:mod:`bastion.observe.aggregate`) and serves it.
"""

from bastion.observe.health import HealthChecks

__all__ = ["HealthChecks"]
