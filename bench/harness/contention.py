"""Detect other work on the machine during a measured run.

With two cores, both busy by design (server and wrk), any third process steals from one of
them and the row is wrong without any visible error. The load average cannot tell, since
the benchmark itself keeps it near 2, so this compares the machine's CPU time (from
/proc/stat) against the CPU time of the server's process tree and of wrk.
"""

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

from bench.harness import procs

CLK_TCK = os.sysconf("SC_CLK_TCK")
# Above this share of one core used by other processes, a row is flagged as disturbed.
BUSY_THRESHOLD_PCT = 10.0


def _machine_busy_ticks() -> int:
    """user + nice + system over all cores; irq/softirq are left out as they are not
    charged to any process (loopback packet processing lands there)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    user, nice, system = (int(v) for v in fields[1:4])
    return user + nice + system


def _process_ticks(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # Fields after the ")" that closes the command name; utime and stime are 14 and 15.
    rest = stat.rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


def _children_ticks() -> float:
    """CPU time of waited-for children of this process (wrk), in clock ticks."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * CLK_TCK


@dataclass
class Snapshot:
    at: float
    machine: int
    server: int
    children: float
    own: int


def snapshot(server_pid: int) -> Snapshot:
    return Snapshot(
        at=time.monotonic(),
        machine=_machine_busy_ticks(),
        server=sum(_process_ticks(pid) for pid in procs.process_tree(server_pid)),
        children=_children_ticks(),
        own=_process_ticks(os.getpid()),
    )


def foreign_cpu_pct(before: Snapshot, after: Snapshot) -> float:
    """Share of one core used by processes other than server, wrk and this harness."""
    ours = (
        (after.server - before.server)
        + (after.children - before.children)
        + (after.own - before.own)
    )
    foreign = (after.machine - before.machine) - ours
    elapsed_ticks = max(1e-9, (after.at - before.at) * CLK_TCK)
    return max(0.0, 100.0 * foreign / elapsed_ticks)


def server_cpu_us(before: Snapshot, after: Snapshot, requests: int) -> float | None:
    """CPU time the server's process tree spent per request, in microseconds."""
    if requests <= 0:
        return None
    return (after.server - before.server) / CLK_TCK * 1e6 / requests


def wait_until_quiet(max_wait_s: float, sample_s: float = 2.0) -> float:
    """Block until other processes use less than the threshold, or ``max_wait_s`` passes.

    Starting a row on a quiet machine is cheaper than re-running it after a disturbed
    measurement. Returns the last measured share of one core used by others.
    """
    deadline = time.monotonic() + max_wait_s
    while True:
        before = snapshot(os.getpid())
        time.sleep(sample_s)
        busy = foreign_cpu_pct(before, snapshot(os.getpid()))
        if busy < BUSY_THRESHOLD_PCT or time.monotonic() >= deadline:
            return busy
