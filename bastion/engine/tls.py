"""TLS for listeners: one server-side ``ssl.SSLContext`` with modern defaults.

TLS 1.2 is the floor (1.0 and 1.1 are deprecated by RFC 8996); the cipher list is OpenSSL's
secure default unless ``ciphers`` overrides it; compression and renegotiation are off (CRIME,
renegotiation DoS). ALPN offers ``http/1.1`` only, so a client that prefers h2 falls back
instead of speaking a protocol we do not serve. The context is built once in the supervisor
and inherited by every worker, so workers share session ticket keys and resumption works
whichever worker a client reaches next.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

VERIFY_MODES = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


class TLSConfigError(ValueError):
    """A TLS setting cannot be used; ``key`` names the setting."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.reason = message


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """Certificate chain and key (PEM), and optionally the CA that client certificates must
    chain to; ``verify_client`` is ``none``, ``optional`` or ``required``."""

    cert: str
    key: str | None = None
    password: str | None = None
    ca: str | None = None
    verify_client: str = "none"
    ciphers: str | None = None


def server_context(config: TLSConfig) -> ssl.SSLContext:
    """A server context for ``config``; raises :class:`TLSConfigError` naming the bad setting."""
    if config.verify_client not in VERIFY_MODES:
        raise TLSConfigError(
            "tls_verify_client",
            f"expected one of {', '.join(VERIFY_MODES)}, got {config.verify_client!r}",
        )
    if config.verify_client != "none" and not config.ca:
        raise TLSConfigError(
            "tls_verify_client", "verifying client certificates needs tls_ca (the CA bundle)"
        )
    for key, path in (("tls_cert", config.cert), ("tls_key", config.key), ("tls_ca", config.ca)):
        if path is not None and not os.path.isfile(path):
            raise TLSConfigError(key, f"no such file: {path}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    if config.ciphers:
        try:
            context.set_ciphers(config.ciphers)
        except ssl.SSLError as exc:
            raise TLSConfigError("tls_ciphers", f"no usable cipher in {config.ciphers!r}") from exc
    try:
        context.load_cert_chain(config.cert, config.key, config.password)
    except ssl.SSLError as exc:
        raise TLSConfigError(
            "tls_cert",
            f"cannot load the certificate and key ({exc.reason or exc}); check that tls_cert "
            "is a PEM certificate chain and tls_key its private key",
        ) from exc
    if config.ca:
        try:
            context.load_verify_locations(cafile=config.ca)
        except ssl.SSLError as exc:
            raise TLSConfigError("tls_ca", f"cannot load CA certificates: {exc}") from exc
    context.verify_mode = VERIFY_MODES[config.verify_client]
    context.set_alpn_protocols(["http/1.1"])
    return context
