"""The one interface every model family implements, and the defaults most families inherit.

Training (``models.train``), evaluation (``models.evaluate``), export and its parity check
(``export.onnx``, ``export.parity``) and torch timing (``benchmarks.torch_eager``) talk to a
model only through :class:`TemporalModel`: no ``getattr`` probing and no family ``if``/``elif``.
A family whose ``forward(x, *state) -> (logits, *state)`` carries all it needs (the recurrent
and per-frame UNets) subclasses :class:`TemporalModule` and gets every method; a family with
other streaming logic (key frames, optical flow) overrides ``stream_logits``,
``training_loss``, ``export_graphs`` (its graphs as :class:`GraphSpec`) and ``schedule``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Mapping, Protocol, runtime_checkable

import torch
from torch import nn

from vidseg.engine.aux_inputs import make_provider
from vidseg.engine.bundle import AuxSpec
from vidseg.engine.errors import VidsegError
from vidseg.engine.schedule import Schedule
from vidseg.models.layers import normalize
from vidseg.models.losses import CROSS_ENTROPY, SegLoss
from vidseg.models.registry import ModelCfg, StateCfg

GraphFn = Callable[..., "tuple[torch.Tensor, ...] | torch.Tensor"]


@dataclass(frozen=True)
class GraphSpec:
    """One graph a model exports: ``fn(normalised frame, *aux, *carried_in)`` returns the logits,
    or ``(logits, *carried_out)`` (``fn(*aux, *carried_in)`` where ``reads_frame`` is False: a
    graph that reads only views the engine cuts from the frame, ``engine.aux_inputs.tile_view``).
    Carried tensors are state or key-frame cache entries of the model's cfg; the graph's inputs are
    named ``<name>_in``, its outputs ``<name>_out``.

    ``fn`` is the model itself (its ``forward`` through ``__call__``) or one of its methods, as
    the export has always traced it: the ONNX node names follow the modules it calls.
    """

    fn: GraphFn
    carried_in: tuple[StateCfg, ...] = ()
    carried_out: tuple[StateCfg, ...] = ()
    aux: tuple[AuxSpec, ...] = ()  # engine-computed inputs fed after the frame (e.g. flow)
    reads_frame: bool = True  # False: fn takes no frame, only aux inputs (views of it) and state


@runtime_checkable
class TemporalModel(Protocol):
    """What a registered model gives the trainer, the evaluator, export and torch timing.

    Frames are uint8 RGB (..., h, w, 3) as decoded; ``normalize`` maps them to the float NCHW
    input every graph function takes. Logits come at the model's output stride.
    """

    cfg: ModelCfg  # name, family, input size, the state and cache specs the manifest declares
    # True: ``clip_forward`` carries explicit state from one chunk of a clip to the next, so
    # training may warm up, truncate BPTT and add the consistency term
    clip_state: ClassVar[bool]
    # why ``training_loss`` needs the frames on the CPU ("" when a GPU can train it)
    cpu_only_training: ClassVar[str]

    def initial_state(
        self, batch: int, height: int, width: int, device: torch.device | None = None
    ) -> list[torch.Tensor]:
        """Zeros for ``cfg.state`` at frames of ``height`` x ``width`` ([] without state)."""
        ...

    def initial_cache(
        self, batch: int, height: int, width: int, device: torch.device | None = None
    ) -> list[torch.Tensor]:
        """Zeros for ``cfg.cache`` (the key-frame cache; [] for other families)."""
        ...

    def stream_logits(
        self,
        frame: torch.Tensor,
        memory: object | None,
        aux: Mapping[str, torch.Tensor] | None = None,
        key_interval: int | None = None,
    ) -> tuple[torch.Tensor, object]:
        """One streaming step as the engine runs it: frame (1, h, w, 3) uint8, memory None at a
        stream's start -> logits (1, K, h', w') and the memory for the next frame.

        ``aux``: the aux inputs of the frame (name -> (1, *shape), as the engine's providers
        compute them), precomputed by the caller; None: the model computes them itself.
        ``key_interval``: frames from one key frame to the next (None: the model's own; models
        without key frames ignore it)."""
        ...

    def clip_forward(self, clips: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Normalised clips (B, T, 3, h, w) from ``state`` -> (logits (B, T, K, h', w'),
        *state after the last frame). Raises VidsegError where ``clip_state`` is False."""
        ...

    def training_loss(
        self, frames: torch.Tensor, labels: torch.Tensor, criterion: SegLoss = CROSS_ENTROPY
    ) -> torch.Tensor:
        """frames (B, T, h, w, 3) uint8, labels (B, T, h', w') int64 -> scalar loss, every
        clip from a stream's start; ``criterion`` is cross-entropy or label relaxation."""
        ...

    def export_graphs(self) -> dict[str, GraphSpec]:
        """Graph role (``step``, or ``key`` and ``current``, in the order the engine's bundle
        schema lists them) -> what export wraps into that graph (see :class:`GraphSpec`)."""
        ...

    def schedule(self) -> Schedule | None:
        """The bundle's key-frame schedule (manifest ``schedule``), None without key frames."""
        ...

    def split(self) -> tuple[GraphFn, GraphFn] | None:
        """``(features, head)`` for a split bundle's ``encode`` and ``step`` graphs:
        ``features(normalised frame) -> [maps]`` is stateless, ``head(*maps, *state) ->
        (logits, *state)``; ``features`` then ``head`` is one step. None: not splittable."""
        ...


def zeros_for(
    specs: tuple[StateCfg, ...],
    batch: int,
    height: int,
    width: int,
    device: torch.device | None = None,
) -> list[torch.Tensor]:
    """One zero tensor (batch, C, height / stride, width / stride) per spec: the initial value
    of every carried tensor (the shapes the manifest declares)."""
    return [
        torch.zeros(batch, s.channels, height // s.stride, width // s.stride, device=device)
        for s in specs
    ]


class TemporalModule(nn.Module):
    """:class:`TemporalModel` for families whose ``forward(x, *state) -> (logits, *state)``
    takes frames (N, 3, H, W) or clips (N, T, 3, H, W) and carries everything they need."""

    cfg: ModelCfg
    clip_state: ClassVar[bool] = True
    cpu_only_training: ClassVar[str] = ""

    def initial_state(
        self, batch: int, height: int, width: int, device: torch.device | None = None
    ) -> list[torch.Tensor]:
        return zeros_for(self.cfg.state, batch, height, width, device)

    def initial_cache(
        self, batch: int, height: int, width: int, device: torch.device | None = None
    ) -> list[torch.Tensor]:
        return zeros_for(self.cfg.cache, batch, height, width, device)

    def stream_logits(
        self,
        frame: torch.Tensor,
        memory: object | None,
        aux: Mapping[str, torch.Tensor] | None = None,
        key_interval: int | None = None,
    ) -> tuple[torch.Tensor, object]:
        """memory: the engine's providers of the step graph's aux inputs and the state tuple
        (zeros on the frame's device at a stream's start). ``aux`` is fed after the frame,
        before the state (the step graph's order): the frame's aux inputs precomputed, or None:
        those providers (``engine.aux_inputs.KINDS``) compute them from the frame here."""
        step = self.export_graphs()["step"]
        if memory is None:
            specs = () if aux is not None else step.aux
            providers = [(spec.name, make_provider(spec)) for spec in specs]
            memory = (providers, self.initial_state(*frame.shape[:3], device=frame.device))
        providers, state = memory  # type: ignore[misc]
        if aux is None:
            aux = {
                name: torch.from_numpy(p(frame[0].cpu().numpy())).to(frame.device)
                for name, p in providers
            }
        inputs = (*aux.values(), *state)
        if step.reads_frame:
            inputs = (normalize(frame), *inputs)
        logits, *state = self(*inputs)  # type: ignore[misc]
        return logits, (providers, tuple(state))

    def clip_forward(self, clips: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self.clip_state:
            raise VidsegError(
                f"{self.cfg.name} ({self.cfg.family}) trains with its own loss "
                "and has no clip forward with explicit state"
            )
        return self(clips, *state)

    def training_loss(
        self, frames: torch.Tensor, labels: torch.Tensor, criterion: SegLoss = CROSS_ENTROPY
    ) -> torch.Tensor:
        """``criterion`` on ``forward(normalize(frames))``: one frame (T = 1) or clips with the
        state carried from zeros."""
        x = normalize(frames)  # (B, T, 3, h, w)
        if x.shape[1] == 1:
            x, labels = x[:, 0], labels[:, 0]
        state = self.initial_state(x.shape[0], x.shape[-2], x.shape[-1], device=x.device)
        return criterion(self(x, *state)[0], labels)

    def export_graphs(self) -> dict[str, GraphSpec]:
        """One ``step`` graph: ``forward(x, *state) -> (logits, *state)``."""
        return {"step": GraphSpec(self, self.cfg.state, self.cfg.state)}

    def schedule(self) -> Schedule | None:
        return None

    def split(self) -> tuple[GraphFn, GraphFn] | None:
        return None
