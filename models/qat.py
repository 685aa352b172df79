"""Quantization-aware fine-tuning: a float model trained with its convolutions rounded the way
``vidseg-export --int8`` will run them.

``vidseg-train ... --init-from FLOAT/last.pt --qat [--qat-float-convs N]`` fine-tunes a trained
float checkpoint with fake quantization (round to the int8 grid in the forward pass, gradients
straight through) at exactly the places ``vidseg.export.int8`` puts its QDQ pairs on a
convolution:

* its weight, per output channel, symmetric, 7 bits (``reduce_range``: [-64, 64] x absmax/64),
  taken after the batch norm that follows it is folded in (the exported graph carries the
  folded weight), so every batch norm runs on its frozen running statistics (eval mode, also
  in training);
* its input and its output, uint8 per tensor over a range that contains 0, the range a running
  min-max (exponential average, factor ``EMA``) of what the training batches show. The output
  is taken after the folded batch norm and after the ReLU/ReLU6 behind it, if any: the
  quantizer drops those nodes into the output's range ([0, max]). Each tensor is rounded once
  (an output already on its grid is not rounded again as the next convolution's input), as a
  QDQ pair serves every reader of its tensor.

The first ``float_convs`` convolutions in call order stay float, as ``--int8-float-convs N``
leaves them. Nothing else changes: the module names and the state dict are the float model's, so
the checkpoint exports like any other and ``--int8`` quantizes it with its own calibration; the
fine-tune moves the weights to where that rounding costs least. The ranges are not saved (a
resumed run re-estimates them on its first batches).
"""

from __future__ import annotations

import types
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vidseg.engine.errors import VidsegError

WEIGHT_QMAX = 64  # int8 in 7 bits: ONNX Runtime's reduce_range grid for int8 weights
ACT_QMAX = 255  # uint8 activations
EMA = 0.01  # running min-max: new = old + EMA * (batch - old)


class RangeQuant(nn.Module):
    """uint8 fake quantization of a tensor over a running min-max range (which always holds 0,
    as ONNX Runtime's calibration widens it). Training updates the range; evaluation uses it
    (the first call sets it in either mode)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("low", torch.zeros(()), persistent=False)
        self.register_buffer("high", torch.zeros(()), persistent=False)
        self.seen = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or not self.seen:
            with torch.no_grad():
                low, high = torch.aminmax(_flat(x.detach()))
                low, high = low.clamp(max=0), high.clamp(min=0)
                if self.seen:
                    low = self.low + EMA * (low - self.low)
                    high = self.high + EMA * (high - self.high)
                self.low.copy_(low)
                self.high.copy_(high)
                self.seen = True
        scale = float((self.high - self.low).clamp(min=1e-8)) / ACT_QMAX
        zero = int(round(-float(self.low) / scale))
        return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, ACT_QMAX)


def _flat(x: torch.Tensor) -> torch.Tensor:
    """``x`` as one dimension without a copy where its memory allows (NHWC activations too:
    reducing them in their logical order is many times slower)."""
    if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last):
        x = x.permute(0, 2, 3, 1)
    return x.reshape(-1)


def fake_quant_weight(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` (out, ...) rounded per output channel to the symmetric 7-bit grid."""
    absmax = weight.detach().abs().flatten(1).amax(1).clamp(min=1e-12)
    scale = (absmax / WEIGHT_QMAX).float()
    zero = torch.zeros_like(scale, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -WEIGHT_QMAX, WEIGHT_QMAX)


def _frozen_train(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)  # a folded batch norm keeps its statistics


@dataclass(frozen=True)
class QatModel:
    """What :func:`prepare_qat` did: the convolutions it quantizes and those left float."""

    quantized: int
    float_convs: int
    folded: int  # quantized convolutions with a batch norm folded into their weight


ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardtanh)  # what the quantizer folds into an output range


@dataclass
class _Trace:
    """One streamed frame's convolutions in call order, the batch norm that directly takes
    each one's output, and those whose output (after that batch norm) goes through an
    activation."""

    order: list[nn.Conv2d]
    norms: dict[nn.Conv2d, nn.BatchNorm2d]
    activated: set[nn.Conv2d]


def _trace(model: Any) -> _Trace:
    """:class:`_Trace` of ``stream_logits`` on a frame of the model's input size."""
    trace = _Trace([], {}, set())
    made_by: dict[int, tuple[nn.Conv2d, torch.Tensor]] = {}  # outputs kept alive: ids unique

    def on_conv(module: Any, _: Any, out: torch.Tensor) -> None:
        trace.order.append(module)
        made_by[id(out)] = (module, out)

    def on_norm(module: Any, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        conv, _ = made_by.get(id(inputs[0]), (None, None))
        if conv is not None:
            trace.norms[conv] = module
            made_by[id(out)] = (conv, out)

    def on_activation(_: Any, inputs: tuple[torch.Tensor, ...]) -> None:
        conv, _ = made_by.get(id(inputs[0]), (None, None))
        if conv is not None:
            trace.activated.add(conv)

    hooks = [
        *(m.register_forward_hook(on_conv) for m in model.modules() if isinstance(m, nn.Conv2d)),
        *(
            m.register_forward_hook(on_norm)
            for m in model.modules()
            if isinstance(m, nn.BatchNorm2d)
        ),
        *(
            m.register_forward_pre_hook(on_activation)
            for m in model.modules()
            if isinstance(m, ACTIVATIONS)
        ),
    ]
    was_training = model.training
    device = next(model.parameters()).device
    frame = torch.zeros(1, *model.cfg.input_size, 3, dtype=torch.uint8, device=device)
    try:
        model.eval()
        with torch.no_grad():
            model.stream_logits(frame, None)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return trace


class _Points:
    """The quantization points at run time. A convolution's output is quantized once, after
    its activation where it has one (the quantizer drops ReLU/Clip nodes into the output's
    range: [0, max]); a convolution's input is quantized unless it is such an output already
    (one QDQ pair per tensor, whatever reads it)."""

    def __init__(self) -> None:
        self.pending: dict[int, tuple[Any, torch.Tensor]] = {}  # outputs awaiting activation
        self.on_grid: weakref.WeakValueDictionary = weakref.WeakValueDictionary()

    def quantize_output(self, conv: Any, out: torch.Tensor) -> torch.Tensor:
        out = conv.qat_output(out)
        self.on_grid[id(out)] = out
        return out

    def quantize_input(self, conv: Any, x: torch.Tensor) -> torch.Tensor:
        return x if self.on_grid.get(id(x)) is x else conv.qat_input(x)

    def ended(self, conv: Any, activated: bool, out: torch.Tensor) -> torch.Tensor:
        """The convolution's output (after its batch norm)."""
        if activated:
            self.pending[id(out)] = (conv, out)
            return out
        return self.quantize_output(conv, out)

    def activated(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor | None:
        conv, waiting = self.pending.pop(id(x), (None, None))
        return self.quantize_output(conv, out) if waiting is x else None


def _quantized_forward(conv: nn.Conv2d, norm: nn.BatchNorm2d | None) -> Any:
    """A forward for ``conv`` that fake-quantizes its weight, folded with ``norm``'s frozen
    statistics when there is one."""

    def forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        if norm is None:
            weight = fake_quant_weight(self.weight)
        else:
            gain = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            gain = gain.reshape(-1, 1, 1, 1)
            weight = fake_quant_weight(self.weight * gain) / gain
        return self._conv_forward(x, weight, self.bias)

    return types.MethodType(forward, conv)


def prepare_qat(model: Any, float_convs: int = 0) -> QatModel:
    """Turn ``model`` (a per-frame ``TemporalModule``, in place) into its quantization-aware
    form for fine-tuning: every convolution after the first ``float_convs`` (in the order one
    frame calls them) runs with fake-quantized weight, input and output, its batch norm frozen
    and folded; every batch norm stays in eval mode from now on. The parameters and the state
    dict are unchanged.

    Raises:
        VidsegError: the model carries state (its recurrent path stays float in an int8
            bundle, and its frames call different convolutions), ``float_convs`` is negative,
            or no convolution is left to quantize.
    """
    if model.cfg.temporal:
        raise VidsegError(
            f"--qat fine-tunes per-frame networks (the tile memory's, a split twin's); "
            f"{model.cfg.name} carries state"
        )
    if float_convs < 0:
        raise VidsegError(f"--qat-float-convs must be >= 0, got {float_convs}")
    trace = _trace(model)
    order = trace.order
    if len(set(order)) != len(order):
        raise VidsegError(f"{model.cfg.name}: a convolution runs twice on one frame")
    quantized = order[float_convs:]
    if not quantized:
        raise VidsegError(
            f"--qat-float-convs {float_convs} leaves all {len(order)} convolutions of "
            f"{model.cfg.name} in float: nothing to quantize"
        )
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.train = types.MethodType(_frozen_train, module)  # type: ignore[method-assign]
            module.eval()
    points = _Points()
    for conv in quantized:
        norm = trace.norms.get(conv)
        conv.forward = _quantized_forward(conv, norm)  # type: ignore[method-assign]
        conv.qat_input = RangeQuant().to(conv.weight.device)
        conv.qat_output = RangeQuant().to(conv.weight.device)
        conv.register_forward_pre_hook(
            lambda m, args: (points.quantize_input(m, args[0]), *args[1:])
        )
        end = conv if norm is None else norm
        end.register_forward_hook(
            lambda _m, _i, out, c=conv, a=conv in trace.activated: points.ended(c, a, out)
        )
    for module in model.modules():
        if isinstance(module, ACTIVATIONS):
            module.register_forward_hook(lambda _m, i, out: points.activated(i[0], out))
    # the new range modules have no persistent buffers: the state dict keeps the float keys
    return QatModel(len(quantized), float_convs, sum(c in trace.norms for c in quantized))
