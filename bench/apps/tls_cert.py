"""Make a self-signed certificate for the TLS workload (``openssl`` must be installed).

    python -m bench.apps.tls_cert /tmp/bench-tls     # writes cert.pem and key.pem there

Bastion and uvicorn then serve hello world with the same certificate and key; wrk speaks TLS
to both (``https://`` URL), so the ratio is what each server adds on top of the same TLS work.
"""

import subprocess
import sys
from pathlib import Path


def make(directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out", str(cert),
            "-days", "30", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


if __name__ == "__main__":
    for path in make(Path(sys.argv[1] if len(sys.argv) > 1 else "bench-tls")):
        print(path)
