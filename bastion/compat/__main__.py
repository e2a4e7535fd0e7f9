"""``python -m bastion.compat``: ``python -m http.server`` with the same flags, on Bastion."""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
from collections.abc import Sequence
from functools import partial

from bastion.compat import SimpleHTTPRequestHandler, ThreadingHTTPServer


class _DualStackServer(ThreadingHTTPServer):
    def server_bind(self) -> None:
        # Serve IPv4 too when bound to "::", as the standard library's command does.
        with contextlib.suppress(Exception):
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def _address_family(bind: str | None) -> tuple[socket.AddressFamily, str]:
    infos = socket.getaddrinfo(bind, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    return family, str(address[0])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bastion.compat",
        description="Serve files from a directory, like python -m http.server.",
    )
    parser.add_argument("port", type=int, nargs="?", default=8000)
    parser.add_argument("-b", "--bind", metavar="ADDRESS", help="bind to this address")
    parser.add_argument("-d", "--directory", default=os.getcwd(), help="serve this directory")
    parser.add_argument(
        "-p", "--protocol", default="HTTP/1.0", help="the protocol version the handler speaks"
    )
    args = parser.parse_args(argv)
    family, host = _address_family(args.bind)

    class Handler(SimpleHTTPRequestHandler):
        protocol_version = args.protocol

    server_class = type("Server", (_DualStackServer,), {"address_family": family})
    handler = partial(Handler, directory=args.directory)
    with server_class((host, args.port), handler) as httpd:  # type: ignore[arg-type]
        address = httpd.socket.getsockname()
        url_host = f"[{address[0]}]" if ":" in address[0] else address[0]
        print(
            f"Serving HTTP on {address[0]} port {address[1]} (http://{url_host}:{address[1]}/) ...",
            flush=True,
        )
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            print("\nKeyboard interrupt received, exiting.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
