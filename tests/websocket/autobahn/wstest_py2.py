"""Runs Autobahn's ``wstest`` from packages installed with ``pip install --target DIR`` on
Python 2.7, where the namespace packages (zope.interface) need ``site.addsitedir``.

    python2.7 wstest_py2.py DIR [wstest arguments]
"""

import site
import sys

site.addsitedir(sys.argv[1])

from autobahntestsuite import wstest

# Python 2 syntax: no unpacking in a list display.
sys.argv = ["wstest"] + sys.argv[2:]  # noqa: RUF005
wstest.run()
