"""The classic ``http.server`` hello handler: the reference point every Python user knows.

Usage: ``python -m bench.apps.stdlib_hello PORT [--impl stdlib|bastion]``.
``--impl bastion`` swaps in ``bastion.compat.ThreadingHTTPServer`` with the very same
handler class, which is what the "compat" scenario compares.
"""

import argparse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import cast

BODY = b"Hello, world!"


class HelloHandler(BaseHTTPRequestHandler):
    """Answers every GET with the 13-byte hello body over a keep-alive HTTP/1.1 connection."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-type", "text/plain")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: object) -> None:
        """Silence the per-request log line: writing it to stderr would dominate the run."""


def server_class(impl: str) -> type[ThreadingHTTPServer]:
    """Pick the server class; imported lazily so the stdlib row never needs bastion."""
    if impl == "bastion":
        from bastion.compat import ThreadingHTTPServer as CompatServer

        return cast("type[ThreadingHTTPServer]", CompatServer)
    return ThreadingHTTPServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--impl", choices=("stdlib", "bastion"), default="stdlib")
    args = parser.parse_args()
    server = server_class(args.impl)((args.host, args.port), HelloHandler)
    with server:
        server.serve_forever()


if __name__ == "__main__":
    main()
