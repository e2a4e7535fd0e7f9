"""The pool snapshot: validation, health and panic mode, slow start, reconfiguration."""

from __future__ import annotations

import random

import pytest

from bastion.balancer import PoolSnapshot, Random, Server, ServerState
from tests.balancer.support import FakeClock, chi_square_fits, tally


def test_rejects_bad_servers_and_options() -> None:
    with pytest.raises(ValueError):
        Server("a", -1.0)
    with pytest.raises(ValueError):
        Server("a", float("nan"))
    with pytest.raises(ValueError):
        Server("")
    with pytest.raises(ValueError):
        PoolSnapshot([Server("a"), Server("a")])
    with pytest.raises(ValueError):
        PoolSnapshot.of(["a"], panic_threshold=1.5)


def test_servers_compare_by_key() -> None:
    assert Server("a", 1.0) == Server("a", 3.0)
    assert len({Server("a"), Server("a", 2.0), Server("b")}) == 2


def test_weight_zero_takes_nothing_new() -> None:
    pool = PoolSnapshot.of({"a": 1, "b": 0})
    assert [s.key for s in pool.candidates()] == ["a"]


def test_ejected_and_unhealthy_servers_are_skipped() -> None:
    pool = PoolSnapshot.of(["a", "b", "c", "d"])
    pool.eject(pool.servers[0])
    pool.set_healthy(pool.servers[1], False)
    assert not pool.panic
    assert [s.key for s in pool.candidates()] == ["c", "d"]
    pool.restore(pool.servers[0])
    assert [s.key for s in pool.candidates()] == ["a", "c", "d"]


def test_panic_mode_uses_every_server_below_the_threshold() -> None:
    pool = PoolSnapshot.of(["a", "b", "c", "d"])
    for server in pool.servers[:2]:
        pool.eject(server)
    # Half healthy is not below a 50% threshold.
    assert not pool.panic
    assert len(pool.candidates()) == 2
    pool.set_healthy(pool.servers[2], False)
    assert pool.panic
    assert len(pool.candidates()) == 4
    pool.set_healthy(pool.servers[2], True)
    assert not pool.panic


def test_panic_mode_can_be_turned_off() -> None:
    pool = PoolSnapshot.of(["a", "b"], panic_threshold=0.0)
    for server in pool.servers:
        pool.eject(server)
    assert not pool.panic
    assert pool.candidates() == []
    assert Random(pool, rng=random.Random(1)).pick() is None


def test_slow_start_ramps_a_new_server_linearly() -> None:
    clock = FakeClock()
    pool = PoolSnapshot.of(["a", "b"], slow_start_s=10.0, clock=clock)
    assert not pool.warming()
    grown = pool.reconfigure(["a", "b", "c"])
    new = grown.servers[2]
    assert grown.warming()
    assert grown.weight_of(new, clock.now) == pytest.approx(0.1)
    assert grown.weight_of(new, clock.now + 5.0) == pytest.approx(0.55)
    assert grown.weight_of(new, clock.now + 10.0) == 1.0
    assert grown.weight_of(grown.servers[0], clock.now) == 1.0
    clock.now += 10.0
    assert not grown.warming()


def test_slow_start_shapes_the_distribution() -> None:
    clock = FakeClock()
    pool = PoolSnapshot.of(["a", "b"], slow_start_s=10.0, clock=clock).reconfigure(["a", "b", "c"])
    clock.now += 5.0
    strategy = Random(pool, rng=random.Random(7))
    assert chi_square_fits(tally(strategy, 20_000), {"a": 1.0, "b": 1.0, "c": 0.55})


def test_a_recovered_server_starts_slow() -> None:
    clock = FakeClock()
    pool = PoolSnapshot.of(["a", "b", "c"], slow_start_s=30.0, clock=clock)
    server = pool.servers[0]
    pool.eject(server)
    clock.now += 60.0
    pool.restore(server)
    assert pool.weight_of(server, clock.now) == pytest.approx(0.1)
    assert pool.weight_of(server, clock.now + 15.0) == pytest.approx(0.55)


def test_reconfigure_keeps_live_state_and_applies_new_weights() -> None:
    pool = PoolSnapshot.of({"a": 1, "b": 1})
    pool.servers[0].state.outstanding = 3
    pool.eject(pool.servers[1])
    after = pool.reconfigure({"a": 2, "c": 1})
    a = after.get("a")
    assert a is not None and a.weight == 2.0 and a.outstanding == 3
    assert a.state is pool.servers[0].state
    assert after.get("b") is None
    assert [s.key for s in after.candidates()] == ["a", "c"]


def test_ewma_takes_peaks_at_once_and_decays_when_idle() -> None:
    state = ServerState()
    state.observe(0.010, 0.0, 10.0)
    state.observe(0.200, 1.0, 10.0)
    assert state.latency(1.0, 10.0) == pytest.approx(0.200)
    state.observe(0.010, 2.0, 10.0)
    # A lower sample only pulls the estimate down by the weight of the time since the last.
    assert 0.010 < state.latency(2.0, 10.0) < 0.200
    assert state.latency(2.0 + 60.0, 10.0) < 0.01 * state.latency(2.0, 10.0)


def test_health_reported_on_an_older_record_still_counts() -> None:
    old = PoolSnapshot.of({"a": 1, "b": 1, "c": 1})
    new = old.reconfigure({"a": 2, "b": 1, "c": 1})
    stale = old.servers[0]
    new.eject(stale)
    new.set_healthy(new.servers[1], False)
    assert new.panic
    assert len(new.candidates()) == 3
