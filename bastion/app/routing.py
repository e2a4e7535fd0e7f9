"""Path routing: exact paths by dictionary lookup, parameterised ones by compiled pattern.

``/users/{id}`` matches one path segment, ``{id:int}`` only digits (converted to ``int``) and
``{rest:path}`` the remainder, slashes included. A path that matches with the wrong method is a
405 with ``Allow``, not a 404; a method neither standard nor taken by any route is a 501.
Methods are any token (``PURGE``, ``REPORT``); a route's methods are upper-cased when declared,
while a request's method is compared as sent (RFC 9110 §9.1: ``get`` is not ``GET``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

_PARAM: Final = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)(?::(str|int|path))?}")
_PATTERNS: Final = {"str": "[^/]+", "int": "[0-9]+", "path": ".*"}
_STANDARD_METHODS: Final = (
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "PATCH",
)


@dataclass(slots=True)
class Route:
    path: str
    endpoints: dict[str, Any] = field(default_factory=dict)
    pattern: re.Pattern[str] | None = None
    converters: dict[str, Callable[[str], Any]] = field(default_factory=dict)

    def allowed(self) -> list[str]:
        methods = set(self.endpoints)
        if "GET" in methods:
            methods.add("HEAD")
        return sorted(methods)


def compile_path(path: str) -> tuple[re.Pattern[str] | None, dict[str, Callable[[str], Any]]]:
    if not path.startswith("/"):
        raise ValueError(f"route path must start with '/': {path!r}")
    converters: dict[str, Callable[[str], Any]] = {}
    parts = []
    position = 0
    for match in _PARAM.finditer(path):
        name, kind = match.group(1), match.group(2) or "str"
        if name in converters:
            raise ValueError(f"parameter {name!r} appears twice in {path!r}")
        parts.append(re.escape(path[position : match.start()]))
        parts.append(f"(?P<{name}>{_PATTERNS[kind]})")
        converters[name] = int if kind == "int" else str
        position = match.end()
    if not converters:
        return None, {}
    parts.append(re.escape(path[position:]))
    return re.compile("".join(parts) + r"\Z"), converters


class Router:
    def __init__(self) -> None:
        self._exact: dict[str, Route] = {}
        self._patterned: list[Route] = []
        self._by_path: dict[str, Route] = {}
        # The methods this application knows: RFC 9110's and PATCH, and every one a route
        # takes. Any other is one it does not implement at all: a 501, not a 405 (RFC 9110
        # §15.5.6, §15.6.2).
        self._methods: set[str] = set(_STANDARD_METHODS)

    def add(self, path: str, methods: list[str], endpoint: Any) -> None:
        route = self._by_path.get(path)
        if route is None:
            pattern, converters = compile_path(path)
            route = Route(path, pattern=pattern, converters=converters)
            self._by_path[path] = route
            if pattern is None:
                self._exact[path] = route
            else:
                self._patterned.append(route)
        for method in methods:
            method = method.upper()
            if method in route.endpoints:
                raise ValueError(f"{method} {path} is already routed")
            route.endpoints[method] = endpoint
            self._methods.add(method)

    def implements(self, method: str) -> bool:
        """True if ``method`` is a standard one or some route takes it."""
        return method in self._methods

    def match(self, path: str) -> tuple[Route, dict[str, Any]] | None:
        route = self._exact.get(path)
        if route is not None:
            return route, {}
        for route in self._patterned:
            assert route.pattern is not None
            found = route.pattern.match(path)
            if found is not None:
                params = {
                    name: route.converters[name](value) for name, value in found.groupdict().items()
                }
                return route, params
        return None
