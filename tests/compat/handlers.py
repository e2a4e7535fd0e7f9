"""Handler classes written purely against the standard library's http.server."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler
from typing import ClassVar


class Quiet(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class Hello(Quiet):
    """The classic example: HTTP/1.1 with a Content-Length keeps the connection."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-type", "text/plain")
        self.send_header("Content-Length", "13")
        self.end_headers()
        self.wfile.write(b"Hello, world!")


class Echo(Quiet):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        body = self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", self.headers.get("Content-Type", "application/x"))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class CustomHeaders(Quiet):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(201, "Made It")
        self.send_header("X-One", "1")
        self.send_header("Set-Cookie", "a=1")
        self.send_header("Set-Cookie", "b=2")
        self.send_header("Content-Length", "0")
        self.end_headers()


class Errors(Quiet):
    protocol_version = "HTTP/1.1"
    error_content_type = "text/plain;charset=utf-8"
    error_message_format = "E %(code)d %(message)s %(explain)s"

    def do_GET(self) -> None:
        if self.path == "/custom":
            self.send_error(418, "teapot", "short and stout")
        else:
            self.send_error(404)


class Head(Quiet):
    protocol_version = "HTTP/1.1"

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", "1234")
        self.end_headers()


class NoLength(Quiet):
    """HTTP/1.0 style: no Content-Length, the body ends when the connection does."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        for i in range(3):
            self.wfile.write(b"line %d\n" % i)


class Raises(Quiet):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        raise RuntimeError("handler bug")


class ReadsEverything(Quiet):
    """Reads rfile to EOF: on a socket that would swallow the next pipelined request."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read()
        reply = b"%d:%s" % (len(body), body[:20])
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"get")


class Inspect(Quiet):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        import json

        info = {
            "command": self.command,
            "path": self.path,
            "request_version": self.request_version,
            "requestline": self.requestline,
            "host": self.headers["host"],
            "multi": self.headers.get_all("X-Multi"),
            "missing": self.headers.get("X-Missing", "default"),
            "items": [list(item) for item in self.headers.items()][-2:],
            "client": self.client_address[0],
            "address_string": self.address_string(),
            "server_port": self.server.server_port,
            "close_connection": self.close_connection,
        }
        body = json.dumps(info).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Mirror(Quiet):
    """What it answers is chosen by the request: ``/status/<code>``, ``/header/<kind>``,
    ``/error/<code>``, ``/interim/<code>``, ``/keep/<connection>``, ``/nolength/-``; any
    other path echoes the method."""

    protocol_version = "HTTP/1.1"
    # The standard library's server writes a head and its body apart; without this, Nagle's
    # algorithm and the client's delayed ACK hold each response back for 40 ms there.
    disable_nagle_algorithm = True
    HEADER_VALUES: ClassVar[dict[str, str]] = {
        "ascii": "plain",
        "latin1": "D\u00e4ngerous",
        "utf8": "\u20ac uro",
    }

    def _answer(self) -> None:
        parts = self.path.split("?")[0].split("/")
        kind = parts[-2] if len(parts) > 2 else ""
        arg = parts[-1]
        if self.path == "/ping":
            self._body(200, b"pong")
        elif kind == "status":
            self.send_response(int(arg), f"Reason {arg}" if int(arg) % 2 else None)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif kind == "header":
            self.send_response(200)
            self.send_header("X-Value", self.HEADER_VALUES[arg])
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
        elif kind == "error":
            self.send_error(int(arg), "custom message" if int(arg) % 2 else None, "an explanation")
        elif kind == "interim":
            self.send_response_only(int(arg), "Interim")
            self.send_header("X-Interim", "1")
            self.end_headers()
            self._body(200, b"final")
        elif kind == "keep":
            self.send_response(200)
            self.send_header("Connection", arg)
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"kept")
        elif kind == "nolength":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"until the end")
        else:
            self._body(200, self.command.encode("latin-1"))

    def _body(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PURGE = _answer
    do_REPORT = do_CUSTOM = do_PLAY = locals()["_answer"]
    locals()["do_-BLARGH"] = _answer


class Mirror10(Mirror):
    protocol_version = "HTTP/1.0"
