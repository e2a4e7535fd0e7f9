"""Reloading ``bastion balance`` in place: new routes for the running workers.

A reload (SIGHUP, or the config file changing) builds the whole next plan first, so a file
that does not load is refused before anything changes. Then the running plan's
:class:`LiveBalance` (its ``ServePlan.adopt``) compares the two: when the engine settings are
the same, only what is balanced changed, and it hands the new configuration to the running
:class:`~bastion.balancer.control.BalancerControl`, which sends it to every worker; the
workers keep their connections, pools and passive health signals, and requests in flight
finish on the configuration they started with. When an engine setting changed (a bind, the
worker count, a limit, a TLS file), only new workers can take it, and the supervisor starts
a new generation as before.
"""

from __future__ import annotations

import os
from typing import Any

from bastion.balancer.control import BalancerControl
from bastion.balancer.health import HealthJob
from bastion.cli.settings import Settings
from bastion.process.workers import ServePlan

# Files an engine setting names whose contents matter: a renewed certificate at the same
# path must still be loaded by new workers.
_FILES = ("tls_cert", "tls_key", "tls_ca")


def engine_key(settings: Settings) -> tuple[Any, ...]:
    """What must be equal for two settings to run on the same workers."""
    files: list[tuple[str, int | None, int | None, int | None]] = []
    for name in _FILES:
        path = settings[name]
        if path:
            try:
                stat = os.stat(path)
                files.append((name, stat.st_mtime_ns, stat.st_size, stat.st_ino))
            except OSError:
                files.append((name, None, None, None))
    return (dict(settings.values), tuple(files))


class LiveBalance:
    """``ServePlan.adopt`` of a ``bastion balance`` plan; ``running`` holds the one whose
    jobs run now (its health checks' verdicts carry over to a new generation)."""

    def __init__(
        self,
        engine: tuple[Any, ...],
        control: BalancerControl,
        health: HealthJob,
        running: list[LiveBalance],
        jobs: list[Any],
    ) -> None:
        """``jobs``: the plan's; those with an ``adopt(new_job)`` method (discovery) are
        handed their counterpart in the next plan."""
        self.engine = engine
        self.control = control
        self.health = health
        self.running = running
        self.jobs = jobs

    def __call__(self, plan: ServePlan) -> bool:
        new = plan.adopt
        if not isinstance(new, LiveBalance) or new.engine != self.engine:
            return False
        ours = {type(job): job for job in self.jobs if hasattr(job, "adopt")}
        theirs = {type(job): job for job in new.jobs if hasattr(job, "adopt")}
        if ours.keys() != theirs.keys():
            return False  # a job to start or to stop: a plan of its own
        # The new plan is dropped; this one's jobs go on running.
        self.running[:] = [self]
        if new.control.config != self.control.config:
            self.control.apply(new.control.config)
        for kind, job in ours.items():
            job.adopt(theirs[kind])
        return True
