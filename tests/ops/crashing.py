"""An application whose workers die a moment after they start serving."""

from __future__ import annotations

import os
import threading

from tests.ops.apps import app

threading.Timer(0.2, os._exit, (7,)).start()

__all__ = ["app"]
