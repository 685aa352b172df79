"""Per-stream temporal state: the one home of the tensors a model carries frame to frame.

Built from the manifest's ``state`` specs and checked against the graph the backend loaded, so a
bundle whose manifest and graph disagree fails at load time with a ``StateSpecError``.
After each run ``advance`` makes every ``<x>_out`` the next ``<x>_in``: the backend's output
tensor itself becomes the next input (no copy; on a GPU the buffer never leaves the device).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from vidseg.engine.backends.base import Backend, TensorInfo
from vidseg.engine.bundle import StateSpec
from vidseg.engine.errors import StateSpecError


def check_state_specs(
    specs: tuple[StateSpec, ...],
    reader: Backend,
    writer: Backend,
    reader_name: str,
    writer_name: str | None = None,
) -> None:
    """Every spec's input exists in ``reader``'s graph and its output in ``writer``'s, with the
    declared shape and dtype. For recurrent state both are the step graph; for a key-frame
    cache the key graph writes and the current graph reads.

    Raises:
        StateSpecError: naming the graph, the tensor and what differs.
    """
    writer_name = writer_name or reader_name
    inputs = {t.name: t for t in reader.inputs}
    outputs = {t.name: t for t in writer.outputs}
    for spec in specs:
        for name, table, kind, graph in (
            (spec.input, inputs, "input", reader_name),
            (spec.output, outputs, "output", writer_name),
        ):
            info = table.get(name)
            if info is None:
                raise StateSpecError(
                    f"{graph}: manifest declares state {kind} {name!r}, the graph has "
                    f"{kind}s {sorted(table)}"
                )
            _check_shape(spec, info, graph)


def _check_shape(spec: StateSpec, info: TensorInfo, graph: str) -> None:
    declared = (None, *spec.shape)
    if len(info.shape) != len(declared) or any(
        g is not None and g != d for g, d in zip(info.shape[1:], declared[1:])
    ):
        raise StateSpecError(
            f"{graph}: state tensor {info.name!r} has shape {list(info.shape)} in the graph, "
            f"the manifest says [batch, {', '.join(map(str, spec.shape))}]"
        )
    if info.dtype != spec.dtype:
        raise StateSpecError(
            f"{graph}: state tensor {info.name!r} is {info.dtype} in the graph, "
            f"the manifest says {spec.dtype}"
        )


class StreamState:
    """The recurrent tensors of ``batch`` streams (one row each), zeros after construction.

    With ``rows`` the feeds/advance calls work on a subset of the streams (multi-stream
    batching, where ended or idle streams sit out a run); rows not named are left untouched.
    Row operations index numpy arrays: a tensor held in device memory is first brought to the
    host (a copy, then fed up again by the next run); runs of every row at once keep it on the
    device.
    """

    def __init__(self, specs: tuple[StateSpec, ...], backend: Backend, batch: int = 1) -> None:
        self.specs = specs
        self.backend = backend
        self.batch = batch
        self.tensors: dict[str, Any] = {}
        self.reset()

    def reset(self, row: int | None = None) -> None:
        """Back to the initial value (zeros), e.g. on a new stream, a seek or a scene cut.

        ``row`` resets one stream of a batch and leaves the others as they are.
        """
        if row is None:
            self.tensors = {
                s.input: self.backend.zeros((self.batch, *s.shape), s.dtype) for s in self.specs
            }
        else:
            for value in self._on_host().values():
                value[row] = 0

    def feeds(self, rows: Sequence[int] | None = None) -> dict[str, Any]:
        """Inputs to add to the next run (all streams, or the given rows in that order)."""
        if rows is None:
            return dict(self.tensors)
        index = np.asarray(rows)
        return {name: value[index] for name, value in self._on_host().items()}

    def advance(self, outputs: Mapping[str, Any], rows: Sequence[int] | None = None) -> None:
        """Take the new state from a run's outputs (for all streams, or for ``rows``)."""
        if rows is None:
            self.tensors = {s.input: outputs[s.output] for s in self.specs}
            return
        index = np.asarray(rows)
        tensors = self._on_host()
        for s in self.specs:
            value = tensors[s.input]
            if not value.flags.writeable:
                value = tensors[s.input] = value.copy()
            value[index] = self.backend.to_host(outputs[s.output])

    def nonfinite(self, row: int | None = None) -> str | None:
        """The name of the first tensor holding a NaN or an Inf (in stream ``row`` only, when
        given), None when every value is finite.

        Cheap enough for every frame: one dot product per float32 tensor (x . x is NaN or Inf
        exactly when some value is, or when values near 1e19 overflow it: a blown-up state all
        the same), 30-75 us for the default bundle's 300 KB of state on a busy CPU core (its step:
        25-160 ms). A tensor in device memory is copied to the host first (the segmenter checks
        those less often).
        """
        for name, value in self.tensors.items():
            host = value if isinstance(value, np.ndarray) else self.backend.to_host(value)
            flat = (host if row is None else host[row]).ravel()
            if flat.dtype.kind != "f":
                continue
            if flat.dtype in (np.float32, np.float64):
                with np.errstate(over="ignore", invalid="ignore"):
                    ok = np.isfinite(np.dot(flat, flat))
            else:
                ok = np.isfinite(flat).all()
            if not ok:
                return name
        return None

    def _on_host(self) -> dict[str, np.ndarray]:
        """The tensors as writable host arrays (device tensors copied down once)."""
        for name, value in self.tensors.items():
            if not isinstance(value, np.ndarray):
                self.tensors[name] = np.array(self.backend.to_host(value))
        return self.tensors
