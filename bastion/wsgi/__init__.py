"""PEP 3333: serve WSGI applications (Flask, Django, ...) with ``WSGIHandler(app)``."""

from bastion.wsgi.handler import WSGIApplication, WSGIHandler
from bastion.wsgi.streams import ErrorStream, FileWrapper, WSGIInput

__all__ = ["ErrorStream", "FileWrapper", "WSGIApplication", "WSGIHandler", "WSGIInput"]
