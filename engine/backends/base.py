"""The one small interface every inference backend implements.

A backend runs one graph. It is pure: inputs in, outputs out; it keeps no stream state (that
lives in ``engine.state.StreamState``). Tensors it returns for state outputs may stay in the
backend's own memory (a device buffer); only outputs named in ``host_outputs`` must come back as
numpy arrays. ``zeros`` allocates an initial state tensor where the backend wants it.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from vidseg.engine.errors import BackendError


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output as the runtime reports it; ``None`` in ``shape`` = dynamic."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str  # numpy dtype name, e.g. "uint8", "float32"


@dataclass(frozen=True)
class BackendOptions:
    """Options shared by backends; each one ignores what does not apply to it."""

    device: str = "cpu"  # "cpu" or "cuda[:index]"
    threads: int | None = None  # intra-op threads; None = runtime default
    spinning: bool = False  # let idle worker threads spin (only wise when cores are free)
    io_binding: bool = False  # keep state in runtime tensors on the CPU too (always on a GPU)
    # fixed pre-allocated buffers, state ping-ponged between two sets, replayed as CUDA graphs
    # on a GPU; None = on for cuda where the graph allows it; True on the CPU runs the same
    # fixed-buffer bookkeeping without capture (how it is tested without a GPU)
    cuda_graph: bool | None = None
    # (input, output) names of state a graph reads and writes itself, for the ping-pong
    state_pairs: tuple[tuple[str, str], ...] = ()


@dataclass
class Transfers:
    """Host<->device traffic of one backend since it was made: what its runs copied up (host
    inputs) and down (host outputs), in bytes. On the CPU provider without IO binding nothing
    moves; it counts what the binding path would copy (host arrays it did not itself return)."""

    runs: int = 0
    up_bytes: int = 0
    down_bytes: int = 0
    # wall time of the runs split as trtexec splits it (perf_counter_ns; the binding and
    # fixed-buffer paths only: a plain numpy run counts all of it as compute)
    up_ns: int = 0  # host inputs copied to where the graph runs
    compute_ns: int = 0  # the run itself, outputs left where the graph wrote them
    down_ns: int = 0  # host outputs copied back

    def add(self, other: "Transfers") -> "Transfers":
        return Transfers(*(a + b for a, b in zip(astuple(self), astuple(other))))


class Backend(Protocol):
    """What the segmenter needs from a runtime."""

    name: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    transfers: Transfers  # host<->device bytes of the runs so far

    def zeros(self, shape: Sequence[int], dtype: str) -> Any:
        """A zero tensor in the memory the backend runs from."""

    def run(self, feeds: Mapping[str, Any], host_outputs: Sequence[str]) -> dict[str, Any]:
        """Run the graph once; every output returned, those in ``host_outputs`` as numpy."""

    def to_host(self, value: Any) -> np.ndarray:
        """Copy a tensor returned by ``run`` or ``zeros`` to a numpy array."""


BackendFactory = Callable[[str, BackendOptions], Backend]
_BACKENDS: dict[str, BackendFactory] = {}


def register_backend(name: str, factory: BackendFactory) -> None:
    _BACKENDS[name] = factory


def backend_names() -> list[str]:
    return sorted(_BACKENDS)


def create_backend(name: str, graph_path: str, options: BackendOptions) -> Backend:
    """Open ``graph_path`` with the backend ``name``.

    Raises:
        BackendError: unknown backend name, or the backend failed to load the graph.
    """
    if name not in _BACKENDS:
        raise BackendError(f"unknown backend {name!r}; available: {', '.join(backend_names())}")
    return _BACKENDS[name](graph_path, options)
