"""``python benchmarks/research/signal_stress.py [--runs N]``: Ctrl-C at random moments of
``segment_video`` runs; reports any that hang (docs/reliability.md).

Each run pumps frames from an endless source through a no-op segmenter into a counting sink,
and a timer thread sends this process SIGINT 2–30 ms in. A run that has not returned 10 s
later is a hang: the process prints which run and exits 3. Before the frame loop polled a stop
flag (``signals.interrupts_as_stop``), one run in several hundred hung: the KeyboardInterrupt,
raised wherever the main thread was, left a queue's lock held.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import threading
import time
from fractions import Fraction
from typing import Iterator

import numpy as np

from vidseg.engine.frame import Frame
from vidseg.engine.pipeline import segment_video
from vidseg.engine.timing import FrameTimings


class _Result:
    key_frame = True
    timings = FrameTimings(0.0, 0.0, 0.0)

    def at_size(self, height: int, width: int) -> "_Result":
        return self


class _NoOpSegmenter:
    def reset(self) -> None: ...

    def prepare(self, image: np.ndarray) -> np.ndarray:
        return image

    def note_dropped(self, count: int) -> None: ...

    def step(self, x: np.ndarray, timestamp_s: float | None = None) -> _Result:
        return _Result()


class _CountingSink:
    def __init__(self) -> None:
        self.frames = 0

    def write(self, image: np.ndarray, pts: int | None = None) -> None:
        self.frames += 1


def _endless() -> Iterator[Frame]:
    image = np.zeros((4, 4, 3), np.uint8)
    index = 0
    while True:
        yield Frame(image=image, index=index, pts=index, time_base=Fraction(1, 30))
        index += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/research/signal_stress.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    outside = 0  # interrupts that landed outside segment_video (in this harness)
    started = time.perf_counter()
    for run in range(args.runs):
        done = threading.Event()
        delay = rng.uniform(0.002, 0.03)

        def watchdog(run: int = run, done: threading.Event = done) -> None:
            if not done.wait(10):
                print(f"hang: run {run} did not return 10 s after SIGINT", flush=True)
                os._exit(3)

        def interrupt(delay: float = delay) -> None:
            time.sleep(delay)
            os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=watchdog, daemon=True).start()
        sender = threading.Thread(target=interrupt, daemon=True)
        try:
            try:
                sender.start()
                stats = segment_video(
                    _NoOpSegmenter(), _endless(), _CountingSink(), lambda frame, result: frame.image
                )
                assert stats.interrupted, "the run ended without being interrupted"
            finally:
                sender.join()
        except KeyboardInterrupt:
            outside += 1
        finally:
            done.set()
    print(
        f"{args.runs} runs, no hang ({outside} interrupts landed outside segment_video), "
        f"{time.perf_counter() - started:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
