"""ASGI 3 hosting: run Starlette, FastAPI and other ASGI applications on Bastion's engine.

``bastion.engine.run(ASGIHandler(app), ["127.0.0.1:8000"])`` serves ``app``; see docs/asgi.md.
"""

from bastion.asgi.handler import ASGIHandler
from bastion.asgi.lifespan import Lifespan, LifespanError, LifespanMode
from bastion.asgi.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "ASGIApp",
    "ASGIHandler",
    "Lifespan",
    "LifespanError",
    "LifespanMode",
    "Message",
    "Receive",
    "Scope",
    "Send",
]
