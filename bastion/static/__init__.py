"""Static files: a directory tree served safely and fast (``bastion serve``).

``StaticFiles(directory)`` is an engine handler; ``mount(app, "/static", StaticFiles(...))``
serves it beside another handler. See docs/static.md.
"""

from bastion.static.handler import StaticFiles
from bastion.static.mount import Mount, mount

__all__ = ["Mount", "StaticFiles", "mount"]
