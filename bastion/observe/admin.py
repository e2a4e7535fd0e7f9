"""The admin listener's application: health probes, metrics, the live dashboard and its feed.

It is an ordinary native :class:`~bastion.App`, served by the supervisor on its own
listener (``--admin-bind``), so it shows the whole server and is never reachable on the public
port by accident. Everything it answers comes from what the supervisor already holds in
memory (the workers' latest snapshots and heartbeats): a probe never waits for a worker, a
busy one included, and a blocked worker shows up as a failed liveness probe at once.

Routes: ``/healthz`` (liveness), ``/readyz`` (readiness; ``?verbose`` lists every check, as
text or, with ``Accept: application/json`` or ``?format=json``, JSON; under ``bastion up``,
each service's workers and checks are listed under the service), ``/metrics``
(Prometheus text or OpenMetrics by ``Accept``), ``/`` (the dashboard), ``/events`` (its
Server-Sent Events feed, one point a second) and ``/api/summary`` (the latest point and
recent history as JSON, for ``bastion top`` and scripts). With a token set, every route asks
for ``Authorization: Bearer <token>``.

A browser cannot add that header to a page it navigates to, nor to an ``EventSource``, so the
dashboard also takes the token once, as ``/?token=<token>``: the answer sets a cookie derived
from the token (``HttpOnly``, ``SameSite=Strict``, so no other site's page can send it) and
redirects to ``./``, taking the token out of the address bar and the browser's history. The
cookie is honoured only by the read-only dashboard routes (``/``, ``/assets/*``, ``/events``,
``/api/summary``); probes and ``/metrics`` keep to the header.

The supervisor's jobs may add routes of their own (``extra``: the balancer's ``/api/balancer``,
say), behind the same token; only their ``GET`` routes take the cookie, so no page can make a
browser change anything.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from importlib import resources
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from bastion.app import App, Request, Response, StreamingResponse
from bastion.engine.exchange import Exchange
from bastion.observe.aggregate import AggregateView, Aggregator, MetricsCollector, WorkerView

_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"

# A route a job adds: (method, path in the App's syntax, endpoint).
AdminRoute = tuple[str, str, Callable[[Request], Awaitable[Response]]]
# (worker slot, its latest telemetry snapshot) for each serving worker.
WorkerSnapshots = list[tuple[int, Mapping[str, Any]]]


class ServerHealth:
    """Liveness and readiness of the whole server, from the supervisor's own records.

    ``beat_deadline`` is how long a worker may go without a heartbeat from its event loop
    before liveness fails; the supervisor sets ``draining`` the moment it starts a graceful
    stop, and ``accepting`` while it still wants traffic.

    Where the workers belong to services (``bastion up``, whose services each have a worker
    0), the details list each service's workers and checks under ``services``, by name.
    """

    def __init__(self, aggregator: Aggregator, beat_deadline: float = 3.0) -> None:
        self.aggregator = aggregator
        self.beat_deadline = beat_deadline
        self.draining = False
        self.started = time.monotonic()

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        now = time.monotonic()
        services: dict[str, dict[str, Any]] = {}
        alive = True
        for worker in self._serving():
            silent = now - worker.last_beat
            ok = silent <= self.beat_deadline
            alive = alive and ok
            workers = services.setdefault(worker.service, {"workers": {}})["workers"]
            workers[str(worker.slot)] = {
                "ok": ok,
                "pid": worker.pid,
                "detail": "" if ok else f"event loop silent for {silent:.1f}s",
            }
        return alive, {"supervisor": {"ok": True}, **self._by_service(services, {"workers": {}})}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        reasons = []
        serving = self._serving()
        if self.draining:
            reasons.append("draining")
        if not serving:
            reasons.append("no worker is serving yet")
        services: dict[str, dict[str, Any]] = {}
        for worker in serving:
            part = services.setdefault(worker.service, {"checks": {}, "workers": 0})
            part["workers"] += 1
            for name, result in ((worker.snapshot or {}).get("checks") or {}).items():
                entry = part["checks"].setdefault(name, {"ok": True, "workers": {}})
                entry["workers"][str(worker.slot)] = result
                if not result.get("ok"):
                    entry["ok"] = False
        # A worker that has not reported yet has not run its checks: not ready until it has.
        for worker in serving:
            if worker.snapshot is None:
                reasons.append(
                    f"{_within(worker.service)}worker {worker.slot} has not reported yet"
                )
        for service, part in sorted(services.items()):
            reasons.extend(
                f"{_within(service)}check {name} failing"
                for name, entry in part["checks"].items()
                if not entry["ok"]
            )
        detail = self._by_service(services, {"checks": {}, "workers": 0})
        return not reasons, {"reasons": reasons, **detail, "workers": len(serving)}

    def _serving(self) -> list[WorkerView]:
        workers = [w for w in self.aggregator.workers.values() if w.state == "serving"]
        return sorted(workers, key=lambda w: (w.service, w.slot))

    def _by_service(
        self, services: dict[str, dict[str, Any]], empty: dict[str, Any]
    ) -> dict[str, Any]:
        """The plain server's part as it is, or every service's under ``services``."""
        if any(worker.service for worker in self.aggregator.workers.values()):
            return {"services": dict(sorted(services.items()))}
        return services.get("", empty)


def admin_app(
    health: ServerHealth,
    *,
    token: str | None = None,
    registry: CollectorRegistry | None = None,
    tick: float = 1.0,
    extra: Callable[[], Sequence[AdminRoute]] | None = None,
) -> App:
    """The admin application over ``health`` (and its aggregator); ``extra`` gives the
    routes the current jobs add, asked again on every request they may answer."""
    aggregator = health.aggregator
    custom_registry = registry
    app = App()
    expected = f"Bearer {token}".encode() if token else None
    # The cookie carries a digest of the token, not the token: a cookie read off a disk or a
    # proxy's memory opens the dashboard, not /metrics or a future admin action.
    cookie = _cookie_value(token) if token else None

    def refused(request: Request, dashboard: bool = False) -> Response | None:
        if expected is None:
            return None
        given = (request.headers.get("authorization") or "").encode("latin-1")
        if hmac.compare_digest(given, expected):
            return None
        if dashboard and cookie is not None:
            for value in _cookies(request, _COOKIE):
                if hmac.compare_digest(value.encode("latin-1", "replace"), cookie):
                    return None
        return Response(
            b"401 Unauthorized: this endpoint needs the admin token\n",
            status=401,
            headers={"www-authenticate": 'Bearer realm="bastion-admin"', "content-type": _TEXT},
        )

    @app.get("/healthz")
    async def healthz(request: Request) -> Response:
        return refused(request) or _verdict(request, *health.liveness())

    @app.get("/readyz")
    async def readyz(request: Request) -> Response:
        return refused(request) or _verdict(request, *health.readiness())

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        denied = refused(request)
        if denied is not None:
            return denied
        accept = request.headers.get("accept") or ""
        if custom_registry is not None:
            encoder, content_type = choose_encoder(accept)
            return Response(encoder(custom_registry), headers={"content-type": content_type})
        body, content_type = await render_metrics(aggregator.view(), accept)
        return Response(body, headers={"content-type": content_type})

    @app.get("/api/summary")
    async def summary(request: Request) -> Response:
        denied = refused(request, dashboard=True)
        if denied is not None:
            return denied
        history = list(aggregator.history)
        # The GET paths the current jobs add (the balancer's /api/balancer, say), so the page
        # asks only for what is there.
        added = sorted({path for method, path, _ in (extra() if extra else ()) if method == "GET"})
        body = {"now": history[-1] if history else None, "history": history[-120:], "apis": added}
        return Response(json.dumps(body).encode(), headers={"content-type": _JSON})

    @app.get("/events")
    async def events(request: Request) -> Response | StreamingResponse:
        denied = refused(request, dashboard=True)
        if denied is not None:
            return denied
        return StreamingResponse(
            _feed(aggregator, request, tick),
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
            content_type="text/event-stream",
        )

    @app.get("/")
    async def dashboard(request: Request) -> Response:
        offered = request.query_param("token")
        if offered is not None and expected is not None and cookie is not None:
            return _exchange_token(offered, token or "", cookie)
        return refused(request, dashboard=True) or _asset(
            request, "index.html", "text/html; charset=utf-8"
        )

    @app.get("/assets/{name}")
    async def asset(request: Request) -> Response:
        denied = refused(request, dashboard=True)
        if denied is not None:
            return denied
        name = request.path_params["name"]
        kind = _ASSET_TYPES.get(name.rsplit(".", 1)[-1])
        if kind is None or "/" in name or "\\" in name or name.startswith("."):
            return Response(b"404 Not Found\n", status=404, headers={"content-type": _TEXT})
        return _asset(request, name, kind)

    if extra is not None:

        def guard(method: str, endpoint: Callable[[Request], Awaitable[Response]]) -> Any:
            async def guarded(request: Request) -> Response:
                return refused(request, dashboard=method == "GET") or await endpoint(request)

            return guarded

        app.mount("/", _JobRoutes(extra, guard))
    return app


class _JobRoutes:
    """What no built-in route answers goes to the current jobs' routes, rebuilt when the
    jobs change (a reload)."""

    def __init__(
        self,
        routes: Callable[[], Sequence[AdminRoute]],
        guard: Callable[[str, Callable[[Request], Awaitable[Response]]], Any],
    ) -> None:
        self._routes = routes
        self._guard = guard
        self._built: Sequence[AdminRoute] | None = None
        self._app = App()

    def handle(self, exchange: Exchange) -> None:
        routes = self._routes()
        if routes is not self._built:
            app = App()
            for method, path, endpoint in routes:
                app.route(path, [method])(self._guard(method, endpoint))
            self._app, self._built = app, routes
        self._app.handle(exchange)


_ASSET_TYPES = {
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "html": "text/html; charset=utf-8",
}
_COOKIE = "bastion_admin"
# The page loads nothing from another origin, and nothing may frame it or read its address.
_PAGE_HEADERS = (
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("referrer-policy", "no-referrer"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
)
_gzipped: dict[str, tuple[bytes, bytes]] = {}  # name -> (file as read, its gzip)


def _cookie_value(token: str) -> bytes:
    digest = hmac.new(token.encode(), b"bastion dashboard cookie", hashlib.sha256)
    return digest.hexdigest().encode()


def _cookies(request: Request, name: str) -> list[str]:
    found = []
    for header in request.headers.get_all("cookie"):
        for part in header.split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                found.append(value)
    return found


def _exchange_token(offered: str, token: str, cookie: bytes) -> Response:
    """``/?token=``: a cookie for the dashboard and a redirect that drops the token from the URL."""
    if not hmac.compare_digest(offered.encode("latin-1", "replace"), token.encode()):
        return Response(
            b"401 Unauthorized: wrong admin token\n",
            status=401,
            headers={"www-authenticate": 'Bearer realm="bastion-admin"', "content-type": _TEXT},
        )
    return Response(
        b"",
        status=303,
        headers=[
            ("location", "./"),
            ("set-cookie", f"{_COOKIE}={cookie.decode()}; Path=/; HttpOnly; SameSite=Strict"),
            ("cache-control", "no-store"),
            *_PAGE_HEADERS,
        ],
    )


def _asset(request: Request, name: str, content_type: str) -> Response:
    try:
        data = resources.files("bastion.observe").joinpath("dashboard", name).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return Response(b"404 Not Found\n", status=404, headers={"content-type": _TEXT})
    headers = [
        ("content-type", content_type),
        ("cache-control", "no-cache"),
        ("vary", "accept-encoding"),
        *_PAGE_HEADERS,
    ]
    # Compressed once per file and kept: a phone on a slow link loads a third of the bytes.
    if "gzip" in (request.headers.get("accept-encoding") or ""):
        cached = _gzipped.get(name)
        if cached is None or cached[0] != data:
            cached = _gzipped[name] = (data, gzip.compress(data, 9, mtime=0))
        headers.append(("content-encoding", "gzip"))
        data = cached[1]
    return Response(data, headers=headers)


def _verdict(request: Request, ok: bool, detail: dict[str, Any]) -> Response:
    status = 200 if ok else 503
    wants_json = "json" in (request.query_param("format") or "") or _JSON in (
        request.headers.get("accept") or ""
    )
    if wants_json:
        body = json.dumps({"ok": ok, **detail}, indent=1).encode()
        return Response(body, status=status, headers={"content-type": _JSON})
    lines = ["ok" if ok else "failing"]
    if "verbose" in request.query or not ok:
        lines.extend(_describe(detail))
    text = "\n".join(lines) + "\n"
    return Response(text.encode(), status=status, headers={"content-type": _TEXT})


def _within(service: str) -> str:
    return f"{service}: " if service else ""


def _describe(detail: dict[str, Any]) -> list[str]:
    lines = [f"- {reason}" for reason in detail.get("reasons", ())]
    services = detail.get("services")
    if isinstance(services, dict):  # bastion up: each service's own workers and checks
        for service, part in services.items():
            count = part.get("workers")
            lines.append(f"{service}: {count} serving" if isinstance(count, int) else f"{service}:")
            lines.extend(f"  {line}" for line in _describe_part(part))
    else:
        lines.extend(_describe_part(detail))
    return lines


def _describe_part(detail: dict[str, Any]) -> list[str]:
    lines = []
    for name, entry in sorted((detail.get("checks") or {}).items()):
        mark = "+" if entry["ok"] else "-"
        notes = "; ".join(
            f"worker {slot}: {result.get('detail') or 'ok'}"
            for slot, result in sorted(entry["workers"].items())
        )
        lines.append(f"[{mark}] {name}: {notes}")
    workers = detail.get("workers")
    if isinstance(workers, dict):  # liveness lists workers; readiness only counts them
        for slot, entry in sorted(workers.items()):
            mark = "+" if entry["ok"] else "-"
            lines.append(f"[{mark}] worker {slot} (pid {entry['pid']}) {entry['detail']}".rstrip())
    return lines


async def _feed(aggregator: Aggregator, request: Request, tick: float) -> AsyncIterator[bytes]:
    """The dashboard's stream: the recent history once, then each new point as it is made."""
    history = list(aggregator.history)
    yield b"retry: 2000\nevent: history\ndata: %s\n\n" % json.dumps(history).encode()
    sent = history[-1]["time"] if history else 0.0
    state = request.exchange.conn.state
    # Ends when the client goes, or when the server stops: a feed must not hold a drain open.
    while not request.disconnected and not state.draining:
        await asyncio.sleep(tick / 4)
        if aggregator.history and aggregator.history[-1]["time"] > sent:
            point = aggregator.history[-1]
            sent = point["time"]
            yield b"data: %s\n\n" % json.dumps(point).encode()


class _OneFamily:
    """What ``prometheus_client``'s encoders take: something with ``collect()``."""

    def __init__(self, family: Any) -> None:
        self._family = family

    def collect(self) -> list[Any]:
        return [self._family]


_EOF = b"# EOF\n"


async def render_metrics(view: AggregateView, accept: str) -> tuple[bytes, str]:
    """The exposition of ``view``, in the format ``accept`` asks for, rendered a metric family
    at a time with a turn of the loop in between: the loop also answers probes, and a scrape
    of a thousand series must not hold them up."""
    encoder, content_type = choose_encoder(accept)
    totals = await view.totals_stepwise()
    parts = []
    for family in MetricsCollector(view, totals=totals).collect():
        await asyncio.sleep(0)
        part = encoder(_OneFamily(family))  # type: ignore[arg-type]
        # OpenMetrics ends every exposition with "# EOF": once, at the very end.
        parts.append(part[: -len(_EOF)] if part.endswith(_EOF) else part)
    if content_type.startswith("application/openmetrics-text"):
        parts.append(_EOF)
    return b"".join(parts), content_type
