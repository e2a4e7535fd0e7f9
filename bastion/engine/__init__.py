"""The engine: an event loop that owns every socket, and a bounded pool for blocking code."""

from bastion.engine.body import BodyStream
from bastion.engine.config import ServerConfig
from bastion.engine.errors import ClientDisconnected
from bastion.engine.exchange import Exchange, ThreadWriter
from bastion.engine.handler import Handler
from bastion.engine.listeners import BindSpec, parse_bind
from bastion.engine.server import Server, new_event_loop, run
from bastion.engine.state import ServerState
from bastion.engine.stats import Stats

__all__ = [
    "BindSpec",
    "BodyStream",
    "ClientDisconnected",
    "Exchange",
    "Handler",
    "Server",
    "ServerConfig",
    "ServerState",
    "Stats",
    "ThreadWriter",
    "new_event_loop",
    "parse_bind",
    "run",
]
