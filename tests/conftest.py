from __future__ import annotations

import sys
from pathlib import Path

# Test helpers live beside the tests; make ``tests.serving`` importable however pytest is run.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
