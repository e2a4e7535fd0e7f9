"""The [[route]] and [balancer] tables of a ``bastion balance`` file, read without a process."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from bastion.balancer.config import (
    BalancerConfig,
    HashKey,
    HealthCheck,
    OutlierDetection,
    Route,
    Timeouts,
    Upstream,
)
from bastion.cli import balancefile

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


def load(text: str, trusted: tuple[str, ...] = ()) -> BalancerConfig:
    document: dict[str, Any] = tomllib.loads(text)
    return balancefile.balancer(
        balancefile.routes(document["route"]), document.get("balancer"), trusted
    )


FULL = """
[balancer]
trusted_proxies = ["10.0.0.0/8", "unix"]
forwarding = "x-forwarded"
request_id = "X-Trace-ID"

[[route]]
name = "api"
host = "api.example.com"
path_prefix = "/v1"
strategy = "bounded-load"
strategy_options = {balance_factor = 1.5}
hash_key = "header:X-User"
strip_prefix = true
preserve_host = false
panic_threshold = 0.3
slow_start = 20
upstreams = ["http://10.0.0.2:8000", {url = "http://10.0.0.3:8000", weight = 2}]
timeouts = {connect = 1, response = 10, idle = 20, total = 30}

[route.retry]
attempts = 3
budget_ratio = 0.1
budget_min_per_s = 1
per_try_timeout = 2
on_status = [503]

[route.limits]
max_connections = 100
max_pending = 10
max_requests = 50
max_idle = 8
idle_timeout = 5

[route.outlier]
consecutive_failures = 3
base_ejection = 10
max_ejection = 60
max_ejected_share = 0.25

[route.health]
path = "/healthz"
interval = 2
jitter = 0.2
timeout = 1
rise = 1
fall = 2
statuses = ["2xx", 404]
host = "health.internal"

[[route]]
upstreams = ["10.0.0.9:80"]
"""


def test_every_key_reaches_its_field() -> None:
    config = load(FULL)
    assert config.trusted_proxies == ("10.0.0.0/8", "unix")
    assert (config.forwarding, config.request_id) == ("x-forwarded", "X-Trace-ID")
    api, other = config.routes
    assert api.upstreams == (
        Upstream("http://10.0.0.2:8000"),
        Upstream("http://10.0.0.3:8000", 2),
    )
    assert (api.name, api.host, api.path_prefix) == ("api", "api.example.com", "/v1")
    assert api.strategy == "bounded-load"
    assert api.strategy_options == (("balance_factor", 1.5),)
    assert api.hash_key == HashKey("header:X-User")
    assert (api.strip_prefix, api.preserve_host) == (True, False)
    assert (api.panic_threshold, api.slow_start) == (0.3, 20)
    assert api.timeouts == Timeouts(connect=1, response=10, idle=20, total=30)
    assert (api.retry.attempts, api.retry.on_status, api.retry.per_try_timeout) == (3, (503,), 2)
    assert api.limits.max_connections == 100 and api.limits.idle_timeout == 5
    assert api.outlier == OutlierDetection(3, 10, 60, 0.25)
    assert api.health == HealthCheck(
        path="/healthz",
        interval=2,
        jitter=0.2,
        timeout=1,
        rise=1,
        fall=2,
        statuses=(*range(200, 300), 404),
        host="health.internal",
    )
    # Unnamed routes are named by position when there are several.
    assert other.name == "#2" and other.health is None and other.strategy == "round-robin"


def test_a_lone_route_is_the_default_route() -> None:
    (route,) = load('[[route]]\nupstreams = ["http://10.0.0.2:8000"]').routes
    assert route == Route(upstreams=(Upstream("http://10.0.0.2:8000"),))


def test_aliases_name_the_same_strategy() -> None:
    text = '[[route]]\nupstreams = ["a:1"]\nstrategy = "p2c-ewma"'
    assert load(text).routes[0].strategy == "peak-ewma"


def test_trusted_proxies_default_applies_unless_the_table_sets_them() -> None:
    text = '[[route]]\nupstreams = ["a:1"]'
    assert load(text, ("127.0.0.1",)).trusted_proxies == ("127.0.0.1",)
    assert load("[balancer]\ntrusted_proxies = []\n" + text, ("127.0.0.1",)).trusted_proxies == ()


def test_rendered_configuration_loads_back_the_same() -> None:
    for text in (FULL, '[[route]]\nupstreams = ["a:1"]\nhealth = {}'):
        config = load(text)
        rendered = balancefile.render(config)
        assert load(rendered) == config
        assert balancefile.render(load(rendered)) == rendered


def test_rendering_shows_every_key_with_its_default() -> None:
    rendered = balancefile.render(load('[[route]]\nupstreams = ["a:1"]'))
    for key in ("connect = 5.0", "attempts = 2", "max_pending = 1024", "max_ejection = 300.0"):
        assert key in rendered
    assert "# [route.health] is not set" in rendered
    assert "hash_key" not in rendered  # round robin hashes nothing, and the file refuses it
    assert 'statuses = ["2xx", "3xx"]' in balancefile.render(
        load('[[route]]\nupstreams = ["a:1"]\nhealth = {}')
    )


ROUTE = '[[route]]\nname = "api"\nupstreams = ["http://10.0.0.2:8000"]\n'

BAD = [
    ("route = 3", "route must be an array of tables: write each one as [[route]]"),
    ('[route]\nupstreams = ["a:1"]', "route must be an array of tables"),
    ("[[route]]\nname = 'x'", 'route "x": upstreams: at least one upstream is needed'),
    ("[[route]]\nupstreams = []", 'route "default": upstreams: at least one upstream is needed'),
    ('[[route]]\nupstreams = "a:1"', "upstreams must be a list of URLs, not 'a:1'"),
    (ROUTE + 'stratgy = "maglev"', "unknown key 'stratgy' (did you mean 'strategy'?)"),
    (ROUTE + "[route.timeouts]\nconect = 1", "unknown key 'timeouts.conect' (did you mean "),
    (ROUTE + "timeouts = 5", 'route "api": timeouts must be a table, not 5'),
    (ROUTE + "[route.timeouts]\nconnect = 0", 'route "api": timeouts.connect must be > 0, not 0'),
    (ROUTE + '[route.timeouts]\nconnect = "5s"', "timeouts.connect must be a number, not '5s'"),
    (ROUTE + "[route.retry]\nattempts = 0", "retry.attempts must be a whole number >= 1"),
    (ROUTE + "[route.retry]\nattempts = 1.5", "retry.attempts must be a whole number, not 1.5"),
    (ROUTE + "[route.retry]\non_status = [404]", "retry.on_status: 404 is not a 5xx status"),
    (ROUTE + "[route.limits]\nmax_idle = -1", "limits.max_idle must be a whole number >= 0"),
    (ROUTE + "[route.outlier]\nbase_ejection = 60\nmax_ejection = 30", "outlier.max_ejection "
     "must be >= outlier.base_ejection"),
    (ROUTE + "[route.health]\npath = 'healthz'", "health.path must start with '/'"),
    (ROUTE + "[route.health]\nstatuses = ['ok']", "health.statuses: 'ok' is neither a status"),
    (ROUTE + "[route.health]\nstatuses = []", "health.statuses must not be empty"),
    (ROUTE + "strip_prefix = 'yes'", 'route "api": strip_prefix must be true or false'),
    (ROUTE + "panic_threshold = 2", 'route "api": panic_threshold must be between 0 and 1'),
    (ROUTE + "path_prefix = 'api'", "path_prefix must start with '/'"),
    (ROUTE + "host = 7", 'route "api": host must be a string, not 7'),
    (ROUTE + 'strategy = "fastest"', "strategy: unknown strategy 'fastest' (known: "),
    (ROUTE + 'hash_key = "path"', 'route "api": hash_key: only a hashing strategy '
     "(bounded-load, maglev, ring-hash) uses a hash key, not round-robin"),
    (ROUTE + 'strategy = "ring-hash"\nhash_key = "query:x"', "hash_key 'query:x': expected "),
    (ROUTE + 'strategy = "bounded-load"\nstrategy_options = {load_factor = 2}',
     "strategy_options: bounded-load has no option 'load_factor' (balance_factor, "),
    (ROUTE + 'strategy = "maglev"\nstrategy_options = {table_size = 1000}', "strategy_options: "),
    (ROUTE + 'strategy = "maglev"\nstrategy_options = {table_size = 1.5}',
     "strategy_options.table_size must be a whole number, not 1.5"),
    ('[[route]]\nupstreams = ["ftp://10.0.0.2"]', 'route "default": upstream ftp://10.0.0.2: '
     "the scheme must be http or https"),
    ('[[route]]\nupstreams = ["http://10.0.0.2/app"]', "give only scheme, host and port"),
    ('[[route]]\nupstreams = ["http://10.0.0.2:99999"]', "Port out of range"),
    ('[[route]]\nupstreams = [{url = "a:1", weight = -1}]', 'route "default": upstream a:1: '
     "weight must be >= 0, not -1"),
    ('[[route]]\nupstreams = [{url = "a:1", wieght = 2}]', "unknown key 'upstreams[1].wieght' "
     "(did you mean 'upstreams[1].weight'?)"),
    ('[[route]]\nupstreams = [{weight = 2}]', "upstreams[1]: url is required"),
    ('[[route]]\nupstreams = ["a:1", "http://a:1"]', "upstreams: a:1 is listed twice"),
    ('[[route]]\nupstreams = [{url = "a:1", weight = 0}]', "every weight is 0"),
    (ROUTE + ROUTE, 'route "api": two routes have this name'),
    (ROUTE + '[[route]]\nname = "b"\npath_prefix = "/"\nupstreams = ["a:1"]',
     'route "b": another route has the same host and path_prefix'),
    ('[[route]]\nname = ""\nupstreams = ["a:1"]', "route name must be a non-empty string"),
    ("[balancer]\nforwarding = 'all'\n" + ROUTE, "balancer: forwarding must be one of both, "),
    ("[balancer]\nforwardng = 'none'\n" + ROUTE, "balancer: unknown key 'forwardng' (did you "
     "mean 'forwarding'?)"),
    ("[balancer]\ntrusted_proxies = ['10.0.0.0/33']\n" + ROUTE, "balancer: "),
    ("[balancer]\ntrusted_proxies = '10.0.0.1'\n" + ROUTE, "balancer: trusted_proxies must be "
     "a list of strings"),
    ("[balancer]\nrequest_id = 'X Request'\n" + ROUTE, "balancer: request_id 'X Request' is "
     "not a header name"),
    ("balancer = 1\n" + ROUTE, "balancer must be a table, not 1"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), BAD)
def test_each_mistake_is_one_line_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        load(text)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_file_names_the_same_keys_as_the_dataclasses() -> None:
    # A field added to a policy dataclass becomes a key with no change here.
    for key, cls in balancefile.SECTIONS.items():
        sample = load(f'[[route]]\nupstreams = ["a:1"]\n[route.{key}]\n')
        assert isinstance(getattr(sample.routes[0], key), cls)


def test_the_documented_example_loads() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "balancing.md").read_text()
    example = docs.split("```toml\n", 1)[1].split("```", 1)[0]
    assert example.startswith("# lb.toml")
    document = tomllib.loads(example)
    assert set(document) - balancefile.TABLES == {"workers", "bind", "access-log", "admin-bind"}
    api, web = load(example).routes
    assert (api.name, api.strategy, api.retry.attempts, web.hash_key.name) == (
        "api",
        "peak-ewma",
        3,
        "session",
    )
