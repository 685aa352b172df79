"""``vidseg-models``: list every registered model with its family, size and input stride.

Each variant is built from scratch (``pretrained=False``) to count its parameters; seed-001
variants also show the count the paper's Table 3 gives (at its 20 Cityscapes labels, so pass
``--num-classes 20`` to compare digit for digit).
"""

from __future__ import annotations

import argparse
import os
import sys

from vidseg.engine.clihelp import CliParser, HelpFormatter
from vidseg.engine.errors import VidsegError, exit_code_for
from vidseg.models.registry import create_model, list_models
from vidseg.models.unet001 import PAPER_NUM_CLASSES, PAPER_TABLE3_PARAMS

PARAMS_PER_MILLION = 1_000_000


def model_rows(num_classes: int | None = None) -> list[tuple[str, str, float, int, float | None]]:
    """(name, family, parameters in millions, input stride, paper's count in millions or None)
    for every registered name, sorted by name."""
    rows = []
    for name in list_models():
        model = create_model(name, pretrained=False, num_classes=num_classes)
        params = sum(p.numel() for p in model.parameters()) / PARAMS_PER_MILLION
        paper = PAPER_TABLE3_PARAMS.get(name)
        paper_m = paper / PARAMS_PER_MILLION if paper is not None else None
        rows.append((name, model.cfg.family, params, model.cfg.stride, paper_m))
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(
        prog="vidseg-models", description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter
    )
    p.add_argument(
        "--num-classes",
        type=int,
        help="build with this many classes (default: each model's own, 11 for CamVid)",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.num_classes is not None and not 1 <= args.num_classes <= 255:
        parser.error(f"--num-classes must be within 1..255 (uint8 labels), got {args.num_classes}")
    try:
        rows = model_rows(args.num_classes)
    except VidsegError as exc:
        if args.debug:
            raise
        print(f"vidseg-models: error: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    width = max(len(r[0]) for r in rows)
    paper_head = f"paper_M({PAPER_NUM_CLASSES}cls)"
    lines = [f"{'name':<{width}}  {'family':<9}  {'params_M':>8}  {'stride':>6}  {paper_head}"]
    for name, family, params, stride, paper in rows:
        paper_col = f"{paper:.3f}" if paper is not None else "-"
        paper_col = f"{paper_col:>{len(paper_head)}}"
        lines.append(f"{name:<{width}}  {family:<9}  {params:8.3f}  {stride:6d}  {paper_col}")
    try:
        print("\n".join(lines))
        sys.stdout.flush()
    except BrokenPipeError:  # `vidseg-models | head`: the reader left, which is fine
        sys.stdout = open(os.devnull, "w")
    return 0


if __name__ == "__main__":
    sys.exit(main())
