"""WebSocket echo: Bastion's native route and ASGI/FastAPI endpoints against uvicorn.

    python bench/websocket_echo.py [--connections 50] [--duration 10] [--rounds 3]
                                   [--only bastion-native,uvicorn-asgi] [--idle 10000]

Small text messages (32 bytes), one in flight per connection; see bench/harness/wsecho.py
for the method and docs/benchmarks.md for results.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    # Runs as a script, so make the repo root importable for the ``bench`` package.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.harness.wsecho import main

    sys.exit(main())
