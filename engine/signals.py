"""How a signal stops a run: SIGTERM handled like Ctrl-C (``sigterm_as_interrupt``, for the
command lines), and both turned into a stop between frames while the frame loop runs
(``interrupts_as_stop``)."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator


@contextmanager
def sigterm_as_interrupt() -> Iterator[list[int]]:
    """While inside, SIGTERM (``docker stop``, systemd, kill) raises KeyboardInterrupt in the
    main thread like Ctrl-C: the frames done are written. Yields the signals received."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: object) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def interrupts_as_stop() -> Iterator[threading.Event]:
    """While inside, a SIGINT or SIGTERM whose handler raises KeyboardInterrupt (Python's
    Ctrl-C; ``vidseg-run``'s SIGTERM) sets the yielded event instead: the loop polls it and stops
    between frames. A KeyboardInterrupt raised at whatever bytecode the main thread was on can
    land inside a queue's lock (the handler runs right after a C call returns, e.g. in
    ``Condition.__enter__``) and leave it held: the stages' shutdown then waits forever. The
    handler itself still runs (it records the signal); a second signal, while the first is being
    honoured, raises as before. Elsewhere than on the main thread it only yields the event.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous: dict[int, Callable[[int, Any], Any]] = {}

    def deferred(signum: int, frame: Any) -> None:
        try:
            previous[signum](signum, frame)
        except KeyboardInterrupt:
            if stop.is_set():  # asked again: the user insists
                raise
            stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if callable(handler):
            previous[signum] = handler
            signal.signal(signum, deferred)
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
