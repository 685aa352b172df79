"""When a stream's memory no longer applies to the frame in front of it: the refresh rule.

A memory carried from frame to frame (a recurrent state; a tile memory's class probabilities,
carried by optical flow) is worth something only while the scene it holds is the scene in view.
When frames come far apart (a loaded machine dropping frames, ``--vid-stride``, ``--max-fps``, a
1 fps camera, a seek) or the scene cuts, the carried past paints the wrong scene. Before a frame
runs, the memory is judged stale on either of two kinds of evidence:

* **time**: the frame's timestamp is more than ``max_gap_s`` after the previous frame's, or
  before it (a seek back, a looped file). Timestamps are the source's (a video's pts), so the
  gaps the engine itself makes by striding or dropping frames count. Frames without timestamps
  are never stale by time.
* **content**: an aux-input provider that sees the frame and the one before it reports the share
  of the frame its past fails to explain (its ``mismatch`` attribute, set by each call; the
  ``dis_flow`` provider: the cells that the previous frame, warped by the flow, misses by more
  than ``engine.aux_inputs.dis_flow.MISMATCH_GREY`` grey levels), and that share is above
  ``max_mismatch``.
  Bundles without such a provider are judged by time alone.

A stale frame refreshes the stream: the same reset as ``Segmenter.reset`` (state and caches to
zeros, providers restarted), so the frame runs exactly as the first frame of a stream would. A
tile memory then takes its key view, which fills its whole memory from this frame; a recurrent
state starts from zeros.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

# the defaults, chosen on CamVid val (docs/families.md, "Frames far apart")
DEFAULT_MAX_GAP_S = 0.2
DEFAULT_MAX_MISMATCH = 0.04


@dataclass(frozen=True)
class Refresh:
    """When a stream's memory is stale (module docstring); None turns a rule off.

    Args:
        max_gap_s: seconds between two frames' timestamps above which the past no longer
            applies (a timestamp going back always refreshes while this rule is on).
        max_mismatch: share of the frame (0..1) the past may fail to explain, by a provider
            that measures it (``mismatch``).

    Raises:
        ValueError: a threshold is not a positive number.
    """

    max_gap_s: float | None = DEFAULT_MAX_GAP_S
    max_mismatch: float | None = DEFAULT_MAX_MISMATCH

    def __post_init__(self) -> None:
        for name in ("max_gap_s", "max_mismatch"):
            value = getattr(self, name)
            if value is not None and not (
                isinstance(value, (int, float)) and math.isfinite(value) and value > 0
            ):
                raise ValueError(f"{name} must be a number > 0 (or None: off), got {value!r}")

    @classmethod
    def off(cls) -> "Refresh":
        """Never refresh: the memory carried whatever the gaps and the content."""
        return cls(None, None)

    def stale_by_time(self, previous: float | None, timestamp: float | None) -> bool:
        """Whether a frame at ``timestamp`` finds the memory of a frame at ``previous`` stale
        (seconds; False when either is None or the rule is off)."""
        if self.max_gap_s is None or previous is None or timestamp is None:
            return False
        return timestamp < previous or timestamp - previous > self.max_gap_s

    def stale_by_content(self, providers: Iterable[Any]) -> float | None:
        """The largest ``mismatch`` the ``providers`` report for the frame they just saw when
        it is above ``max_mismatch``, else None (also when the rule is off)."""
        if self.max_mismatch is None:
            return None
        worst = max(
            (m for p in providers if (m := getattr(p, "mismatch", None)) is not None),
            default=None,
        )
        return worst if worst is not None and worst > self.max_mismatch else None
