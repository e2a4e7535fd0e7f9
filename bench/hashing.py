"""Load-balancing strategies without sockets: spread, keys moved, bounded loads, pick cost.

Spread is how far the busiest server sits above a fair share: max / mean - 1, where mean is
the total divided by the number of servers. "share" is measured on the hash space each
server owns (slots of the Maglev table, arcs of the ring), which is where uniformly random
keys converge; "keys" counts real keys, which adds sampling noise (the modulo row, which is
even by construction, shows that noise on its own). Keys moved when one server is removed
or added are given as a multiple of the ideal: 1/N of the keys for a removal from N servers,
1/(N+1) for an addition to N.

    python bench/hashing.py [--keys 1000000] [--hosts 10,100,500] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import itertools
import math
import platform
import random
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bastion.balancer import (
    STRATEGIES,
    BoundedLoads,
    Maglev,
    PoolSnapshot,
    RingHash,
    Server,
    Strategy,
    build,
    hash64,
)


@dataclass
class Spread:
    hosts: int
    strategy: str
    build_s: float
    share_spread: float
    key_spread: float
    moved_remove: float
    moved_add: float


@dataclass
class Skewed:
    hosts: int
    strategy: str
    factor: float | None
    max_over_avg: float
    over_cap: int
    off_home: float


@dataclass
class Cost:
    hosts: int
    strategy: str
    pick_us: float
    cycle_us: float


def hosts(count: int) -> list[str]:
    return [f"10.{n // 62500}.{n // 250 % 250}.{n % 250}:8000" for n in range(count)]


class Modulo:
    """hash mod N: even, and what most small balancers do; here to show what it moves."""

    def __init__(self, pool: PoolSnapshot) -> None:
        self.servers = pool.active

    def home(self, value: int) -> Server | None:
        return self.servers[value % len(self.servers)]

    def shares(self) -> dict[Server, float]:
        return dict.fromkeys(self.servers, 1 / len(self.servers))


Table = RingHash | Maglev | Modulo
PER_SERVER = 20
BUILDERS: dict[str, Callable[[PoolSnapshot], Table]] = {
    "ring-hash": RingHash,
    "maglev": Maglev,
    # Ten times the default table: fewer keys move in large pools, for a slower build.
    "maglev 655,373": lambda pool: Maglev(pool, table_size=655_373),
    "modulo": Modulo,
}


def spread(values: Sequence[float], count: int) -> float:
    # Rounding can leave an exactly even split a hair below zero.
    return max(0.0, max(values) / (sum(values) / count) - 1)


def assign(table: Table, values: Sequence[int]) -> list[str]:
    home = table.home
    out = []
    for value in values:
        server = home(value)
        assert server is not None
        out.append(server.key)
    return out


def moved(before: Sequence[str], after: Sequence[str]) -> float:
    return sum(1 for a, b in zip(before, after, strict=True) if a != b) / len(before)


def distribution(host_counts: Sequence[int], values: Sequence[int]) -> list[Spread]:
    rows: list[Spread] = []
    for count, (name, make) in itertools.product(host_counts, BUILDERS.items()):
        names = hosts(count + 1)
        started = time.perf_counter()
        table = make(PoolSnapshot.of(names[:count]))
        built = time.perf_counter() - started
        base = assign(table, values)
        keys = Counter(base)
        # Remove a server from the middle of the list; add one that was not there.
        removed = assign(
            make(PoolSnapshot.of(names[: count // 2] + names[count // 2 + 1 : count])), values
        )
        added = assign(make(PoolSnapshot.of(names)), values)
        rows.append(
            Spread(
                hosts=count,
                strategy=name,
                build_s=built,
                share_spread=spread(list(table.shares().values()), count),
                key_spread=spread([keys.get(key, 0) for key in names[:count]], count),
                moved_remove=moved(base, removed) * count,
                moved_add=moved(base, added) * (count + 1),
            )
        )
        print(f"  {count} hosts, {name}: done", file=sys.stderr)
    return rows


def zipf_keys(rng: random.Random, distinct: int, exponent: float, count: int) -> list[bytes]:
    weights = list(itertools.accumulate(1 / (rank**exponent) for rank in range(1, distinct + 1)))
    ranks = rng.choices(range(distinct), cum_weights=weights, k=count)
    return [b"user-%d" % rank for rank in ranks]


def bounded(host_counts: Sequence[int], factors: Sequence[float], requests: int) -> list[Skewed]:
    """Requests with Zipf-distributed keys, each held for a random time."""
    rows: list[Skewed] = []
    for count in host_counts:
        pool = PoolSnapshot.of(hosts(count))
        # Plain ring hash under the same load, for comparison.
        rows.append(_skewed_run(RingHash(pool, points_per_server=1024), None, requests))
        for factor in factors:
            strategy = BoundedLoads(pool, balance_factor=factor, points_per_server=1024)
            rows.append(_skewed_run(strategy, factor, requests))
        print(f"  bounded loads, {count} hosts: done", file=sys.stderr)
    return rows


def _skewed_run(strategy: RingHash, factor: float | None, requests: int) -> Skewed:
    servers = strategy.pool.active
    count = len(servers)
    # Each request lasts PER_SERVER * count arrivals on average, so about PER_SERVER are in
    # flight per server; loads are measured once that has settled.
    mean_hold = PER_SERVER * count
    settled = 3 * mean_hold
    rng = random.Random(1)
    keys = zipf_keys(rng, 10_000, 1.1, max(requests, int(2 * settled)))
    home = RingHash.pick
    in_flight: list[tuple[float, int, Server]] = []
    worst_ratio = 0.0
    worst_over_cap = -(10**9)
    off_home = 0
    total = 0
    for number, key in enumerate(keys):
        while in_flight and in_flight[0][0] <= number:
            strategy.on_finish(heapq.heappop(in_flight)[2], 0.01, True)
            total -= 1
        server = strategy.pick(key)
        assert server is not None
        if server is not home(strategy, key):
            off_home += 1
        strategy.on_start(server)
        total += 1
        heapq.heappush(in_flight, (number + rng.expovariate(1 / mean_hold), number, server))
        if number >= settled:
            average = total / count
            worst_ratio = max(worst_ratio, server.outstanding / average)
            cap = math.ceil((factor or 1.0) * average - 1e-9)
            worst_over_cap = max(worst_over_cap, server.outstanding - cap)
    for server in servers:
        server.state.outstanding = 0
    return Skewed(count, strategy.name, factor, worst_ratio, worst_over_cap, off_home / len(keys))


def pick_cost(host_counts: Sequence[int], picks: int) -> list[Cost]:
    rows: list[Cost] = []
    keys = [b"203.0.113.%d:%d" % (n % 256, 40000 + n % 20000) for n in range(picks)]
    for count in host_counts:
        pool = PoolSnapshot.of(hosts(count))
        for name in STRATEGIES:
            strategy = build(name, pool, rng=random.Random(1))
            pick = strategy.pick
            best = math.inf
            for _ in range(3):
                started = time.perf_counter()
                for key in keys:
                    pick(key)
                best = min(best, time.perf_counter() - started)
            rows.append(Cost(count, name, best / picks * 1e6, _cycle(strategy, keys) / picks * 1e6))
    return rows


def _cycle(strategy: Strategy, keys: Sequence[bytes]) -> float:
    """Seconds for a pick plus the hooks the proxy calls around each request."""
    started = time.perf_counter()
    for key in keys:
        server = strategy.pick(key)
        assert server is not None
        strategy.on_start(server)
        strategy.on_finish(server, 0.01, True)
    return time.perf_counter() - started


def hash_cost(count: int) -> list[tuple[str, float]]:
    keys = [b"203.0.113.%d:%d" % (n % 256, 40000 + n % 20000) for n in range(count)]
    functions: list[tuple[str, Callable[[bytes], int]]] = [
        ("blake2b, 8-byte digest (used)", hash64),
        ("md5 (Ketama's)", lambda k: int.from_bytes(hashlib.md5(k).digest()[:8], "little")),
        ("crc32 (zlib)", zlib.crc32),
    ]
    try:
        import xxhash

        functions.append(("xxh3_64 (xxhash package)", xxhash.xxh3_64_intdigest))
    except ImportError:
        pass
    out = []
    for name, function in functions:
        best = math.inf
        for _ in range(3):
            started = time.perf_counter()
            for key in keys:
                function(key)
            best = min(best, time.perf_counter() - started)
        out.append((name, best / count * 1e6))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--hosts", default="10,100,500")
    parser.add_argument("--requests", type=int, default=200_000, help="skewed-load run length")
    parser.add_argument("--picks", type=int, default=100_000, help="picks timed per strategy")
    parser.add_argument("--quick", action="store_true", help="100k keys, 20k requests, 20k picks")
    args = parser.parse_args()
    if args.quick:
        args.keys, args.requests, args.picks = 100_000, 20_000, 20_000
    host_counts = [int(n) for n in args.hosts.split(",")]
    print(f"{time.strftime('%Y-%m-%d')}, Python {platform.python_version()}, {platform.machine()}")
    print(f"    python bench/hashing.py {' '.join(sys.argv[1:])}".rstrip())

    values = [hash64(b"key-%d" % n) for n in range(args.keys)]
    print(f"\nSpread and movement ({args.keys:,} keys):\n")
    print("| hosts | strategy | build s | spread, share | spread, keys | moved: remove | add |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for d in distribution(host_counts, values):
        print(
            f"| {d.hosts} | {d.strategy} | {d.build_s:.2f} | {d.share_spread:.2%} "
            f"| {d.key_spread:.2%} | {d.moved_remove:.2f} x | {d.moved_add:.2f} x |"
        )

    print(
        f"\nBounded loads: Zipf(1.1) keys over 10,000 users, {args.requests:,} requests or more,"
        f" about {PER_SERVER} in flight per server:\n"
    )
    print("| hosts | strategy | c | max load / average | above ceil(c * average) | off home |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for b in bounded(host_counts, (1.25, 1.1, 1.5), args.requests):
        if b.factor is None:
            c, over = "-", "-"
        else:
            c, over = f"{b.factor}", "never" if b.over_cap <= 0 else f"by {b.over_cap}"
        print(
            f"| {b.hosts} | {b.strategy} | {c} | {b.max_over_avg:.2f} | {over} | {b.off_home:.1%} |"
        )

    costs = pick_cost([n for n in host_counts if n <= 100], args.picks)
    counts = sorted({cost.hosts for cost in costs})
    print("\nTime per pick in µs (pick + on_start + on_finish in brackets):\n")
    print("| strategy | " + " | ".join(f"{n} hosts" for n in counts) + " |")
    print("| --- |" + " ---: |" * len(counts))
    for name in STRATEGIES:
        cells = [
            f"{cost.pick_us:.2f} ({cost.cycle_us:.2f})"
            for n in counts
            for cost in costs
            if cost.hosts == n and cost.strategy == name
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")

    print("\nHashing a client address and port (µs):\n")
    print("| function | µs |")
    print("| --- | ---: |")
    for name, cost in hash_cost(args.picks):
        print(f"| {name} | {cost:.3f} |")


if __name__ == "__main__":
    main()
