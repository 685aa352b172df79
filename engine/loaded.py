"""``LoadedModel``: a bundle opened on a backend, its graphs checked against the manifest, run
per frame; shared by ``Segmenter`` (one stream) and ``MultiStreamSegmenter`` (a batch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from vidseg.engine.aux_inputs import make_provider, replaces_frame
from vidseg.engine.backends import BackendOptions, Transfers, create_backend
from vidseg.engine.bundle import MANIFEST, Bundle, default_bundle_path, load_bundle
from vidseg.engine.errors import BundleError, FrameError, StateSpecError
from vidseg.engine.roles import CURRENT, ENCODE, KEY, RolePlanner, frame_roles
from vidseg.engine.schedule import Schedule
from vidseg.engine.state import StreamState, check_state_specs
from vidseg.engine.upsample import GraphOutputs

__all__ = ["LoadedModel", "check_frame"]


def check_frame(frame: object) -> np.ndarray:
    """``frame`` as a C-contiguous (H, W, 3) uint8 array with H, W >= 1 (a strided view is
    copied), else ``FrameError``."""
    if (
        not isinstance(frame, np.ndarray)
        or frame.dtype != np.uint8
        or frame.ndim != 3
        or frame.shape[2] != 3
        or frame.shape[0] < 1
        or frame.shape[1] < 1
    ):
        got = (
            f"{frame.dtype} {frame.shape}"
            if isinstance(frame, np.ndarray)
            else type(frame).__name__
        )
        raise FrameError(f"frame must be an (H, W, 3) uint8 RGB array with H, W >= 1, got {got}")
    return np.ascontiguousarray(frame)


class LoadedModel:
    """A bundle opened on a backend, its graphs checked against the manifest, run per frame.

    Shared by ``Segmenter`` (one stream) and ``MultiStreamSegmenter`` (a batch of streams). No
    family-specific code: the graphs are opened by role (``engine.roles``) and each is described
    by which tensors it reads and writes, derived from the manifest and the graph's own I/O:
    recurrent ``state`` (read and written by the same graph), the key-frame ``cache`` (written
    by ``key``, read by ``current``), engine-computed ``aux_inputs`` (whose providers are made
    here, one per stream) and whether it reads the frame at all.

    Raises:
        BundleError / StateSpecError: the bundle is invalid or disagrees with its graphs.
        BackendError: the backend is unavailable or cannot load a graph.
    """

    def __init__(
        self,
        bundle: str | Path | Bundle | None,
        backend: str,
        device: str,
        threads: int | None,
        cuda_graph: bool | None = None,
    ) -> None:
        self.bundle = (
            bundle
            if isinstance(bundle, Bundle)
            else load_bundle(default_bundle_path() if bundle is None else bundle)
        )
        manifest = self.manifest = self.bundle.manifest
        self._check_providers()
        pairs = tuple((s.input, s.output) for s in manifest.state)  # ping-ponged on the GPU
        options = BackendOptions(device, threads, cuda_graph=cuda_graph, state_pairs=pairs)
        self.frame_roles = frame_roles(manifest.graphs)  # the graphs that label frames
        # the optional encode graph last: the state lives with the graphs that carry it
        roles = self.frame_roles + ((ENCODE,) if ENCODE in manifest.graphs else ())
        self.backends = {
            role: create_backend(backend, str(self.bundle.graph_path(role)), options)
            for role in roles
        }
        self.split = ENCODE in self.backends  # step reads features, not the frame
        self._check_io()
        self.input_size = (manifest.input.height, manifest.input.width)
        self.labels_name = manifest.labels_output
        self.scores_name = manifest.output_name("scores")
        self.logits_name = manifest.output_name("logits")
        self._host_outputs = tuple(
            n for n in (self.labels_name, self.scores_name, self.logits_name) if n
        )
        # per role, once at load: does the graph read/write the state and the cache?
        self._role_io = {
            role: (
                any(x.input in ins for x in manifest.state),
                any(x.input in ins for x in manifest.cache),
                any(x.output in outs for x in manifest.state),
                any(x.output in outs for x in manifest.cache),
            )
            for role, backend in self.backends.items()
            for ins, outs in [({t.name for t in backend.inputs}, {t.name for t in backend.outputs})]
        }
        self._reads_frame = {
            role: manifest.input.name in {t.name for t in backend.inputs}
            for role, backend in self.backends.items()
        }
        # a step graph on fixed buffers adopts the encoder's fixed output buffers: then the
        # features of frame t+1 must not be made (in another thread) before step t has run
        self.encode_ahead = self.split and not getattr(self.backends[ENCODE], "fixed", False)
        self.warmup_runs = 2 if device.startswith("cuda") else 1

    def _check_providers(self) -> None:
        """Each aux input's provider takes the manifest's shape and args (made once here: the
        manifest's own check imports no provider code)."""
        for i, spec in enumerate(self.manifest.aux_inputs):
            try:
                make_provider(spec)
            except (TypeError, ValueError) as e:
                raise BundleError(
                    f"{self.bundle.root / MANIFEST}: field 'aux_inputs[{i}]' {spec.provider} "
                    f"cannot take {spec.args or 'its shape'}: {e}"
                ) from None

    def planner(self, schedule: Schedule | None = None) -> RolePlanner:
        """One stream's choice of graph per frame (``engine.roles``), on ``schedule`` (default:
        the manifest's) where the bundle has key frames."""
        return RolePlanner(self.manifest.graphs, schedule or self.manifest.schedule)

    @property
    def carries(self) -> bool:
        """Whether anything goes from one frame to the next: a recurrent state, a key-frame
        cache or an engine-computed aux input (a per-frame bundle has nothing to reset)."""
        m = self.manifest
        return bool(m.state or m.cache or m.aux_inputs)

    @property
    def fixed_batch(self) -> int | None:
        """The batch size a graph fixes on an input (a foreign model wrapped with a static
        batch of 1), or None where every graph's batch axis is dynamic."""
        sizes = [
            t.shape[0]
            for b in self.backends.values()
            for t in b.inputs
            if t.shape and isinstance(t.shape[0], int)
        ]
        return min(sizes) if sizes else None

    def warmup(self, batch: int = 1) -> None:
        """Run every graph ``warmup_runs`` times on zero frames with throw-away state and cache,
        so that lazy set-up (CUDA/cuDNN handles, kernel choice, memory arenas, CUDA-graph
        capture of both ping-pong parities) is not paid by the first real frame. Touches no
        stream's state."""
        state, cache = self.new_state(batch), self.new_cache(batch)
        height, width = self.input_size
        frames = np.zeros((batch, height, width, 3), np.uint8)
        aux = {a.name: np.zeros((batch, *a.shape), a.dtype) for a in self.manifest.aux_inputs}
        for _ in range(self.warmup_runs):
            for role in self.frame_roles:  # key before current
                self.run(role, frames, state, cache, aux)

    def transfers(self) -> Transfers:
        """Host<->device bytes of every graph's runs so far, summed."""
        total = Transfers()
        for backend in self.backends.values():
            total = total.add(backend.transfers)
        return total

    def _graph(self, role: str) -> str:
        return str(self.bundle.graph_path(role))

    def _check_io(self) -> None:
        m = self.manifest
        spec = m.input
        for role, backend in self.backends.items():
            graph = self._graph(role)
            inputs = {t.name: t for t in backend.inputs}
            frame = inputs.get(spec.name)
            if self.split and role != ENCODE:  # reads the encode graph's features instead
                self._check_features(graph, inputs, "input")
            elif frame is None and any(
                a.name in inputs and replaces_frame(a.provider) for a in m.aux_inputs
            ):
                pass  # reads what a provider cuts from the frame instead (a tile view)
            elif (
                frame is None
                or frame.dtype != "uint8"
                or frame.shape[1:] != (spec.height, spec.width, 3)
            ):
                raise BundleError(
                    f"{graph}: expected frame input {spec.name!r} uint8 [batch, {spec.height}, "
                    f"{spec.width}, 3], the graph has "
                    f"{[(t.name, t.dtype, list(t.shape)) for t in backend.inputs]}"
                )
            if role == ENCODE:
                self._check_features(graph, {t.name: t for t in backend.outputs}, "output")
                if set(inputs) != {spec.name}:
                    raise BundleError(
                        f"{graph}: the encode graph must read the frame alone, "
                        f"it reads {sorted(inputs)}"
                    )
                continue
            labels = next((t for t in backend.outputs if t.name == m.labels_output), None)
            if labels is None:
                raise BundleError(f"{graph}: no output named {m.labels_output!r}")
            if (
                all(isinstance(d, int) for d in labels.shape[1:])
                and tuple(labels.shape[1:]) != m.labels_size
            ):
                raise BundleError(
                    f"{graph}: output {m.labels_output!r} is "
                    f"{list(labels.shape[1:])}, the manifest says "
                    f"{list(m.labels_size)} (input size / labels stride)"
                )
            logits_name = m.output_name("logits")
            if logits_name is not None:
                logits = next((t for t in backend.outputs if t.name == logits_name), None)
                expected = (len(m.classes), *m.labels_size)
                if logits is None or tuple(logits.shape[1:]) != expected:
                    got = None if logits is None else list(logits.shape[1:])
                    raise BundleError(
                        f"{graph}: logits output {logits_name!r} should be "
                        f"[batch, {list(expected)}] (classes, labels size), "
                        f"got {got}"
                    )
            for aux in m.aux_inputs:
                info = inputs.get(aux.name)
                if info is None or info.shape[1:] != aux.shape or info.dtype != aux.dtype:
                    raise StateSpecError(
                        f"{graph}: aux input {aux.name!r} {aux.dtype} "
                        f"[batch, {list(aux.shape)}] not in the graph"
                    )
        keyed = KEY in self.backends
        if keyed:
            check_state_specs(
                m.cache,
                self.backends[CURRENT],
                self.backends[KEY],
                self._graph(CURRENT),
                self._graph(KEY),
            )
        for role, backend in self.backends.items():
            if (
                role != ENCODE
                and m.state
                and (not keyed or any(s.input in {t.name for t in backend.inputs} for s in m.state))
            ):
                check_state_specs(m.state, backend, backend, self._graph(role))
        known = {spec.name} | {s.input for s in m.state + m.cache} | {a.name for a in m.aux_inputs}
        known |= {f.name for f in m.features}
        for role, backend in self.backends.items():
            extra = {t.name for t in backend.inputs} - known
            if extra:
                raise BundleError(
                    f"{self._graph(role)}: graph inputs {sorted(extra)} are not in the manifest"
                )

    def _check_features(self, graph: str, tensors: Mapping[str, Any], kind: str) -> None:
        """Every manifest feature is a graph ``kind`` (input/output) of its declared shape."""
        for f in self.manifest.features:
            info = tensors.get(f.name)
            if info is None or tuple(info.shape[1:]) != f.shape or info.dtype != f.dtype:
                got = None if info is None else (info.dtype, list(info.shape))
                raise BundleError(
                    f"{graph}: feature {f.name!r} should be a graph {kind} "
                    f"{f.dtype} [batch, {list(f.shape)}], got {got}"
                )

    def new_state(self, batch: int = 1) -> StreamState:
        """Zeroed recurrent state (``manifest.state``) for ``batch`` streams."""
        return StreamState(self.manifest.state, self.backends[self._any_role], batch)

    def new_cache(self, batch: int = 1) -> StreamState:
        """Zeroed key-frame cache (``manifest.cache``; empty for other families)."""
        return StreamState(self.manifest.cache, self.backends[self._any_role], batch)

    def new_aux(self) -> list[tuple[str, Any]]:
        """One stateful provider per aux input, for one stream."""
        return [(a.name, make_provider(a)) for a in self.manifest.aux_inputs]

    @property
    def _any_role(self) -> str:
        return next(iter(self.backends))  # never the encode graph: it comes last

    def encode(self, batch: np.ndarray) -> dict[str, Any]:
        """The stateless features of (N, h, w, 3) frames, by the ``encode`` graph of a split
        bundle; safe to call from another thread than ``run`` (it touches no state). The values
        stay where the backend ran them (device memory on a GPU)."""
        return self.backends[ENCODE].run({self.manifest.input.name: batch}, host_outputs=())

    def run(
        self,
        role: str,
        batch: np.ndarray,
        state: StreamState,
        cache: StreamState,
        aux: Mapping[str, np.ndarray] | None = None,
        rows: Sequence[int] | None = None,
        features: Mapping[str, Any] | None = None,
    ) -> list[GraphOutputs]:
        """Run graph ``role`` on (N, h, w, 3) frames: each frame's labels, and its confidence
        and logits where the graph outputs them, at the graph's label stride.

        ``state`` and ``cache`` are read where the graph has their inputs and advanced where it
        has their outputs. ``rows``: the state rows the N frames belong to (all when None).
        A split bundle's step reads ``features`` (``encode`` of the same frames), computed here
        when not given.
        """
        reads_state, reads_cache, writes_state, writes_cache = self._role_io[role]
        if self.split:
            feeds = dict(features if features is not None else self.encode(batch))
            feeds.update(aux or {})
        elif self._reads_frame[role]:
            feeds = {self.manifest.input.name: batch, **(aux or {})}
        else:  # the graph reads views of the frame the engine cuts (aux inputs)
            feeds = dict(aux or {})
        if reads_state:
            feeds.update(state.feeds(rows))
        if reads_cache:
            feeds.update(cache.feeds(rows))
        outputs = self.backends[role].run(feeds, host_outputs=self._host_outputs)
        if writes_state:
            state.advance(outputs, rows)
        if writes_cache:
            cache.advance(outputs, rows)
        labels = outputs[self.labels_name]
        scores = outputs[self.scores_name] if self.scores_name else None
        logits = outputs[self.logits_name] if self.logits_name else None
        return [
            GraphOutputs(
                labels[k],
                None if scores is None else scores[k],
                None if logits is None else logits[k],
            )
            for k in range(len(labels))
        ]
