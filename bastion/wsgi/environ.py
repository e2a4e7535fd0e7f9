"""The PEP 3333 ``environ`` of one request, built from the head the parser accepted.

Every string in it is a "native string" holding bytes as latin-1, as PEP 3333 requires:
``PATH_INFO`` is the percent-decoded path with each byte one character, so a UTF-8 path reaches
the application as the latin-1 reading of its bytes (frameworks re-encode it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote_to_bytes

from bastion.wsgi.streams import EMPTY_INPUT, ERRORS, FileWrapper, WSGIInput

if TYPE_CHECKING:
    from bastion.engine.exchange import Exchange
    from bastion.http import RequestHead

_CACHE_LIMIT: Final = 1024
_DEFAULT_PORTS: Final = {"http": "80", "https": "443"}
_PROTOCOLS: Final = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0"}

# Header name as the client spelled it -> environ key, or "" for a header not passed on.
_header_keys: Final[dict[bytes, str]] = {}
# Host header value -> (SERVER_NAME, SERVER_PORT or "" when the header names no port).
_hosts: Final[dict[str, tuple[str, str]]] = {}
# Origin-form target -> (PATH_INFO before the mount point is taken off, QUERY_STRING,
# REQUEST_URI): a busy service sees the same few targets again and again.
_targets: Final[dict[bytes, tuple[str, str, str]]] = {}
_CACHED_TARGET_LIMIT: Final = 256


def header_key(name: bytes) -> str:
    """The environ key for request header ``name``; "" when it must not reach the application.

    A name with ``_`` is dropped: ``X-User_Id`` and ``X-User-Id`` would both become
    ``HTTP_X_USER_ID``, letting a client forge a header a proxy in front of us vouches for.
    ``Proxy`` is dropped too (httpoxy: it would become ``HTTP_PROXY``, an outgoing proxy
    setting for code that reads proxies from the environment).
    """
    key = _header_keys.get(name)
    if key is None:
        lowered = name.lower()
        if lowered == b"content-type":
            key = "CONTENT_TYPE"
        elif lowered == b"content-length":
            key = "CONTENT_LENGTH"
        elif b"_" in name or lowered == b"proxy":
            key = ""
        else:
            key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        if len(_header_keys) < _CACHE_LIMIT:
            _header_keys[name] = key
    return key


def split_host(host: str) -> tuple[str, str]:
    """``example.com:8080`` -> (``example.com``, ``8080``); the port is "" when absent."""
    cached = _hosts.get(host)
    if cached is not None:
        return cached
    name, port = host, ""
    if host.startswith("["):  # an IPv6 literal keeps its brackets, as in a URL
        end = host.find("]")
        if end > 0:
            name, rest = host[: end + 1], host[end + 1 :]
            if rest.startswith(":"):
                port = rest[1:]
    else:
        before, sep, after = host.rpartition(":")
        if sep:
            name, port = before, after
    if port and not (port.isascii() and port.isdigit()):
        name, port = host, ""
    result = (name, port)
    if len(_hosts) < _CACHE_LIMIT:
        _hosts[host] = result
    return result


def _split_target(head: RequestHead) -> tuple[str, str, str]:
    target = head.target
    split = _targets.get(target)
    if split is not None:
        return split
    # (An absolute-form target's path and query are its URL's: the head splits them.)
    raw_path = head.raw_path
    if 37 in raw_path:  # "%"
        raw_path = unquote_to_bytes(raw_path)
    split = (
        raw_path.decode("latin-1"),
        head.query_string.decode("latin-1"),
        target.decode("latin-1"),
    )
    # Only origin-form: another form's path also depends on the method (RFC 9112 §3.2.4).
    if target[:1] == b"/" and len(target) <= _CACHED_TARGET_LIMIT and len(_targets) < _CACHE_LIMIT:
        _targets[target] = split
    return split


class EnvironBuilder:
    """Makes the environ dict; what is the same for every request is computed once here."""

    __slots__ = ("_root", "_root_len")

    def __init__(self, root_path: str) -> None:
        root = root_path.rstrip("/")
        if root and not root.startswith("/"):
            root = "/" + root
        # Compared with PATH_INFO, which holds bytes as latin-1.
        self._root = root.encode("utf-8").decode("latin-1")
        self._root_len = len(self._root)

    @property
    def root_path(self) -> str:
        return self._root

    def build(self, exchange: Exchange) -> dict[str, Any]:
        head = exchange.head
        path, query, uri = _split_target(head)
        root = self._root
        if root and path.startswith(root):
            size = self._root_len
            if len(path) == size or path[size] == "/":
                path = path[size:]
        conn = exchange.conn
        client = exchange.forwarded_client or conn.client
        scheme = exchange.forwarded_scheme or conn.scheme
        config = conn.state.config
        environ: dict[str, Any] = {
            "REQUEST_METHOD": head.method,
            "SCRIPT_NAME": root,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_URI": uri,
            "SERVER_PROTOCOL": _PROTOCOLS.get(head.version, "HTTP/1.1"),
            "SERVER_SOFTWARE": config.server_name,
            "REMOTE_ADDR": client[0] if client is not None else "",
            "REMOTE_PORT": str(client[1]) if client is not None else "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scheme,
            "wsgi.input": WSGIInput(exchange.body, config.blocking_read_timeout)
            if head.has_body
            else EMPTY_INPUT,
            "wsgi.errors": ERRORS,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "wsgi.file_wrapper": FileWrapper,
        }
        keys = _header_keys
        for name, value in head.headers:
            key = keys.get(name)
            if key is None:
                key = header_key(name)
            if not key:
                continue
            text = value.decode("latin-1")
            previous = environ.get(key)
            if previous is not None:
                text = previous + ("; " if key == "HTTP_COOKIE" else ", ") + text
            environ[key] = text
        host = environ.get("HTTP_HOST")
        if host:
            server_name, port = split_host(host)
            environ["SERVER_NAME"] = server_name
            environ["SERVER_PORT"] = port or _DEFAULT_PORTS.get(scheme, "80")
        else:
            server = exchange.server
            if server is None:  # a Unix socket
                environ["SERVER_NAME"] = "localhost"
                environ["SERVER_PORT"] = _DEFAULT_PORTS.get(scheme, "80")
            else:
                address = server[0]
                environ["SERVER_NAME"] = f"[{address}]" if ":" in address else address
                environ["SERVER_PORT"] = str(server[1])
        return environ
