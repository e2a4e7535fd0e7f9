"""``python -m bastion.static [DIR]``: the same as ``bastion serve [DIR]``."""

import sys

from bastion.static.cli import main

sys.exit(main())
