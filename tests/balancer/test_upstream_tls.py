"""https upstreams: a private CA, a server name other than the address, client certificates."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bastion.balancer.config import BalancerConfig, HealthCheck, Route, Upstream, UpstreamTLS
from bastion.balancer.health import HealthChecker
from bastion.cli.balancefile import routes
from bastion.engine.tls import TLSConfig, server_context
from tests.balancer.upstreams import balancer, echo_app
from tests.ops.certs import Certificates, make_certificates
from tests.serving import RunningServer, serve

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def upstream(certs: Certificates) -> Iterator[RunningServer]:
    """An https upstream whose certificate names localhost and 127.0.0.1, from the test CA."""
    context = server_context(TLSConfig(cert=str(certs.server_cert), key=str(certs.server_key)))
    with serve(echo_app("secure"), ssl_context=context) as running:
        yield running


@pytest.fixture(scope="module")
def mutual(certs: Certificates) -> Iterator[RunningServer]:
    """An https upstream that requires a client certificate from the test CA."""
    config = TLSConfig(
        cert=str(certs.server_cert),
        key=str(certs.server_key),
        ca=str(certs.ca),
        verify_client="required",
    )
    with serve(echo_app("mutual"), ssl_context=server_context(config)) as running:
        yield running


def route(server: RunningServer, tls: UpstreamTLS) -> BalancerConfig:
    url = f"https://127.0.0.1:{server.port}"
    return BalancerConfig(routes=(Route(upstreams=(Upstream(url),), tls=tls),))


def status_through(config: BalancerConfig) -> tuple[int, str]:
    with balancer(config) as lb:
        response = httpx.get(lb.url + "/", timeout=10)
        return response.status_code, response.text


def test_a_private_ca_is_trusted_when_named(upstream: RunningServer, certs: Certificates) -> None:
    status, text = status_through(route(upstream, UpstreamTLS(ca=str(certs.ca))))
    assert status == 200 and text.startswith("name=secure")
    # The system's store does not know the test CA: the upstream is not believed.
    assert status_through(route(upstream, UpstreamTLS()))[0] == 502


def test_the_server_name_is_checked_against_the_certificate(
    upstream: RunningServer, certs: Certificates
) -> None:
    named = UpstreamTLS(ca=str(certs.ca), server_name="localhost")
    assert status_through(route(upstream, named))[0] == 200
    other = UpstreamTLS(ca=str(certs.ca), server_name="elsewhere.example")
    assert status_through(route(upstream, other))[0] == 502


def test_verify_false_accepts_any_certificate(upstream: RunningServer) -> None:
    assert status_through(route(upstream, UpstreamTLS(verify=False)))[0] == 200


def test_a_client_certificate_is_shown_when_given(
    mutual: RunningServer, certs: Certificates
) -> None:
    without = UpstreamTLS(ca=str(certs.ca))
    assert status_through(route(mutual, without))[0] == 502
    given = UpstreamTLS(ca=str(certs.ca), cert=str(certs.client_cert), key=str(certs.client_key))
    status, text = status_through(route(mutual, given))
    assert status == 200 and text.startswith("name=mutual")


def test_health_checks_use_the_routes_tls(upstream: RunningServer, certs: Certificates) -> None:
    def verdict(tls: UpstreamTLS, start_healthy: bool) -> bool:
        """The first verdict a checker reaches, starting from the other one."""
        check = HealthCheck(path="/", interval=0.1, timeout=2, rise=1, fall=1)
        (plain,) = route(upstream, tls).routes
        config = BalancerConfig(routes=(dataclasses.replace(plain, health=check),))
        key = plain.upstreams[0].key

        async def main() -> bool:
            changed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            checker = HealthChecker(
                config,
                lambda r, k, healthy: changed.done() or changed.set_result(healthy),
                initial={(plain.name, key): start_healthy},
            )
            running = asyncio.ensure_future(checker.run())
            try:
                return await asyncio.wait_for(changed, 10)
            finally:
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)

        return asyncio.run(main())

    assert verdict(UpstreamTLS(ca=str(certs.ca)), start_healthy=False) is True
    assert verdict(UpstreamTLS(), start_healthy=True) is False


def test_a_certificate_file_changed_on_disk_is_loaded_again(
    upstream: RunningServer, certs: Certificates, tmp_path: Path
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate\n")
    with pytest.raises(ValueError, match="tls: cannot load"):
        routes([{"upstreams": [f"https://127.0.0.1:{upstream.port}"], "tls": {"ca": str(ca)}}])
    shutil.copy(certs.ca, ca)
    stat = ca.stat()
    os.utime(ca, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    (loaded,) = routes(
        [{"upstreams": [f"https://127.0.0.1:{upstream.port}"], "tls": {"ca": str(ca)}}]
    )
    assert status_through(BalancerConfig(routes=(loaded,)))[0] == 200


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ({"key": "client.key"}, "tls.key needs tls.cert"),
        ({"verify": False, "ca": "ca.pem"}, "mean nothing with verify = false"),
        ({"server_name": "bad name"}, "is not a host name"),
        ({"ca": "/nonexistent/ca.pem"}, "tls: cannot load /nonexistent/ca.pem"),
        ({"verfy": False}, "tls.verfy"),
    ],
)
def test_bad_tls_settings_are_named(tls: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        routes([{"name": "api", "upstreams": ["https://10.0.0.2:8443"], "tls": tls}])
