"""``python -m bastion.compat``: ``python -m http.server`` with the same flags, on Bastion."""

import sys

from bastion.compat.command import main

if __name__ == "__main__":
    sys.exit(main())
