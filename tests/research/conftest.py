"""The research studies in benchmarks/research/ are not packaged: they import as top-level
modules, as they do when run as ``python benchmarks/research/NAME.py``."""

from __future__ import annotations

import sys
from pathlib import Path

RESEARCH = Path(__file__).resolve().parents[2] / "benchmarks" / "research"
if str(RESEARCH) not in sys.path:
    sys.path.insert(0, str(RESEARCH))
