from __future__ import annotations

import http.client

from tests.app.hello import app
from tests.serving import serve


def test_hello_over_http_client() -> None:
    with serve(app) as server:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
        for _ in range(3):  # the same keep-alive connection, three times
            conn.request("GET", "/")
            response = conn.getresponse()
            assert response.status == 200
            assert response.read() == b"Hello, world!"
            assert response.getheader("content-length") == "13"
        conn.close()
