"""Drop-in replacements for ``http.server``: the same handler classes, a production engine.

Change ``from http.server import ...`` to ``from bastion.compat import ...`` and the same
handler code is served by an event loop with timeouts, limits and a bounded thread pool.
Handler classes are the standard library's own, so subclasses of either import work.
"""

from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler

from bastion.compat.adapter import HandlerClassAdapter
from bastion.compat.servers import HTTPServer, ThreadingHTTPServer

__all__ = [
    "BaseHTTPRequestHandler",
    "HTTPServer",
    "HandlerClassAdapter",
    "SimpleHTTPRequestHandler",
    "ThreadingHTTPServer",
]
