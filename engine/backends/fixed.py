"""Fixed device buffers for replaying a captured graph (CUDA graphs, TensorRT): the bookkeeping.

A captured graph reads and writes the same device addresses on every replay. So every input and
output gets one buffer allocated once, except the recurrent state, which gets two per tensor
(set 0 and set 1) and ping-pongs: run ``p`` reads set ``p`` and writes set ``1 - p``, then the
parity flips. Each parity is its own captured graph (ORT's ``gpu_graph_id``), so no run ever
binds one buffer as both its input and its output.

The caller keeps handing in what it holds (``StreamState`` keeps the last run's state outputs);
a feed that *is* the expected buffer costs nothing. Anything else is copied into the buffer
before the run (``Plan.uploads``): the frame and aux inputs each run, the zero state after a
reset. A device tensor the caller hands in repeatedly as the same object (a split bundle's
features, written by the encode graph into its own fixed output buffers) is adopted as the
input buffer the first time and bound without a copy from then on.

Pure bookkeeping: no runtime is imported here; buffers come from an ``alloc`` callback, so the
tests drive it with fakes on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from vidseg.engine.backends.base import TensorInfo
from vidseg.engine.errors import BackendError


@dataclass(frozen=True)
class Plan:
    """What to bind for one run."""

    graph_id: int  # the captured graph to replay: the state parity (0 or 1)
    inputs: dict[str, Any]  # input name -> its fixed buffer
    outputs: dict[str, Any]  # output name -> its fixed buffer
    uploads: tuple[tuple[str, Any], ...]  # (input name, value) to copy into inputs[name] first


def fixed_shapes_ok(inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo]) -> str | None:
    """None when every tensor's shape is static but for the leading batch axis, else why not
    (a captured graph needs every buffer's size known before the first run)."""
    for kind, tensors in (("input", inputs), ("output", outputs)):
        for t in tensors:
            if any(d is None for d in t.shape[1:]):
                return f"{kind} {t.name!r} has dynamic axes {list(t.shape)}"
    return None


class PingPongBuffers:
    """Fixed buffers of one graph for ``batch`` rows, state in two sets used in turn.

    Args:
        inputs, outputs: the graph's tensors (static but for the batch axis).
        state_pairs: (input, output) names of the state this graph reads and writes; pairs
            whose names are not both in the graph are ignored.
        alloc: ``(shape, dtype) -> buffer``, a zero-initialised tensor where the graph runs.
        batch: rows of every buffer.
    """

    def __init__(
        self,
        inputs: Sequence[TensorInfo],
        outputs: Sequence[TensorInfo],
        state_pairs: Sequence[tuple[str, str]],
        alloc: Callable[[tuple[int, ...], str], Any],
        batch: int = 1,
    ) -> None:
        why = fixed_shapes_ok(inputs, outputs)
        if why is not None:
            raise BackendError(f"fixed buffers need static shapes: {why}")
        self.batch = batch
        self.parity = 0
        self._inputs = {t.name: t for t in inputs}
        out_names = {t.name for t in outputs}
        self.state = {i: o for i, o in state_pairs if i in self._inputs and o in out_names}
        self._state_of = {o: i for i, o in self.state.items()}
        self._alloc = alloc
        shape = {t.name: (batch, *t.shape[1:]) for t in (*inputs, *outputs)}
        self._shape = shape
        dtype = {t.name: t.dtype for t in (*inputs, *outputs)}
        self._dtype = dtype
        # state: two sets; the others one buffer each (inputs allocated when first fed a host
        # value, so that a device tensor can be adopted instead)
        self.sets = {
            name: (alloc(shape[name], dtype[name]), alloc(shape[name], dtype[name]))
            for name in self.state
        }
        self.fixed_in: dict[str, Any] = {}
        self.fixed_out = {
            t.name: None if t.name in self._state_of else alloc(shape[t.name], dtype[t.name])
            for t in outputs
        }

    def plan(self, feeds: Mapping[str, Any]) -> Plan:
        """The buffers to bind for a run on ``feeds`` (every graph input by name).

        Raises:
            BackendError: an input is missing, or a host array's shape is not the buffer's.
        """
        p = self.parity
        inputs: dict[str, Any] = {}
        uploads: list[tuple[str, Any]] = []
        for name in self._inputs:
            if name not in feeds:
                raise BackendError(f"no value for graph input {name!r}")
            value = feeds[name]
            if isinstance(value, np.ndarray) and value.shape != self._shape[name]:
                raise BackendError(
                    f"input {name!r} is {list(value.shape)}, the fixed buffer "
                    f"{list(self._shape[name])}"
                )
            if name in self.state:
                buffer = self.sets[name][p]
            else:
                buffer = self.fixed_in.get(name)
                if buffer is None:
                    if isinstance(value, np.ndarray):
                        buffer = self._alloc(self._shape[name], self._dtype[name])
                    else:  # a device tensor: bound as it is from now on
                        buffer = value
                    self.fixed_in[name] = buffer
            if value is not buffer:
                uploads.append((name, value))
            inputs[name] = buffer
        outputs = {
            name: self.sets[self._state_of[name]][1 - p] if buffer is None else buffer
            for name, buffer in self.fixed_out.items()
        }
        return Plan(p, inputs, outputs, tuple(uploads))

    def advance(self) -> None:
        """After a successful run: the state just written is the next run's input."""
        self.parity ^= 1 if self.state else 0
