"""Bastion: Python's http.server API on a production engine.

Write handlers the way ``http.server`` taught (``bastion.compat``), as a native :class:`App`,
or as WSGI/ASGI applications; the engine underneath owns every socket on one event loop and
runs blocking code on a bounded thread pool.
"""

from bastion.app import (
    App,
    Headers,
    JSONResponse,
    Request,
    Response,
    StreamingResponse,
    SyncRequest,
)
from bastion.engine import Server, ServerConfig
from bastion.http import Limits

__version__ = "0.1.0"

__all__ = [
    "App",
    "Headers",
    "JSONResponse",
    "Limits",
    "Request",
    "Response",
    "Server",
    "ServerConfig",
    "StreamingResponse",
    "SyncRequest",
    "__version__",
]
