"""nginx as the upstream: a server Bastion did not write, behind the balancer."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bastion.balancer import single_route
from tests.balancer.upstreams import balancer

CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 256; }}
http {{
    log_format by_connection '$connection $request';
    access_log {root}/access.log by_connection;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    keepalive_timeout 30s;
    server {{
        listen 127.0.0.1:{port};
        root {root}/www;
        location = /hello {{ default_type text/plain; return 200 "Hello from nginx\\n"; }}
        location = /gone {{ return 404; }}
        location = /echo-host {{
            default_type text/plain; return 200 "$http_host $http_x_forwarded_for\\n";
        }}
    }}
}}
"""


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if binary is None:
        pytest.skip("nginx is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "big.bin").write_bytes(bytes(range(256)) * 4096 * 4)  # 4 MiB
    tmp_path.chmod(0o755)
    (tmp_path / "www").chmod(0o755)
    conf = tmp_path / "nginx.conf"
    conf.write_text(CONF.format(root=tmp_path, port=port))
    process = subprocess.Popen(
        [binary, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail("nginx did not start: " + (tmp_path / "error.log").read_text())
        yield f"http://127.0.0.1:{port}", tmp_path
    finally:
        process.terminate()
        process.wait(10)


def test_nginx_behind_the_balancer(nginx: tuple[str, Path]) -> None:
    url, root = nginx
    with balancer(single_route([url])) as lb, httpx.Client(base_url=lb.url) as client:
        for _ in range(20):
            response = client.get("/hello")
            assert response.text == "Hello from nginx\n"
        assert response.headers["server"].startswith("nginx")
        assert client.get("/gone").status_code == 404
        host, forwarded_for = client.get(
            "/echo-host", headers={"x-forwarded-for": "6.6.6.6"}
        ).text.split()
        assert host == f"127.0.0.1:{lb.port}" and forwarded_for == "127.0.0.1"
        big = client.get("/big.bin")
        assert big.content == bytes(range(256)) * 4096 * 4
        head = client.head("/big.bin")
        assert head.content == b"" and head.headers["content-length"] == str(4 * 1024 * 1024)
        ranged = client.get("/big.bin", headers={"range": "bytes=0-9"})
        assert ranged.status_code == 206 and ranged.content == bytes(range(10))
    # nginx saw every request, all on one kept-alive connection from the balancer. It logs a
    # request after answering it, so the last line may come a moment after the last answer.
    deadline = time.monotonic() + 5
    while len(lines := (root / "access.log").read_text().splitlines()) < 25:
        assert time.monotonic() < deadline, lines
        time.sleep(0.02)
    assert len(lines) == 25
    assert len({line.split()[0] for line in lines}) == 1, lines
