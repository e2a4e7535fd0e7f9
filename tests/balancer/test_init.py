"""What every strategy shares: building by name, retries, an empty or exhausted pool."""

from __future__ import annotations

import inspect
import random
from collections.abc import Collection

import pytest

from bastion._compiled import is_compiled
from bastion.balancer import STRATEGIES, PoolSnapshot, Strategy, build
from bastion.balancer.pool import Server
from tests.balancer.support import picks

SMALL = {"points_per_server": 64}


def make(name: str, pool: PoolSnapshot) -> Strategy:
    options = SMALL if name in ("ring-hash", "bounded-load") else {}
    return build(name, pool, rng=random.Random(1), **options)


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="round-robin"):
        build("fastest", PoolSnapshot.of(["a"]))


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_a_retry_goes_to_a_different_server(name: str) -> None:
    pool = PoolSnapshot.of({"a": 1, "b": 2, "c": 3})
    strategy = make(name, pool)
    for number in range(50):
        key = b"k%d" % number
        tried = []
        for _ in range(3):
            server = strategy.pick(key, exclude=tried)
            assert server is not None and server not in tried
            tried.append(server)
        assert strategy.pick(key, exclude=tried) is None


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_empty_pool_gives_none(name: str) -> None:
    assert make(name, PoolSnapshot.of([])).pick(b"k") is None


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_ejected_servers_are_skipped_and_panic_uses_all(name: str) -> None:
    pool = PoolSnapshot.of(["a", "b", "c", "d"])
    strategy = make(name, pool)
    pool.eject(pool.servers[0])
    assert "a" not in picks(strategy, 200, keyed=True)
    for server in pool.servers[1:3]:
        pool.eject(server)
    assert "a" in picks(strategy, 400, keyed=True)


def test_a_strategy_written_in_python_is_built_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    # The strategies are compiled in a compiled build; one defined here must still subclass
    # Strategy, inherit its hooks and be built like the others.
    class Last(Strategy):
        name = "last"

        def pick(self, key: bytes | None = None, exclude: Collection[Server] = ()) -> Server | None:
            allowed = [server for server in self.pool.servers if server not in exclude]
            return allowed[-1] if allowed else None

    monkeypatch.setitem(STRATEGIES, "last", Last)
    pool = PoolSnapshot.of(["a", "b", "c"])
    strategy = build("last", pool)
    assert isinstance(strategy, Last)
    chosen = strategy.pick()
    assert chosen is not None and chosen.key == "c"
    strategy.on_start(chosen)
    assert chosen.state.outstanding == 1
    strategy.on_finish(chosen, 0.01, ok=True)
    assert chosen.state.outstanding == 0
    assert strategy.pick(exclude={chosen}) is pool.servers[1]


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_a_strategys_tunables_are_its_keyword_arguments(name: str) -> None:
    # strategy_options are checked against Strategy.tunables; they must name what the
    # constructor takes. A compiled class hides its signature, so this is checked pure.
    cls = STRATEGIES[name]
    if is_compiled():
        pytest.skip("compiled: the constructor's signature is not visible")
    parameters = inspect.signature(cls).parameters.values()
    keywords = {
        parameter.name: type(parameter.default)
        for parameter in parameters
        if parameter.kind is parameter.KEYWORD_ONLY and parameter.name != "rng"
    }
    assert dict(cls.tunables) == keywords
    assert list(cls.tunables) == list(keywords)
