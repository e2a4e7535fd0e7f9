"""Soak a Bastion server: a long mix of valid, malformed, slow and abandoned clients.

    python bench/soak.py [--duration 600] [--interface app|asgi|wsgi] [--json out.json]

Reports every server process's RSS and open fds from the baseline to the end, the
connections left on the server's port, and each client kind's outcomes; exits 1 if fds or
connections did not come back to the baseline or any answer was wrong. See
``bench/harness/soak.py`` and docs/benchmarks.md.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    # Runs as a script, so make the repo root importable for the ``bench`` package.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.harness.soak import main

    sys.exit(main())
