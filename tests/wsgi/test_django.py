"""A minimal Django project on Bastion: views, a csrf_exempt POST, uploads, streaming, files."""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import requests

pytest.importorskip("django")

from bastion.wsgi import WSGIHandler
from tests.serving import RunningServer, serve

SETTINGS = "tests.wsgi.django_project.settings"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    from django.conf import settings
    from django.core.wsgi import get_wsgi_application

    from tests.wsgi.django_project import views

    if settings.configured and settings.SETTINGS_MODULE != SETTINGS:
        pytest.skip(f"Django is already set up in this process with {settings.SETTINGS_MODULE}")
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS

    data = tmp_path_factory.mktemp("django") / "report.bin"
    data.write_bytes(os.urandom(700 * 1024))
    views.FILE_PATH = str(data)
    with serve(WSGIHandler(get_wsgi_application())) as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def test_view(client: httpx.Client) -> None:
    response = client.get("/")
    assert (response.status_code, response.text) == (200, "Hello from Django")
    assert response.headers["content-length"] == "17"  # CommonMiddleware's, respected


def test_url_parameters_and_request_meta(server: RunningServer, client: httpx.Client) -> None:
    response = client.get("/items/12/?q=a&q=b%20c")
    assert response.json() == {
        "id": 12,
        "url": "/items/12/",
        "absolute": f"http://127.0.0.1:{server.port}/items/12/?q=a&q=b%20c",
        "query": ["a", "b c"],
        "remote": "127.0.0.1",
    }
    redirect = client.get("/items/12")  # APPEND_SLASH
    assert redirect.status_code == 301
    assert redirect.headers["location"] == "/items/12/"


def test_csrf_exempt_post_form_and_json(client: httpx.Client) -> None:
    response = client.post("/echo/", data={"name": "Grace", "lang": ["COBOL", "FLOW-MATIC"]})
    assert response.status_code == 201
    assert response.json() == {
        "method": "POST",
        "data": {"name": ["Grace"], "lang": ["COBOL", "FLOW-MATIC"]},
    }
    response = client.post("/echo/", json={"nested": {"ok": True}})
    assert response.json() == {"method": "POST", "data": {"nested": {"ok": True}}}


def test_csrf_protection_still_applies(client: httpx.Client) -> None:
    assert client.post("/protected/", data={"x": "1"}).status_code == 403
    assert client.get("/protected/").text == "csrf passed"


def test_file_upload(server: RunningServer) -> None:
    content = os.urandom(3 * 1024 * 1024)  # larger than the in-memory limit: a temp file
    response = requests.post(
        server.url + "/upload/",
        files={"upload": ("big.bin", io.BytesIO(content), "application/octet-stream")},
        timeout=20,
    )
    assert response.status_code == 200
    assert response.json() == {"size": len(content), "sha256": hashlib.sha256(content).hexdigest()}


def test_streaming_response(client: httpx.Client) -> None:
    with client.stream("GET", "/stream/") as response:
        assert response.headers["transfer-encoding"] == "chunked"
        assert list(response.iter_lines()) == [f"row {i}" for i in range(20)]


def test_file_response_uses_the_file_wrapper(client: httpx.Client) -> None:
    from tests.wsgi.django_project import views

    expected = Path(views.FILE_PATH).read_bytes()
    response = client.get("/file/")
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(expected))
    assert response.content == expected


def test_view_error_is_a_500_and_the_server_goes_on(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        assert client.get("/crash/").status_code == 500
    assert client.get("/missing/").status_code == 404
    assert client.get("/").status_code == 200
