"""``python -m vidseg.engine`` is ``vidseg-run``."""

import sys

from vidseg.engine.cli import main

if __name__ == "__main__":
    sys.exit(main())
