"""Builds the request hot path with mypyc where it can, and installs pure Python where not.

The metadata is all in pyproject.toml; this file only decides on the compiled modules.

``BASTION_COMPILE`` chooses:

- unset or ``auto``: compile for a wheel or a regular install, not for an editable one (so
  that an edited source file takes effect without a rebuild);
- ``1``: compile, editable installs included (the extension modules are then written next to
  their sources, and shadow them until deleted or rebuilt);
- ``0``: never compile.

A build that cannot compile (no C compiler, no mypyc for this interpreter, a type error
under the mypy that the build got) warns and installs the same modules as pure Python: they
are the same code, and the test suite runs against both.
"""

from __future__ import annotations

import os
import platform
import sys
import sysconfig
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

# Read, not written here, because the tests, .ci/package and the benchmark harness need the
# same list and cannot import this file (compiled-modules.txt says why each module is in it).
with open("compiled-modules.txt") as listed:
    HOT_PATH = [name for line in listed if (name := line.partition("#")[0].strip())]

# The name of the shared library that holds the compiled code (a top-level module).
GROUP = "bastion"

# Commands that produce installable code; metadata queries must not pay for a compile.
BUILDING = {"bdist_wheel", "build", "build_ext", "install", "editable_wheel", "develop"}
EDITABLE = bool({"editable_wheel", "develop"}.intersection(sys.argv))


def _compile_wanted() -> bool:
    choice = os.environ.get("BASTION_COMPILE", "auto").strip().lower()
    if choice in ("0", "no", "false"):
        return False
    if platform.python_implementation() != "CPython" or not BUILDING.intersection(sys.argv):
        return False
    if choice in ("1", "yes", "true"):
        return True
    return not EDITABLE


def _fall_back(reason: object) -> list[Any]:
    print(f"bastion: installing pure Python, not compiling the hot path: {reason}", file=sys.stderr)
    return []


def _forget_stale_builds() -> None:
    """An editable install that does not compile removes what an earlier compiling one left
    next to the sources: those modules would shadow the edited ``.py`` files."""
    if not EDITABLE:
        return
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    stale = [path[: -len(".py")] + suffix for path in HOT_PATH] + [f"{GROUP}__mypyc{suffix}"]
    for path in stale:
        if os.path.exists(path):
            os.remove(path)


def _compiled_modules() -> list[Any]:
    if not _compile_wanted():
        _forget_stale_builds()
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as error:
        return _fall_back(error)
    try:
        # An isolated build has none of the dependencies installed: what the compiled code
        # needs of them is looked up at run time, and the modules that are not compiled are
        # type-checked by the project's own mypy run, not here (without the dependencies'
        # types, strict mode would find fault with them). The running Python's version is the
        # one checked, so version-dependent code compiles its own branch.
        version = f"--python-version={sys.version_info[0]}.{sys.version_info[1]}"
        options = ["--ignore-missing-imports", "--follow-imports=silent", version]
        return list(mypycify([*options, *HOT_PATH], opt_level="3", group_name=GROUP))
    except (Exception, SystemExit) as error:
        return _fall_back(error)


class OptionalBuildExt(build_ext):
    """A failed C compile leaves the pure-Python modules in place instead of failing.

    mypyc's modules are thin shims over one shared library, so it is all or nothing: after
    any failure, every extension already built is removed again.
    """

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:
            self._discard()
            _fall_back(error)

    def _discard(self) -> None:
        built = [self.get_ext_fullpath(ext.name) for ext in self.extensions]
        for path in [*built, *self.get_outputs()]:
            if os.path.exists(path):
                os.remove(path)


setup(ext_modules=_compiled_modules(), cmdclass={"build_ext": OptionalBuildExt})
