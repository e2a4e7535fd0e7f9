"""HTTPS: verified by a client that trusts only the test CA; bad handshakes cost nothing."""

from __future__ import annotations

import json
import os
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.ops.certs import Certificates, make_certificates
from tests.ops.running import Supervisor, supervisor
from tests.serving import read_until_close

APP = "tests.ops.apps:app"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def https(certs: Certificates) -> Iterator[Supervisor]:
    args = (
        "--bind", "127.0.0.1:0", "--workers", "2", "--header-timeout", "2",
        "--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key),
        "--interface", "app",
    )  # fmt: skip
    with supervisor(APP, *args) as proc:
        yield proc


def client_context(certs: Certificates) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certs.ca))


def test_https_is_verified_against_the_ca_and_handlers_see_the_scheme(
    https: Supervisor, certs: Certificates
) -> None:
    assert https.scheme == "https"
    url = f"https://127.0.0.1:{https.port}"
    with httpx.Client(verify=client_context(certs)) as client:
        response = client.get(f"{url}/")
        assert response.status_code == 200
        assert response.text == "Hello, world!"
        assert response.http_version == "HTTP/1.1"
        assert json.loads(client.get(f"{url}/whoami").text)["scheme"] == "https"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/", verify=True)  # the system CAs do not know ours


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_alpn_offers_http11_and_old_protocols_are_refused(
    https: Supervisor, certs: Certificates
) -> None:
    context = client_context(certs)
    context.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", https.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.selected_alpn_protocol() == "http/1.1"
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    old = client_context(certs)
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1 at all
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    with (
        socket.create_connection(("127.0.0.1", https.port), timeout=5) as raw,
        pytest.raises(ssl.SSLError, match=r"PROTOCOL_VERSION|protocol version|EOF"),
    ):
        old.wrap_socket(raw, server_hostname="localhost")  # the server hangs up on it


def test_plain_http_and_garbage_on_the_tls_port_are_closed_cleanly(
    https: Supervisor, certs: Certificates
) -> None:
    for data in (
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        os.urandom(512),
        b"\x16\x03\x01\x00\x05hello",
    ):
        with socket.create_connection(("127.0.0.1", https.port), timeout=5) as sock:
            sock.sendall(data)
            started = time.monotonic()
            assert read_until_close(sock, timeout=6) == b""
            assert time.monotonic() - started < 5
    assert httpx.get(f"https://127.0.0.1:{https.port}/", verify=client_context(certs)).text == (
        "Hello, world!"
    )
    assert "Traceback" not in https.text


def test_a_stalled_handshake_is_timed_out_without_slowing_anyone_else(
    https: Supervisor, certs: Certificates
) -> None:
    stalled = [socket.create_connection(("127.0.0.1", https.port), timeout=5) for _ in range(20)]
    stalled[0].sendall(b"\x16\x03\x01")  # the start of a ClientHello, then nothing
    started = time.monotonic()
    with httpx.Client(verify=client_context(certs)) as client:
        for _ in range(10):
            assert client.get(f"https://127.0.0.1:{https.port}/").status_code == 200
    # All ten were answered while the stalled handshakes were still waiting out their
    # 2-second deadline: the stalled peers held nobody up.
    assert time.monotonic() - started < 2.0
    for sock in stalled:
        assert read_until_close(sock, timeout=6) == b""
        sock.close()
    assert time.monotonic() - started < 8


def test_client_certificates_can_be_required(certs: Certificates) -> None:
    args = (
        "--bind", "127.0.0.1:0", "--tls-cert", str(certs.server_cert),
        "--tls-key", str(certs.server_key), "--tls-ca", str(certs.ca),
        "--tls-verify-client", "required",
    )  # fmt: skip
    with supervisor(APP, *args) as proc:
        url = f"https://127.0.0.1:{proc.port}/"
        with_cert = client_context(certs)
        with_cert.load_cert_chain(str(certs.client_cert), str(certs.client_key))
        assert httpx.get(url, verify=with_cert).status_code == 200
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            httpx.get(url, verify=client_context(certs))


def test_unusable_tls_settings_are_named(tmp_path: Path, certs: Certificates) -> None:
    with supervisor(APP, "--tls-cert", str(tmp_path / "missing.pem"), ready=False) as proc:
        assert proc.wait(20) == 2
        assert "--tls-cert: no such file" in proc.text
    args = ("--tls-cert", str(certs.server_cert), "--tls-key", str(certs.ca))
    with supervisor(APP, *args, ready=False) as proc:
        assert proc.wait(20) == 2
        assert "--tls-cert: cannot load the certificate and key" in proc.text
    with supervisor(APP, "--tls-cert", str(certs.server_cert), "--tls-verify-client",
                    "required", ready=False) as proc:  # fmt: skip
        assert proc.wait(20) == 2
        assert "--tls-verify-client: needs tls_ca" in proc.text
