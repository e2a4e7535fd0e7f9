"""Static files beside an App: ``mount(app, "/static", StaticFiles(...))``, and ``prefix=``."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion import App
from bastion.static import StaticFiles, mount
from tests.serving import serve
from tests.static.support import get, serve_dir, write


@pytest.fixture
def site(tmp_path: Path) -> Path:
    write(tmp_path / "logo.svg", "<svg/>")
    write(tmp_path / "css" / "site.css", "body{}")
    return tmp_path


def make_app() -> App:
    app = App()

    @app.get("/")
    async def home(request: object) -> str:
        return "home"

    @app.get("/staticky")
    def staticky(request: object) -> str:
        return "not static"

    return app


def test_mount_serves_files_under_the_prefix_and_the_app_elsewhere(site: Path) -> None:
    handler = mount(make_app(), "/static", StaticFiles(site))
    with serve(handler) as server:
        assert get(server, "/")[::2] == (200, b"home")
        assert get(server, "/staticky")[::2] == (200, b"not static")  # no false prefix match
        status, headers, body = get(server, "/static/logo.svg")
        assert (status, body) == (200, b"<svg/>")
        assert headers["content-type"] == "image/svg+xml; charset=utf-8"
        assert get(server, "/static/css/site.css")[::2] == (200, b"body{}")
        assert get(server, "/static/missing.css")[0] == 404
        status, headers, _ = get(server, "/static")
        assert (status, headers["location"]) == (301, "/static/")
        status, headers, _ = get(server, "/static/css")
        assert (status, headers["location"]) == (301, "/static/css/")
        listing = get(server, "/static/")[2].decode()
        assert "Index of /static/" in listing and 'href="css/"' in listing
        assert get(server, "/static/../etc/passwd")[0] in (400, 404)
        assert get(server, "/static/logo.svg", method="POST")[0] == 405
        assert get(server, "/nope")[0] == 404  # the App's own 404


def test_prefix_option_on_its_own(site: Path) -> None:
    with serve_dir(site, prefix="/assets/v1") as server:
        assert get(server, "/assets/v1/logo.svg")[::2] == (200, b"<svg/>")
        assert get(server, "/logo.svg")[0] == 404
        assert get(server, "/assets/logo.svg")[0] == 404
        status, headers, _ = get(server, "/assets/v1")
        assert (status, headers["location"]) == (301, "/assets/v1/")
        assert "Index of /assets/v1/css/" in get(server, "/assets/v1/css/")[2].decode()


def test_bad_arguments_are_refused(site: Path) -> None:
    with pytest.raises(NotADirectoryError):
        StaticFiles(site / "logo.svg")
    with pytest.raises(ValueError):
        StaticFiles(site, index="../x.html")
    with pytest.raises(ValueError):
        StaticFiles(site, prefix="static")
    with pytest.raises(ValueError):
        StaticFiles(site, cache_control="x\r\nSet-Cookie: a=b")
    with pytest.raises(ValueError):
        mount(make_app(), "/", StaticFiles(site))
