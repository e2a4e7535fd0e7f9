"""The native way to write a Bastion service: an ``App`` of routes."""

from bastion.app.app import App
from bastion.app.request import Headers, Request, SyncRequest
from bastion.app.response import JSONResponse, Response, StreamingResponse
from bastion.app.websocket import WebSocket

__all__ = [
    "App",
    "Headers",
    "JSONResponse",
    "Request",
    "Response",
    "StreamingResponse",
    "SyncRequest",
    "WebSocket",
]
