"""Memory cost of idle keep-alive connections on a Bastion server.

Starts ``python -m bastion run bench.apps.native_async:app`` itself, opens N connections
that each complete one request and then sit idle, and reports the server's RSS (VmRSS,
summed over its process tree) before and after. Idle connections are what a server holds
most of in production, so their per-connection cost matters more than any req/s figure.

    python bench/idle_connections.py [--connections 10000] [--hold 5]
                                     [--server-args "--keepalive-timeout 120"]

The server's default keep-alive timeout may close idle connections within seconds; pass a
longer one with ``--server-args`` so the "after" figure really holds N connections.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    # Runs as a script, so make the repo root importable for the ``bench`` package.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.harness.idle import main

    sys.exit(main())
