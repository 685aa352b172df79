"""Per-stream temporal state: the one home of the tensors a model carries frame to frame.

Built from the manifest's ``state`` specs and checked against the graph the backend loaded, so a
bundle whose manifest and graph disagree fails at load time with a ``StateSpecError``.
After each run ``advance`` makes every ``<x>_out`` the next ``<x>_in``: the backend's output
tensor itself becomes the next input (no copy; on a GPU the buffer never leaves the device).
"""

from __future__ import annotations

from typing import Any, Mapping

from vidseg.engine.backends.base import Backend, TensorInfo
from vidseg.engine.bundle import StateSpec
from vidseg.engine.errors import StateSpecError


def check_state_specs(specs: tuple[StateSpec, ...], backend: Backend, graph: str) -> None:
    """Every spec's input and output exist in the graph with the declared shape and dtype.

    Raises:
        StateSpecError: naming the tensor and what differs.
    """
    inputs = {t.name: t for t in backend.inputs}
    outputs = {t.name: t for t in backend.outputs}
    for spec in specs:
        for name, table, kind in ((spec.input, inputs, "input"), (spec.output, outputs, "output")):
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
    """The recurrent tensors of one stream (batch ``batch``), zeros after construction/reset."""

    def __init__(self, specs: tuple[StateSpec, ...], backend: Backend, batch: int = 1) -> None:
        self.specs = specs
        self.backend = backend
        self.batch = batch
        self.tensors: dict[str, Any] = {}
        self.reset()

    def reset(self) -> None:
        """Back to the initial value (zeros), e.g. on a new stream, a seek or a scene cut."""
        self.tensors = {
            s.input: self.backend.zeros((self.batch, *s.shape), s.dtype) for s in self.specs
        }

    def feeds(self) -> dict[str, Any]:
        """Inputs to add to the next run."""
        return dict(self.tensors)

    def advance(self, outputs: Mapping[str, Any]) -> None:
        """Take the new state from a run's outputs."""
        self.tensors = {s.input: outputs[s.output] for s in self.specs}
