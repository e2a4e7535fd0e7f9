"""A user's folder of applications, good and broken, for the loading tests."""

from __future__ import annotations

from pathlib import Path

WSGI = """
import os

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [os.environ.get("GREETING", "no greeting").encode()]

def create_app():
    return app

def configured(config):
    return app

count = 3
"""

ASGI = """
async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"asgi"})
"""

LIFESPAN_FAILS = """
async def app(scope, receive, send):
    assert scope["type"] == "lifespan"
    await receive()
    await send({"type": "lifespan.startup.failed", "message": "the database is unreachable"})
"""

LIFESPAN_RAISES = """
async def app(scope, receive, send):
    assert scope["type"] == "lifespan"
    await receive()
    raise ConnectionError("the database is down")
"""

RAISES = """
import json

SETTINGS = json.loads("{")
"""


def write_apps(tmp_path: Path) -> Path:
    """``tmp_path`` holding every application above, each as a module of its name."""
    (tmp_path / "web.py").write_text(WSGI)
    (tmp_path / "fast.py").write_text(ASGI)
    (tmp_path / "lifespan.py").write_text(LIFESPAN_FAILS)
    (tmp_path / "lifespan_raises.py").write_text(LIFESPAN_RAISES)
    (tmp_path / "raises.py").write_text(RAISES)
    (tmp_path / "broken.py").write_text("def app(:\n    pass\n")
    (tmp_path / "needs.py").write_text("\nimport not_installed_anywhere\n")
    (tmp_path / "quits.py").write_text("import sys\nsys.exit(3)\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "inner.py").write_text(WSGI)
    return tmp_path
