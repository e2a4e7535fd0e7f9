"""What the compiled build (see setup.py) needs to know of a class, and whether it is in use.

A compiled class cannot be given attributes it does not declare, and only a class marked
``mypyc_attr(allow_interpreted_subclasses=True)`` can be subclassed by Python code: the
classes applications extend or decorate (``App``, ``Response``) are therefore never compiled,
and the handlers an application may subclass carry the mark. mypy_extensions, which defines
it, comes with the compiler; without it the mark does nothing, as nothing needs it then.
"""

from __future__ import annotations

from typing import Any

try:
    from mypy_extensions import mypyc_attr
except ImportError:

    def mypyc_attr(*args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
        return lambda cls: cls


def is_compiled() -> bool:
    """Whether this installation runs the compiled request path."""
    from bastion.engine import connection

    return not connection.__file__.endswith(".py")


__all__ = ["is_compiled", "mypyc_attr"]
