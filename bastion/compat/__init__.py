"""Drop-in replacements for ``http.server``: the same handler classes, a production engine.

Change ``from http.server import ...`` to ``from bastion.compat import ...`` and the same
handler code is served by an event loop with timeouts, limits and a bounded thread pool.
Handler classes are the standard library's own, so subclasses of either import work, and the
module offers what the running Python's ``http.server`` offers (``__all__``, ``test()``,
``executable``, ``nobody_uid``, the default error page): ``from bastion.compat import *``
gives the same names as ``from http.server import *``.
"""

import http.server as _stdlib
from http import HTTPStatus as HTTPStatus
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler
from http.server import executable as executable

from bastion.compat.adapter import HandlerClassAdapter as HandlerClassAdapter
from bastion.compat.command import test as test
from bastion.compat.servers import HTTPServer, ThreadingHTTPServer

# Not in typeshed's stub of http.server, but in every version's module.
nobody_uid = _stdlib.nobody_uid  # type: ignore[attr-defined]
DEFAULT_ERROR_MESSAGE: str = _stdlib.DEFAULT_ERROR_MESSAGE  # type: ignore[attr-defined]
DEFAULT_ERROR_CONTENT_TYPE: str = _stdlib.DEFAULT_ERROR_CONTENT_TYPE  # type: ignore[attr-defined]
__version__: str = _stdlib.__version__  # type: ignore[attr-defined]

__all__ = [
    "HTTPServer",
    "ThreadingHTTPServer",
    "BaseHTTPRequestHandler",
    "SimpleHTTPRequestHandler",
]

if hasattr(_stdlib, "CGIHTTPRequestHandler"):
    # Importable where the running Python has it, so code naming it still loads; serving it
    # is refused (see handler_factory): CGI needs the socket, which the event loop owns.
    CGIHTTPRequestHandler = _stdlib.CGIHTTPRequestHandler
    if "CGIHTTPRequestHandler" in _stdlib.__all__:
        __all__.append("CGIHTTPRequestHandler")
