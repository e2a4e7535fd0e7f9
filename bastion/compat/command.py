"""``test()`` and ``python -m bastion.compat``: the standard library's command, on Bastion.

The same flags (``port``, ``-b/--bind``, ``-d/--directory``, ``-p/--protocol``), the same
choice of address (the first that ``getaddrinfo`` offers for a passive socket: all interfaces
when ``-b`` is left out, IPv4 too when bound to ``::``) and the same lines on stdout. ``--cgi``
is refused: CGI hands the socket to a child process per request, which Bastion's model (one
event loop owns every socket) does not allow.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
from collections.abc import Sequence
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler
from typing import Any

from bastion.compat.servers import ThreadingHTTPServer

CGI_REFUSED = (
    "--cgi is not supported: CGI gives each request's socket to a child process, and in "
    "Bastion the event loop owns every socket. Run CGI scripts under python -m http.server."
)


def _best_family(bind: str | None, port: int) -> tuple[socket.AddressFamily, Any]:
    infos = socket.getaddrinfo(bind, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    return family, address


def test(
    HandlerClass: Any = BaseHTTPRequestHandler,
    ServerClass: Any = ThreadingHTTPServer,
    protocol: str = "HTTP/1.0",
    port: int = 8000,
    bind: str | None = None,
) -> None:
    """Serve ``HandlerClass`` on ``port`` until Ctrl-C, as ``http.server.test`` does."""
    ServerClass.address_family, address = _best_family(bind, port)
    handler: Any = HandlerClass.func if isinstance(HandlerClass, partial) else HandlerClass
    handler.protocol_version = protocol
    with ServerClass(address, HandlerClass) as httpd:
        host, port = httpd.socket.getsockname()[:2]
        url_host = f"[{host}]" if ":" in host else host
        print(f"Serving HTTP on {host} port {port} (http://{url_host}:{port}/) ...", flush=True)
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            print("\nKeyboard interrupt received, exiting.")
            sys.exit(0)


class DualStackServer(ThreadingHTTPServer):
    """Accepts IPv4 too when bound to an IPv6 address such as ``::``."""

    def server_bind(self) -> None:
        # An IPv4 socket has no such option; that is not an error.
        with contextlib.suppress(Exception):
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bastion.compat",
        description="Serve files from a directory, like python -m http.server.",
    )
    parser.add_argument("--cgi", action="store_true", help="not supported (see the error)")
    parser.add_argument(
        "-b", "--bind", metavar="ADDRESS", help="bind to this address (default: all interfaces)"
    )
    parser.add_argument(
        "-d",
        "--directory",
        default=os.getcwd(),
        help="serve this directory (default: current directory)",
    )
    parser.add_argument(
        "-p",
        "--protocol",
        metavar="VERSION",
        default="HTTP/1.0",
        help="conform to this HTTP version (default: %(default)s)",
    )
    parser.add_argument(
        "port", default=8000, type=int, nargs="?", help="bind to this port (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    if args.cgi:
        parser.error(CGI_REFUSED)

    # A subclass per run: test() sets protocol_version on the class it is given.
    handler_class = type("Handler", (SimpleHTTPRequestHandler,), {"__module__": __name__})
    test(
        HandlerClass=partial(handler_class, directory=args.directory),
        ServerClass=type("Server", (DualStackServer,), {}),
        port=args.port,
        bind=args.bind,
        protocol=args.protocol,
    )
    return 0
