"""The balancer's admin API: ``/api/balancer`` on the supervisor's admin listener.

``bastion balance`` runs a :class:`~bastion.balancer.control.BalancerControl` in its
supervisor; the admin listener answers the routes it offers (``admin_routes``), behind the
admin token like every other admin route. Reading lists every route and upstream with its
weight, the active health checks' verdict and, per worker, what only that worker knows
(outstanding requests, EWMA latency, ejection, open connections), read from the telemetry
each worker ships once a second. Every change goes through ``BalancerControl.apply``: checked
whole first (a bad request is a 400 or 404 with a reason, and nothing changes), then sent to
every worker, where requests in flight finish on the configuration they started with.

    GET    /api/balancer                                     routes, upstreams, figures
    POST   /api/balancer/routes/{route}/upstreams            {"url": ..., "weight": N}
    PUT    /api/balancer/routes/{route}/upstreams/{key}      {"weight": N}
    DELETE /api/balancer/routes/{route}/upstreams/{key}
    POST   /api/balancer/routes/{route}/upstreams/{key}/drain    weight 0, the old one kept
    POST   /api/balancer/routes/{route}/upstreams/{key}/enable   the kept weight back

``{key}`` is the upstream's ``host:port``, as listed.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bastion.app import Request, Response
from bastion.balancer.config import Route, Upstream, parse_upstream_url

if TYPE_CHECKING:
    from bastion.balancer.control import BalancerControl

logger = logging.getLogger("bastion.error")

PREFIX = "/api/balancer"
# Far beyond any useful ratio between two servers; a bound keeps a typo (1e9) from
# building a ring or a table of absurd size.
MAX_WEIGHT = 10_000.0
MAX_BODY = 64 * 1024
_JSON = "application/json"

WorkerSnapshots = list[tuple[int, Mapping[str, Any]]]
Endpoint = Callable[[Request], Awaitable[Response]]

# The per-worker gauges of bastion.balancer.metrics, by the name the API gives them.
_GAUGES = {
    "bastion_upstream_outstanding": "outstanding",
    "bastion_upstream_latency_ewma_seconds": "latency_ewma_s",
    "bastion_upstream_ejected": "ejected",
    "bastion_upstream_healthy": "healthy",
}
_COUNTERS = {
    "bastion_upstream_requests_total": "requests",
    "bastion_upstream_failures_total": "failures",
}


class APIError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class BalancerAPI:
    """The endpoints over one :class:`BalancerControl`; ``workers()`` gives the serving
    workers' latest telemetry."""

    def __init__(self, control: BalancerControl, workers: Callable[[], WorkerSnapshots]) -> None:
        self.control = control
        self.workers = workers

    def routes(self) -> list[tuple[str, str, Endpoint]]:
        upstreams = PREFIX + "/routes/{route}/upstreams"
        return [
            ("GET", PREFIX, self._answer(self.listing)),
            ("POST", upstreams, self._answer(self.add)),
            ("PUT", upstreams + "/{key}", self._answer(self.set_weight)),
            ("DELETE", upstreams + "/{key}", self._answer(self.remove)),
            ("POST", upstreams + "/{key}/drain", self._answer(self.drain)),
            ("POST", upstreams + "/{key}/enable", self._answer(self.enable)),
        ]

    def _answer(self, endpoint: Callable[[Request], Awaitable[tuple[int, Any]]]) -> Endpoint:
        async def answer(request: Request) -> Response:
            try:
                status, body = await endpoint(request)
            except APIError as exc:
                status, body = exc.status, {"error": exc.reason}
            data = json.dumps(body, indent=1).encode() + b"\n"
            return Response(
                data, status=status, headers={"content-type": _JSON, "cache-control": "no-store"}
            )

        return answer

    # reading ----------------------------------------------------------------------------------

    async def listing(self, request: Request) -> tuple[int, Any]:
        return 200, self.describe()

    def describe(self) -> dict[str, Any]:
        verdicts = self.control.verdicts()
        figures = upstream_figures(self.workers())
        return {
            "routes": [
                self._route_entry(route, verdicts, figures) for route in self.control.config.routes
            ]
        }

    def _route_entry(
        self,
        route: Route,
        verdicts: Mapping[tuple[str, str], bool],
        figures: Mapping[tuple[str, str], dict[str, dict[str, Any]]],
    ) -> dict[str, Any]:
        return {
            "name": route.name,
            "host": route.host,
            "path_prefix": route.path_prefix,
            "strategy": route.strategy,
            "upstreams": [
                self._upstream_entry(route, upstream, verdicts, figures)
                for upstream in route.upstreams
            ],
        }

    def _upstream_entry(
        self,
        route: Route,
        upstream: Upstream,
        verdicts: Mapping[tuple[str, str], bool] | None = None,
        figures: Mapping[tuple[str, str], dict[str, dict[str, Any]]] | None = None,
    ) -> dict[str, Any]:
        where = (route.name, upstream.key)
        verdict = (verdicts or {}).get(where)
        drained = self.control.drained.get(where)
        return {
            "key": upstream.key,
            "url": upstream.url,
            "weight": upstream.weight,
            "drained": drained is not None,
            "drained_weight": drained,
            "health": "unchecked" if verdict is None else "up" if verdict else "down",
            "workers": (figures or {}).get(where, {}),
        }

    # changing ---------------------------------------------------------------------------------

    async def add(self, request: Request) -> tuple[int, Any]:
        route = self._route(request)
        body = await _body(request, allowed=("url", "weight"))
        if "url" not in body:
            raise APIError(400, "url is required")
        url = body["url"]
        if not isinstance(url, str):
            raise APIError(400, f"url must be a string, not {url!r}")
        weight = _weight(body.get("weight", 1.0))
        try:
            upstream = Upstream(url, weight)
        except ValueError as exc:
            raise APIError(400, str(exc)) from None
        if any(u.key == upstream.key for u in route.upstreams):
            raise APIError(400, f'route "{route.name}" already has upstream {upstream.key}')
        self._change(route, (*route.upstreams, upstream), f"added {upstream.key}")
        return 201, self._result(route.name, upstream.key)

    async def set_weight(self, request: Request) -> tuple[int, Any]:
        route = self._route(request)
        upstream = self._upstream(route, request)
        body = await _body(request, allowed=("weight",))
        if "weight" not in body:
            raise APIError(400, "weight is required")
        weight = _weight(body["weight"])
        self._reweigh(route, upstream, weight, f"weight of {upstream.key} set to {weight:g}")
        return 200, self._result(route.name, upstream.key)

    async def remove(self, request: Request) -> tuple[int, Any]:
        route = self._route(request)
        upstream = self._upstream(route, request)
        await _body(request, allowed=())
        kept = tuple(u for u in route.upstreams if u.key != upstream.key)
        self._change(route, kept, f"removed {upstream.key}")
        return 200, {"route": route.name, "removed": upstream.key}

    async def drain(self, request: Request) -> tuple[int, Any]:
        route = self._route(request)
        upstream = self._upstream(route, request)
        await _body(request, allowed=())
        where = (route.name, upstream.key)
        if where not in self.control.drained:
            if upstream.weight == 0:
                raise APIError(400, f"{upstream.key} has weight 0 already: nothing to drain")
            self._reweigh(route, upstream, 0.0, f"drained {upstream.key}")
            self.control.drained[where] = upstream.weight
        return 200, self._result(route.name, upstream.key)

    async def enable(self, request: Request) -> tuple[int, Any]:
        route = self._route(request)
        upstream = self._upstream(route, request)
        await _body(request, allowed=())
        where = (route.name, upstream.key)
        weight = self.control.drained.get(where)
        if weight is None:
            if upstream.weight == 0:
                raise APIError(
                    400, f"{upstream.key} was not drained here: give it a weight with PUT"
                )
            return 200, self._result(route.name, upstream.key)
        self._reweigh(route, upstream, weight, f"enabled {upstream.key} (weight {weight:g})")
        return 200, self._result(route.name, upstream.key)

    def _reweigh(self, route: Route, upstream: Upstream, weight: float, what: str) -> None:
        changed = Upstream(upstream.url, weight)
        self._change(
            route, tuple(changed if u.key == upstream.key else u for u in route.upstreams), what
        )

    def _change(self, route: Route, upstreams: Sequence[Upstream], what: str) -> None:
        """Apply the route with ``upstreams``, or refuse it whole (400) if it cannot be."""
        try:
            self.control.set_upstreams(route.name, upstreams)
        except ValueError as exc:
            raise APIError(400, str(exc)) from None
        logger.info('admin API: route "%s": %s', route.name, what)

    def _result(self, route_name: str, key: str) -> dict[str, Any]:
        route = self.control.route(route_name)
        upstream = next(u for u in route.upstreams if u.key == key)
        figures = upstream_figures(self.workers())
        entry = self._upstream_entry(route, upstream, self.control.verdicts(), figures)
        return {"route": route.name, "upstream": entry}

    def _route(self, request: Request) -> Route:
        name = request.path_params["route"]
        try:
            route: Route = self.control.route(name)
        except KeyError:
            raise APIError(404, f"no route named {name!r}") from None
        return route

    def _upstream(self, route: Route, request: Request) -> Upstream:
        given = request.path_params["key"]
        for upstream in route.upstreams:
            if upstream.key == given:
                return upstream
        try:
            _, host, port = parse_upstream_url(given)
            key = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        except ValueError:
            key = None
        for upstream in route.upstreams:
            if upstream.key == key:
                return upstream
        raise APIError(404, f'route "{route.name}" has no upstream {given!r}')


async def _body(request: Request, allowed: Sequence[str]) -> dict[str, Any]:
    """The request's JSON object (empty when there is no body), with only ``allowed`` keys."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY:
        raise APIError(400, f"the body must be at most {MAX_BODY} bytes")
    data = await request.body()
    if len(data) > MAX_BODY:
        raise APIError(400, f"the body must be at most {MAX_BODY} bytes")
    if not data.strip():
        return {}
    try:
        body = json.loads(data, parse_constant=_no_constant)
    except ValueError as exc:
        raise APIError(400, f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise APIError(400, f"the body must be a JSON object, not {type(body).__name__}")
    for key in body:
        if key not in allowed:
            takes = ", ".join(allowed) if allowed else "nothing"
            raise APIError(400, f"unknown key {key!r} (this call takes {takes})")
    return body


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON has")


def _weight(raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise APIError(400, f"weight must be a number, not {raw!r}")
    if not (math.isfinite(raw) and 0 <= raw <= MAX_WEIGHT):
        raise APIError(400, f"weight must be between 0 and {MAX_WEIGHT:g}, not {raw!r}")
    return float(raw)


def upstream_figures(
    workers: WorkerSnapshots,
) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """``(route, key) → {worker slot: figures}`` from the ``bastion_upstream_*`` metrics each
    worker ships (:mod:`bastion.balancer.metrics`)."""
    figures: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for slot, snapshot in workers:
        for family in snapshot.get("app", ()):
            name, samples = family[0], family[3]
            if not name.startswith("bastion_upstream_"):
                continue
            for sample_name, labels, value in samples:
                label = dict(labels)
                route, key = label.get("route"), label.get("upstream")
                if route is None or key is None:
                    continue
                entry = figures.setdefault((route, key), {}).setdefault(str(slot), {})
                if sample_name in _GAUGES:
                    field = _GAUGES[sample_name]
                    entry[field] = (
                        bool(value)
                        if field in ("ejected", "healthy")
                        else int(value)
                        if field == "outstanding"
                        else value
                    )
                elif sample_name in _COUNTERS:
                    entry[_COUNTERS[sample_name]] = int(value)
                elif sample_name == "bastion_upstream_connections" and "state" in label:
                    entry.setdefault("connections", {})[label["state"]] = int(value)
                elif sample_name == "bastion_upstream_weight":
                    entry["weight"] = value
    return figures
