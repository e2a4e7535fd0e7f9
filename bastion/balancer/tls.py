"""TLS to upstream servers: one client context per route's settings.

A context is built once per :class:`~bastion.balancer.config.UpstreamTLS` and used by every
connection of the routes that share those settings, for requests and health checks alike.
It is built again when one of its files changes, so a reload after a certificate rotation
picks the new one up; connections already open keep the session they have.
"""

from __future__ import annotations

import os
import ssl

from bastion.balancer.config import Route, UpstreamTLS

_contexts: dict[UpstreamTLS, tuple[tuple[int, ...], ssl.SSLContext]] = {}


def client_context(tls: UpstreamTLS) -> ssl.SSLContext:
    """The context for ``tls``; ``OSError``/``ssl.SSLError`` when a file cannot be loaded."""
    stamps = _stamps(tls)
    cached = _contexts.get(tls)
    if cached is not None and cached[0] == stamps:
        return cached[1]
    context = _build(tls)
    _contexts[tls] = (stamps, context)
    return context


def route_context(route: Route, override: ssl.SSLContext | None = None) -> ssl.SSLContext | None:
    """The context for ``route``'s ``https`` upstreams (None when it has none).

    ``override``, a context given in Python (``Balancer(config, ssl_context=...)``), serves
    the routes that have no TLS settings of their own.
    """
    if not any(upstream.scheme == "https" for upstream in route.upstreams):
        return None
    if override is not None and route.tls == UpstreamTLS():
        return override
    return client_context(route.tls)


def server_name(route: Route, host: str) -> str:
    """The name sent to and checked against an upstream at ``host``."""
    return route.tls.server_name or host


def check_route(route: Route) -> None:
    """ValueError naming the route and the file when its TLS settings cannot be loaded."""
    try:
        route_context(route)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        files = ", ".join(path for path in (route.tls.ca, route.tls.cert, route.tls.key) if path)
        raise ValueError(f'route "{route.name}": tls: cannot load {files}: {reason}') from None


def _build(tls: UpstreamTLS) -> ssl.SSLContext:
    if tls.ca and os.path.isdir(tls.ca):
        context = ssl.create_default_context(capath=tls.ca)
    else:
        # With a file of its own, only that file is trusted, not the system's store.
        context = ssl.create_default_context(cafile=tls.ca or None)
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.cert:
        context.load_cert_chain(tls.cert, tls.key or None)
    return context


def _stamps(tls: UpstreamTLS) -> tuple[int, ...]:
    stamps = []
    for path in (tls.ca, tls.cert, tls.key):
        if path:
            try:
                stamps.append(os.stat(path).st_mtime_ns)
            except OSError:
                stamps.append(-1)
    return tuple(stamps)
