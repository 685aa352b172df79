"""``python -m vidseg.engine`` is ``vidseg-run``."""

import sys

from vidseg.engine.cli import main

sys.exit(main())
