"""Benchmark Bastion against its peers with wrk, one server at a time.

    python bench/run.py [--scenario hello|pipelined|asgi|wsgi|compat|static-1k|static-1m|
                                    tls|workers|flask-json|fastapi-json] [--duration 10]
                        [--connections 50] [--only name1,name2] [--json out.json]

See ``--list`` for the scenarios and servers, and docs/benchmarks.md for the method.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    # Runs as a script, so make the repo root importable for the ``bench`` package.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.harness.cli import main

    sys.exit(main())
