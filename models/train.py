"""``vidseg-train``: train a registered model on CamVid with synthetic temporal clips.

Two phases share one poly learning-rate schedule: the first ``--perframe-fraction`` of the
steps trains on single augmented frames (batch ``2 * --batch``), the rest on clips of
``--seq-len`` frames (batch ``--batch``) with the recurrent state carried through each clip.
Checkpoints (``last.pt``) are written at every evaluation and at the end; ``--resume`` continues
from ``last.pt`` with the optimizer and random-generator states restored, so an interrupted run
resumes where it stopped; ``--stop-after-minutes M`` ends a run in chunks, writing ``last.pt``
after the step that passes M minutes. Evaluation runs the CamVid val drive in order with state
carried. Each checkpoint records the command lines and source commits of its training runs
(``models.provenance``), which ``vidseg-export`` copies into the bundle's manifest.

On a GPU: ``--device cuda`` (or ``auto``) trains and evaluates there, ``--amp`` adds bf16
autocast, and ``--workers N`` builds the augmented clips in N processes so the CPU keeps up.
Checkpoints always hold CPU tensors.

Seed 002 and the recurrent memory (``docs/training.md``): ``--label-relaxation`` swaps
cross-entropy for boundary label relaxation in every family; each clip ends on its labelled
frame, and ``--propagation-length N`` supervises only that frame and the N before it (whose
labels are propagated along the synthetic motion); ``--warmup-frames W`` and ``--tbptt K`` run
clips from a warmed-up state in truncated-BPTT chunks, one optimizer step per clip;
``--consistency-weight`` adds a flow-warped temporal-consistency term on unlabelled videos.

``--qat`` fine-tunes a float per-frame network for the int8 export, its convolutions
fake-quantized as that export runs them (``models.qat``).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import math
import pickle
import queue
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import ContextManager, Iterator

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from vidseg.engine.clihelp import CliParser, HelpFormatter
from vidseg.engine.errors import BundleError, VidsegError, run_for_cli
from vidseg.models.data import CAMVID_IGNORE, ClipAugment, LabelledFrames, clip_batch, load_split
from vidseg.models.evaluate import evaluate_sequence
from vidseg.models.layers import normalize
from vidseg.models.lite0 import Lite0Encoder
from vidseg.models.losses import CROSS_ENTROPY, SegLoss, consistency_total
from vidseg.models.metrics import SegMetrics
from vidseg.models.protocol import TemporalModel
from vidseg.models.provenance import UNKNOWN, checked_chain, command_line, source_commit
from vidseg.models.qat import prepare_qat
from vidseg.models.registry import create_model, list_models
from vidseg.models.videos import FLOW_STRIDE, VideoClips

logger = logging.getLogger(__name__)
CHECKPOINT = "last.pt"
DEFAULT_CROP = (288, 384)  # (height, width) cap of the default training crop
LOG_EVERY_CUDA = 20  # steps between progress-bar loss updates on a GPU (.item() syncs)


def resolve_device(spec: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available, else the CPU).

    Raises:
        VidsegError: not a device name, or CUDA is asked for and not available.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise VidsegError(f"--device {spec!r}: use cpu, cuda, cuda:N or auto")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "torch built without CUDA" if torch.version.cuda is None else "no GPU visible"
            raise VidsegError(
                f"--device {spec}: CUDA is not available ({why}, torch "
                f"{torch.__version__}); use --device cpu or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise VidsegError(
                f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) visible"
            )
    return device


def _to_cpu(obj: object) -> object:
    """``obj`` (tensors in nested dicts, lists, tuples) with every tensor on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _batches(
    data: LabelledFrames,
    schedule: list[tuple[int, int]],
    rng: np.random.Generator,
    aug: ClipAugment,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield batches for each (batch, length) in ``schedule``, built in a background thread
    (OpenCV releases the GIL) with a bounded queue; worker errors are re-raised here."""
    q: queue.Queue = queue.Queue(maxsize=3)
    stop = threading.Event()

    def work() -> None:
        try:
            for batch, length in schedule:
                if stop.is_set():
                    return
                q.put(clip_batch(data, batch, length, rng, aug))
        except BaseException as exc:  # forwarded to the consumer
            q.put(exc)

    thread = threading.Thread(target=work, daemon=True, name="clip-augment")
    thread.start()
    try:
        for _ in schedule:
            item = q.get()
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


class ClipBatches(torch.utils.data.Dataset):
    """Item ``i``: the batch for schedule entry ``i``, frames (B, T, h, w, 3) and labels
    (B, T, h, w) uint8 tensors, drawn with a generator seeded by ``(seed, i)``.

    Each batch depends only on the seed and its step, so the stream is the same whatever the
    number of worker processes, and a resumed run continues it exactly.
    """

    def __init__(
        self, data: LabelledFrames, schedule: list[tuple[int, int]], seed: int, aug: ClipAugment
    ) -> None:
        self.data, self.schedule, self.seed, self.aug = data, schedule, seed, aug

    def __len__(self) -> int:
        return len(self.schedule)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch, length = self.schedule[i]
        rng = np.random.default_rng([self.seed, i])
        frames, labels = clip_batch(self.data, batch, length, rng, self.aug)
        return torch.from_numpy(frames), torch.from_numpy(labels)


def _worker_batches(
    data: LabelledFrames,
    schedule: list[tuple[int, int]],
    start: int,
    seed: int,
    aug: ClipAugment,
    workers: int,
    pin_memory: bool,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``start..`` of ``schedule`` built by ``workers`` processes, in step order."""
    loader = torch.utils.data.DataLoader(
        ClipBatches(data, schedule, seed, aug),
        batch_size=None,
        sampler=range(start, len(schedule)),
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4,
    )
    # The workers fork when the iterator starts. Each should run OpenCV on one thread (one
    # process per core already), and OpenCV's thread pool cannot be reconfigured in a forked
    # child (cv2.setNumThreads hangs there), so the parent forks them with its own set to 1.
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return iter(loader)
    finally:
        cv2.setNumThreads(threads)


def training_augment(
    crop: tuple[int, int] | None,
    input_size: tuple[int, int],
    source_height: int,
    scale_range: tuple[float, float] = ClipAugment.scale_range,
) -> ClipAugment:
    """Clip augmentation matched to the model's input size.

    At inference a frame is resized to ``input_size``, so objects appear at ``input_height /
    source_height`` of their CamVid size; training scales are drawn around that factor
    (``scale_range`` times it, by default ``ClipAugment.scale_range``). ``crop`` defaults to
    the input size capped at 288x384 (bigger crops cost time and add little context).
    """
    factor = input_size[0] / source_height
    lo, hi = scale_range
    if crop is None:
        crop = (min(input_size[0], DEFAULT_CROP[0]), min(input_size[1], DEFAULT_CROP[1]))
    # the labelled frame ends each clip: frames before it carry its labels propagated along
    # the synthetic motion (``--propagation-length``) and warm the state up for it
    return ClipAugment(crop=tuple(crop), scale_range=(lo * factor, hi * factor), anchor=-1)


def class_balance(labels: np.ndarray, num_classes: int, power: float) -> tuple[float, ...] | None:
    """Per-class loss weights ``(median frequency / frequency) ** power`` from the labels'
    non-void pixel counts (median-frequency balancing at power 1; None at power 0). A class
    absent from the labels gets weight 1."""
    if power == 0:
        return None
    counts = np.bincount(labels.ravel(), minlength=256)[:num_classes].astype(np.float64)
    present = counts > 0
    freq = counts / counts.sum()
    weights = np.ones(num_classes)
    weights[present] = (np.median(freq[present]) / freq[present]) ** power
    return tuple(float(w) for w in weights)


@dataclass(frozen=True)
class ClipTraining:
    """How one training step turns its batches into gradients (``docs/training.md``)."""

    criterion: SegLoss = CROSS_ENTROPY  # supervised term: cross-entropy or boundary relaxation
    warmup_frames: int = 0  # first frames of a clip: no gradient, no loss, only the state
    tbptt: int = 0  # frames per backward chunk, state detached between chunks; 0: whole clip
    propagation_length: int | None = None  # supervised frames before the labelled last one
    consistency_weight: float = 0.0  # x the temporal-consistency term on unlabelled videos
    amp: bool = False  # bf16 autocast around the forward passes (CUDA)

    @classmethod
    def from_args(
        cls, args: argparse.Namespace, class_weights: tuple[float, ...] | None = None
    ) -> ClipTraining:
        return cls(
            criterion=SegLoss(
                relax_border=args.relax_border if args.label_relaxation else None,
                class_weights=class_weights,
            ),
            warmup_frames=args.warmup_frames,
            tbptt=args.tbptt,
            propagation_length=args.propagation_length,
            consistency_weight=args.consistency_weight,
            amp=args.amp,
        )

    @property
    def chunked(self) -> bool:
        """Clips run frame range by frame range (warm-up and/or truncated BPTT)."""
        return bool(self.warmup_frames or self.tbptt)

    def autocast(self) -> ContextManager:
        return (
            torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()
        )

    def check(self, model: TemporalModel) -> None:
        """Raises VidsegError where the model cannot honour an option: warm-up, truncated BPTT
        and consistency need a clip forward with explicit state (``model.clip_state``)."""
        if model.clip_state:
            return
        wanted = [
            flag
            for flag, on in (
                ("--warmup-frames", self.warmup_frames),
                ("--tbptt", self.tbptt),
                ("--consistency-weight", self.consistency_weight),
            )
            if on
        ]
        if wanted:
            raise VidsegError(
                f"{model.cfg.name} ({model.cfg.family}) trains with its own "
                f"loss and does not support {', '.join(wanted)}"
            )


def supervised_frames(labels: torch.Tensor, propagation_length: int | None) -> torch.Tensor:
    """Labels (B, T, h, w) of clips whose last frame is the labelled one, with the propagated
    labels of frames more than ``propagation_length`` before it set to void (None: all kept;
    0: only the labelled frame is supervised)."""
    if propagation_length is None or labels.shape[1] <= propagation_length + 1:
        return labels
    labels = labels.clone()
    labels[:, : labels.shape[1] - 1 - propagation_length] = CAMVID_IGNORE
    return labels


def clip_chunks(
    model: TemporalModel, x: torch.Tensor, opts: ClipTraining
) -> Iterator[tuple[int, torch.Tensor]]:
    """Run normalized clips x (B, T, 3, h, w) through ``model.clip_forward`` with its state
    carried.

    The first ``opts.warmup_frames`` frames run under ``torch.no_grad`` (they only warm the
    state up), the rest in chunks of ``opts.tbptt`` frames (all at once for 0), the state
    detached between chunks, so no gradient crosses a chunk boundary. Yields ``(index of the
    chunk's first frame, logits (B, t, K, h', w'))`` for each chunk, the warm-up included; the
    caller backwards each chunk's loss before asking for the next, so one chunk's graph at a
    time is alive.
    """
    t = x.shape[1]
    warmup = min(opts.warmup_frames, t - 1)
    starts = ([0] if warmup else []) + list(range(warmup, t, opts.tbptt or t))
    state = model.initial_state(x.shape[0], x.shape[-2], x.shape[-1], device=x.device)
    for start, stop in zip(starts, [*starts[1:], t]):
        grad = torch.no_grad() if start < warmup else contextlib.nullcontext()
        with grad, opts.autocast():
            logits, *state = model.clip_forward(x[:, start:stop], *state)
        yield start, logits
        state = [s.detach() for s in state]


def supervised_losses(
    model: TemporalModel, frames: torch.Tensor, labels: torch.Tensor, opts: ClipTraining
) -> Iterator[torch.Tensor]:
    """The supervised loss of a batch as terms to backward one after the other: one term, or
    with warm-up/truncated BPTT one per chunk, weighted so that they sum to the mean over every
    supervised pixel of the clips (the same loss as without chunks, the gradient truncated)."""
    if frames.shape[1] > 1:
        labels = supervised_frames(labels, opts.propagation_length)
    if frames.shape[1] == 1 or not opts.chunked:
        with opts.autocast():
            loss = model.training_loss(frames, labels, opts.criterion)
        yield loss
        return
    warmup = min(opts.warmup_frames, frames.shape[1] - 1)
    count = opts.criterion.count(labels[:, warmup:]).clamp(min=1e-12)
    for start, logits in clip_chunks(model, normalize(frames), opts):
        if start >= warmup:
            total, _ = opts.criterion.total(logits, labels[:, start : start + logits.shape[1]])
            yield total / count


def _flow_grid_probs(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, t, K, h', w') logits -> float32 probabilities (B, t, K, h, w) on the flow grid."""
    b, t = logits.shape[:2]
    flat = logits.flatten(0, 1).float()
    if flat.shape[-2:] != size:
        flat = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return flat.softmax(1).unflatten(0, (b, t))


def consistency_losses(
    model: TemporalModel,
    frames: torch.Tensor,
    flows: torch.Tensor,
    valid: torch.Tensor,
    opts: ClipTraining,
) -> Iterator[torch.Tensor]:
    """``opts.consistency_weight`` x the temporal consistency of unlabelled clips, as terms to
    backward one by one: frames (B, T, h, w, 3) uint8, flows (B, T - 1, 2, h/4, w/4) and
    valid (B, T - 1, h/4, w/4) from :meth:`VideoClips.sample`.

    The clips run like labelled ones (warm-up, chunks, state carried). Every pair (t - 1, t)
    with t past the warm-up is scored on its valid pixels (:func:`consistency_total`); at a
    chunk boundary frame t - 1's probabilities are detached, so gradients stay in their chunk.
    The terms sum to the weight x the mean over all scored pixels of the batch. Batch norms
    leave their running statistics alone on these clips (:func:`running_stats_frozen`).
    """
    with running_stats_frozen(model):
        yield from _consistency_terms(model, frames, flows, valid, opts)


@contextlib.contextmanager
def running_stats_frozen(model: torch.nn.Module) -> Iterator[None]:
    """Inside: batch norms in training mode still normalise with the batch's statistics, but
    their running statistics (what inference uses) stay as they are. The unlabelled clips come
    from other cameras and roads; they shape the gradients, not the statistics the model runs
    with."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [
        (m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
        for m in norms
    ]
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def _consistency_terms(
    model: TemporalModel,
    frames: torch.Tensor,
    flows: torch.Tensor,
    valid: torch.Tensor,
    opts: ClipTraining,
) -> Iterator[torch.Tensor]:
    """The body of :func:`consistency_losses`."""
    t = frames.shape[1]
    warmup = min(opts.warmup_frames, t - 1)
    first_pair = max(warmup, 1) - 1  # flow index t - 1 of the first scored pair
    count = valid[:, first_pair:].sum().clamp(min=1)
    size = tuple(flows.shape[-2:])
    previous: torch.Tensor | None = None
    for start, logits in clip_chunks(model, normalize(frames), opts):
        probs = _flow_grid_probs(logits, size)
        stop = start + probs.shape[1]
        if start >= warmup:
            seq = torch.cat([previous[:, None], probs], dim=1) if previous is not None else probs
            lo = start - 1 if previous is not None else start
            pairs = slice(lo, stop - 1)
            total, _ = consistency_total(
                seq[:, :-1].flatten(0, 1),
                seq[:, 1:].flatten(0, 1),
                flows[:, pairs].flatten(0, 1),
                valid[:, pairs].flatten(0, 1),
            )
            yield opts.consistency_weight * total / count
        previous = probs[:, -1].detach()


def train_step(
    model: TemporalModel,
    optimizer: torch.optim.Optimizer,
    frames: torch.Tensor,
    labels: torch.Tensor,
    opts: ClipTraining,
    video: tuple[torch.Tensor, ...] | None = None,
) -> torch.Tensor:
    """One optimizer step on a labelled batch (and, with consistency, a batch of unlabelled
    clips ``video`` = (frames, flows, valid)): every term's backward accumulates into the
    gradients, then one ``optimizer.step()`` per batch whatever the chunking, so ``--max-steps``
    and the learning-rate schedule mean the same with or without truncated BPTT. Returns the
    step's total loss (a detached scalar tensor: reading it syncs a GPU)."""
    optimizer.zero_grad(set_to_none=True)
    terms = supervised_losses(model, frames, labels, opts)
    if video is not None:
        terms = itertools.chain(terms, consistency_losses(model, *video, opts))
    loss = torch.zeros((), device=frames.device)
    for term in terms:
        term.backward()
        loss += term.detach()
    optimizer.step()
    return loss


def _param_groups(model: torch.nn.Module, lr: float) -> list[dict]:
    """The pretrained encoder learns at ``lr``, the new layers at 3x ``lr`` (frozen layers are
    left out)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    encoder = [p for n, p in named if n.startswith("encoder.")]
    rest = [p for n, p in named if not n.startswith("encoder.")]
    return [{"params": encoder, "lr": lr}, {"params": rest, "lr": 3 * lr}]


def _consistency_videos(args: argparse.Namespace, input_size: tuple[int, int]) -> VideoClips:
    """``--consistency-videos`` decoded at the model's input size (as the engine resizes)."""
    started = time.perf_counter()
    videos = VideoClips.load(args.consistency_videos, input_size)
    logger.info(
        "consistency videos: %s, %d frames, decoded with flow in %.1f s",
        ", ".join(videos.names),
        sum(len(f) for f in videos.frames),
        time.perf_counter() - started,
    )
    return videos


def _video_batch(
    videos: VideoClips,
    args: argparse.Namespace,
    step: int,
    crop: tuple[int, int],
    device: torch.device,
) -> tuple[torch.Tensor, ...]:
    """Step ``step``'s unlabelled clips (``--batch`` runs of ``--seq-len`` frames) in the
    training crop (capped at the frame size), seeded by ``(--seed, step)`` so a resumed run
    draws the same ones."""
    height, width = videos.frames[0].shape[1:3]
    crop = (
        min(crop[0], height) // FLOW_STRIDE * FLOW_STRIDE,
        min(crop[1], width) // FLOW_STRIDE * FLOW_STRIDE,
    )
    rng = np.random.default_rng([args.seed, step, 1])
    arrays = videos.sample(args.batch, args.seq_len, crop, rng)
    return tuple(torch.from_numpy(a).to(device, non_blocking=True) for a in arrays)


CHECKPOINT_KEYS = ("model",)  # what every checkpoint read here holds: the weights


def not_a_checkpoint(path: Path, exc: BaseException, prefix: str = "") -> BundleError:
    """The one-line error for a file that does not load as a checkpoint (torch's messages run
    over several lines: the first is kept)."""
    reason = (str(exc).strip().splitlines() or [""])[0][:200]
    return BundleError(
        f"{prefix}not a vidseg-train checkpoint: {path} ({type(exc).__name__}: {reason})"
    )


def read_checkpoint(path: str | Path, what: str = "") -> dict:
    """The contents of a ``vidseg-train`` checkpoint, weights only (no pickle). ``what`` names
    the flag that gave the path in the error.

    Raises:
        BundleError: the file is missing or is not a vidseg-train checkpoint.
    """
    path, prefix = Path(path), f"{what}: " if what else ""
    if not path.is_file():
        raise BundleError(f"{prefix}checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # torch's pickle-protocol notes: the error says it
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    except (
        RuntimeError,
        EOFError,
        ValueError,
        TypeError,
        IndexError,
        AttributeError,
        KeyError,
        pickle.UnpicklingError,
    ) as exc:
        raise not_a_checkpoint(path, exc, prefix) from exc
    if missing:
        raise BundleError(f"{prefix}not a vidseg-train checkpoint: {path} (no {missing[0]!r})")
    return ckpt


def model_from_checkpoint(
    path: str | Path,
    input_size: tuple[int, int] | None = None,
) -> tuple[torch.nn.Module, dict]:
    """The model a ``vidseg-train`` checkpoint holds, rebuilt with its weights (no pickle), in
    eval mode, and the checkpoint. ``input_size`` (height, width) replaces the size it trained
    at: the models are fully convolutional, so the same weights run at any multiple of their
    stride. ``model.cfg.pretrained`` still says what training started from.

    Raises:
        BundleError: the file is missing or is not a vidseg-train checkpoint.
    """
    ckpt = read_checkpoint(path)
    try:
        kwargs = dict(ckpt["model_kwargs"])
        if input_size is not None:
            kwargs["input_size"] = input_size
        model = create_model(ckpt["model_name"], pretrained=False, **kwargs)
        model.load_state_dict(ckpt["model"])
        model.cfg = replace(model.cfg, pretrained=ckpt.get("pretrained", ""))
    except (KeyError, TypeError, RuntimeError, ValueError, AttributeError) as exc:
        raise not_a_checkpoint(Path(path), exc) from exc
    return model.eval(), ckpt


def _resume(run: "_Run", model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load ``run.ckpt_path`` into the model, optimizer and random generators (torch's and
    ``run.rng``), and into ``run`` the step reached, the evaluation history, the last metrics
    and the record of the command that started the run (kept over the resuming one's, when the
    checkpoint has it).

    Raises:
        VidsegError: no checkpoint there, or it holds another model than ``--model``.
    """
    ckpt_path, name = run.ckpt_path, run.args.model
    ckpt = read_checkpoint(ckpt_path, "--resume")
    if ckpt["model_name"] != name:
        raise VidsegError(f"--resume: {ckpt_path} holds {ckpt['model_name']}, not {name}")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["torch_rng"])
    run.rng.bit_generator.state = json.loads(ckpt["numpy_rng"])
    logger.info("resumed from %s at step %d", ckpt_path, ckpt["step"])
    run.step, run.history = ckpt["step"], json.loads(ckpt["history"])
    run.metrics_json = ckpt.get("metrics", "{}")
    try:
        run.provenance = checked_chain(ckpt.get("provenance")) or run.provenance
    except ValueError as exc:
        raise not_a_checkpoint(ckpt_path, exc, "--resume: ") from exc


@contextlib.contextmanager
def cuda_speedups(enabled: bool) -> Iterator[None]:
    """cuDNN autotuning and TF32 matmuls inside the with-block when ``enabled``; the previous
    process-wide flags are restored on the way out (training shares the process with tests,
    evaluation and export, which expect torch's defaults)."""
    flags = (
        (torch.backends.cudnn, "benchmark"),
        (torch.backends.cuda.matmul, "allow_tf32"),
        (torch.backends.cudnn, "allow_tf32"),
    )
    saved = [getattr(owner, name) for owner, name in flags]
    try:
        if enabled:
            # few fixed shapes (frames, clips, val): autotuning costs ~20 s per new shape on an
            # H200 and makes the steady-state steps ~25% faster
            for owner, name in flags:
                setattr(owner, name, True)
        yield
    finally:
        for (owner, name), value in zip(flags, saved):
            setattr(owner, name, value)


def init_from(model: torch.nn.Module, path: str | Path) -> tuple[int, list[str]]:
    """``--init-from``: copy every weight of the checkpoint ``path`` whose name and shape the
    model shares (a per-frame twin into ``recurrent-lite0-res``, whose only new weights are its
    memory cells). Returns the number of tensors copied and the model's names left as they were.

    Raises:
        VidsegError: no such checkpoint, a shared name with another shape, or nothing shared.
    """
    path = Path(path)
    source = read_checkpoint(path, "--init-from")["model"]
    own = model.state_dict()
    shared = {k: v for k, v in source.items() if k in own}
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in shared.items()
        if v.shape != own[k].shape
    ]
    if wrong:
        raise VidsegError(
            f"--init-from {path}: {len(wrong)} weights differ in shape, first {wrong[0]}"
        )
    if not shared:
        raise VidsegError(f"--init-from {path}: no weight names in common with {model.cfg.name}")
    model.load_state_dict(shared, strict=False)
    return len(shared), sorted(set(own) - set(shared))


def freeze_encoder(model: torch.nn.Module, stride: int) -> int:
    """``--freeze-stride``: freeze every Lite0 encoder's layers up to ``stride``
    (:meth:`Lite0Encoder.freeze`); returns the number of frozen tensors.

    Raises:
        VidsegError: ``stride`` is set and the model has no Lite0 encoder.
    """
    encoders = [m for m in model.modules() if isinstance(m, Lite0Encoder)]
    if stride and not encoders:
        raise VidsegError(
            f"--freeze-stride {stride}: {model.cfg.name} has no pretrained Lite0 encoder to freeze"
        )
    return sum(encoder.freeze(stride) for encoder in encoders)


def _check_amp(args: argparse.Namespace, device: torch.device) -> None:
    """Raises VidsegError for --amp off a GPU."""
    if args.amp and device.type != "cuda":
        raise VidsegError(
            f"--amp (bf16 autocast) needs a CUDA device; the device is {device} "
            "(drop --amp, or use --device cuda on a GPU machine)"
        )


def _check_model_device(
    args: argparse.Namespace, device: torch.device, model: TemporalModel
) -> None:
    """Raises VidsegError for a model that cannot train on this device."""
    if device.type == "cuda" and model.cpu_only_training:
        raise VidsegError(
            f"{args.model} trains on the CPU only for now "
            f"({model.cpu_only_training}); use --device cpu"
        )


def _step_schedule(args: argparse.Namespace, total: int, temporal: bool) -> list[tuple[int, int]]:
    """(batch, clip length) per step: single frames at twice the batch for the first
    ``--perframe-fraction`` of a temporal model's steps, then clips of ``--seq-len``."""
    perframe_steps = int(total * args.perframe_fraction) if temporal else total
    return [(2 * args.batch, 1)] * perframe_steps + [(args.batch, args.seq_len)] * (
        total - perframe_steps
    )


@dataclass
class _Run:
    """One training run: what goes from step to step and into ``last.pt``."""

    args: argparse.Namespace
    model: torch.nn.Module
    model_kwargs: dict
    optimizer: torch.optim.Optimizer
    rng: np.random.Generator
    total: int
    ckpt_path: Path
    provenance: list[dict[str, str]]  # the training runs, earliest first (models.provenance)
    step: int = 0
    history: list[dict] = field(default_factory=list)
    metrics_json: str = "{}"  # the last evaluation's metrics, kept by a save without one

    def save(self, metrics: SegMetrics | None) -> None:
        """Write the checkpoint atomically: a kill mid-save never corrupts last.pt. Without
        ``metrics`` (a run stopped between evaluations) it keeps the last evaluation's."""
        if metrics is not None:
            self.metrics_json = json.dumps(asdict(metrics))
        ckpt = {
            "model_name": self.args.model,
            "model_kwargs": {k: v for k, v in self.model_kwargs.items() if v is not None},
            "model": _to_cpu(self.model.state_dict()),  # loadable without a GPU
            "pretrained": self.model.cfg.pretrained,  # initial weights, for the bundle manifest
            "optimizer": _to_cpu(self.optimizer.state_dict()),
            "step": self.step,
            "total_steps": self.total,
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": json.dumps(self.rng.bit_generator.state),
            "history": json.dumps(self.history),
            "metrics": self.metrics_json,
            "train_args": json.dumps({k: v for k, v in vars(self.args).items() if k != "func"}),
            "provenance": self.provenance,
        }
        tmp = self.ckpt_path.with_suffix(".tmp")
        torch.save(ckpt, tmp)
        tmp.replace(self.ckpt_path)


def _run_steps(
    run: _Run,
    batches: Iterator,
    base_lrs: list[float],
    val_data: LabelledFrames,
    opts: ClipTraining,
    aug: ClipAugment,
    videos: VideoClips | None,
    device: torch.device,
) -> tuple[SegMetrics | None, bool]:
    """The training loop from ``run.step`` to ``run.total``: poly learning rate from
    ``base_lrs``, one ``train_step`` per batch, evaluation and a checkpoint every
    ``--eval-every`` steps and at the end. With ``--stop-after-minutes`` it also ends, with a
    checkpoint, after the first step that passes that time. Returns the last evaluation (None
    when no step ran, or none was due) and whether it stopped before ``run.total``."""
    args, model, optimizer = run.args, run.model, run.optimizer
    cuda = device.type == "cuda"
    metrics: SegMetrics | None = None
    model.train()
    bar = tqdm(
        total=run.total, initial=run.step, desc=f"train {args.model}", unit="step", file=sys.stderr
    )
    started = time.perf_counter()
    stop_s = args.stop_after_minutes * 60 if args.stop_after_minutes else math.inf
    for frames, labels in batches:
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base * (1 - run.step / run.total) ** 0.9
        frames = torch.as_tensor(frames).to(device, non_blocking=True)
        labels = torch.as_tensor(labels).to(device, non_blocking=True).long()
        video = _video_batch(videos, args, run.step, aug.crop, device) if videos else None
        loss = train_step(model, optimizer, frames, labels, opts, video)
        run.step += 1
        bar.update(1)
        if not cuda or run.step % LOG_EVERY_CUDA == 0 or run.step == run.total:
            bar.set_postfix(
                loss=f"{loss.item():.3f}",
                T=frames.shape[1],
                miou=f"{metrics.miou:.1f}" if metrics else "-",
            )
        due = run.step % args.eval_every == 0 or run.step == run.total
        if due:
            metrics = evaluate_sequence(model, val_data, carry_state=True)
            run.history.append(
                {
                    "step": run.step,
                    "loss": loss.item(),
                    "val_miou": metrics.miou,
                    "elapsed_s": time.perf_counter() - started,
                }
            )
            run.save(metrics)
            bar.set_postfix(loss=f"{loss.item():.3f}", miou=f"{metrics.miou:.1f}")
        if run.step < run.total and time.perf_counter() - started >= stop_s:
            if not due:
                run.save(None)
            bar.close()
            return metrics, True
    bar.close()
    return metrics, False


def init_chain(path: str | Path) -> list[dict[str, str]]:
    """The training runs behind the ``--init-from`` checkpoint ``path``, earliest first; one
    unknown run when that checkpoint predates the record.

    Raises:
        BundleError: not a vidseg-train checkpoint, or a malformed record in it.
    """
    try:
        chain = checked_chain(read_checkpoint(path, "--init-from").get("provenance"))
    except ValueError as exc:
        raise not_a_checkpoint(Path(path), exc, "--init-from: ") from exc
    return chain or [{"command": UNKNOWN, "commit": UNKNOWN}]


def train(args: argparse.Namespace, command: str = UNKNOWN) -> SegMetrics | None:
    """Train ``args.model`` as ``vidseg-train`` asks; writes ``last.pt`` and ``metrics.json``
    into ``args.out`` and returns the final val metrics; None when ``--stop-after-minutes``
    ended the run first (``last.pt`` written, ``metrics.json`` not). ``command``: the command
    line to record in the checkpoint (``vidseg-train`` passes its own)."""
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    _check_amp(args, device)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_data = load_split(args.data, "train", limit=args.limit)
    val_data = load_split(args.data, "val", limit=args.limit)
    model_kwargs = {"input_size": tuple(args.input_size) if args.input_size else None}
    # None = the variant's default: ImageNet weights where it has them, scratch otherwise
    model = create_model(args.model, pretrained=False if args.scratch else None, **model_kwargs)
    _check_model_device(args, device, model)
    weights = class_balance(train_data.labels, model.cfg.num_classes, args.class_balance)
    if weights is not None:
        logger.info(
            "class weights (--class-balance %g): %s",
            args.class_balance,
            " ".join(f"{w:.2f}" for w in weights),
        )
    opts = ClipTraining.from_args(args, weights)
    opts.check(model)
    if args.init_from:
        copied, fresh = init_from(model, args.init_from)
        logger.info(
            "initialised %d tensors from %s; new: %s",
            copied,
            args.init_from,
            ", ".join(sorted({".".join(k.split(".")[:2]) for k in fresh})) or "none",
        )
    if args.freeze_stride:
        frozen = freeze_encoder(model, args.freeze_stride)
        logger.info("froze %d encoder tensors (output stride <= %d)", frozen, args.freeze_stride)
    # NHWC activations: depthwise convolutions run ~1.4x faster on the CPU (also on a GPU)
    model.to(device, memory_format=torch.channels_last)
    if args.qat:
        qat = prepare_qat(model, args.qat_float_convs)
        logger.info(
            "quantization-aware: %d convolutions fake-quantized (%d batch norms folded and "
            "frozen), the first %d float; validation runs the fake-quantized model",
            qat.quantized,
            qat.folded,
            qat.float_convs,
        )
    logger.info(
        "training on %s%s, %s",
        device,
        " with bf16 autocast" if args.amp else "",
        f"{args.workers} data workers" if args.workers else "clips built in-process",
    )
    aug = training_augment(
        args.crop, model.cfg.input_size, train_data.labels.shape[1], tuple(args.scale_range)
    )
    logger.info("training crops %dx%d at %.2f-%.2fx the source pixels", *aug.crop, *aug.scale_range)
    videos = _consistency_videos(args, model.cfg.input_size) if opts.consistency_weight else None
    optimizer = torch.optim.AdamW(
        _param_groups(model, args.lr), weight_decay=1e-4, **({"fused": True} if cuda else {})
    )
    # the poly schedule's base, read before a resume loads the optimizer state: its groups
    # hold the last decayed lr
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    total = args.max_steps or args.epochs * math.ceil(len(train_data.images) / args.batch)
    schedule = _step_schedule(args, total, model.cfg.temporal)
    run = _Run(
        args,
        model,
        model_kwargs,
        optimizer,
        np.random.default_rng(args.seed),
        total,
        out / CHECKPOINT,
        provenance=(init_chain(args.init_from) if args.init_from else [])
        + [{"command": command, "commit": source_commit()}],
    )
    if args.resume:
        _resume(run, model, optimizer)
    if args.workers:
        batches: Iterator = _worker_batches(
            train_data, schedule, run.step, args.seed, aug, args.workers, pin_memory=cuda
        )
    else:  # one background thread, one generator (rng) for the whole run
        batches = _batches(train_data, schedule[run.step :], run.rng, aug)
    with cuda_speedups(cuda):
        metrics, stopped = _run_steps(run, batches, base_lrs, val_data, opts, aug, videos, device)
        if stopped:
            return None
        if metrics is None:  # resumed a finished run
            metrics = evaluate_sequence(model, val_data, carry_state=True)
        summary = {
            "model": args.model,
            "steps": run.step,
            "val_miou": metrics.miou,
            "val_pixel_acc": metrics.pixel_acc,
            "val_iou": metrics.iou,
        }
        if model.cfg.temporal:
            summary["val_miou_no_state"] = evaluate_sequence(
                model, val_data, carry_state=False
            ).miou
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    return metrics


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(
        prog="vidseg-train",
        description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter,
    )
    p.add_argument("--model", required=True, help="registry name (see vidseg.models.list_models)")
    p.add_argument("--data", required=True, help="CamVid root with train/, trainannot/, val/, ...")
    p.add_argument("--out", required=True, help="run directory for last.pt and metrics.json")
    p.add_argument("--epochs", type=int, default=40, help="passes over the train split")
    p.add_argument("--max-steps", type=int, help="total optimizer steps (overrides --epochs)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/last.pt (give the same options as the run that wrote it)",
    )
    p.add_argument(
        "--stop-after-minutes",
        type=float,
        metavar="M",
        help="end the run, with a checkpoint, after the first step that passes M minutes "
        "of training (--resume continues it): a long run in chunks",
    )
    p.add_argument(
        "--init-from",
        metavar="CKPT",
        help="start from the weights of another run's last.pt that this model shares "
        "(names and shapes; e.g. a per-frame twin for recurrent-lite0-res)",
    )
    p.add_argument("--batch", type=int, default=4, help="clips per step (2x for single frames)")
    p.add_argument("--seq-len", type=int, default=4, help="frames per training clip")
    p.add_argument(
        "--perframe-fraction",
        type=float,
        default=0.5,
        help="share of steps on single frames before clips",
    )
    p.add_argument(
        "--crop",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="training crop (default: the input size, at most 288x384)",
    )
    p.add_argument(
        "--scale-range",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        default=ClipAugment.scale_range,
        help="random scale of the training crops, relative to the scale objects have "
        "at the input size (1: as at inference)",
    )
    p.add_argument(
        "--class-balance",
        type=float,
        default=0.0,
        metavar="P",
        help="weight each class's pixels by (median class frequency / its frequency) "
        "** P in the loss, frequencies from the train labels (1: median-frequency "
        "balancing; 0: off)",
    )
    p.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="inference size (default: the model's)",
    )
    p.add_argument(
        "--freeze-stride",
        type=int,
        default=0,
        choices=(0, 4, 8, 16, 32),
        metavar="S",
        help="freeze the pretrained encoder's layers up to output "
        "stride S (weights and batch-norm statistics; 0: none): 4 makes a CPU step ~1.7x faster",
    )
    p.add_argument("--lr", type=float, default=1e-3, help="encoder lr (new layers get 3x)")
    p.add_argument("--eval-every", type=int, default=200, help="steps between val evaluations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--scratch", action="store_true", help="no ImageNet weights even where the model has them"
    )
    p.add_argument("--limit", type=int, help="use only the first N images of each split (tests)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument(
        "--device", default="cpu", help="cpu, cuda, cuda:N, or auto (cuda when available, else cpu)"
    )
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only)")
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes building the training clips (0: one thread in-process); "
        "each batch is seeded from --seed and its step",
    )
    qat = p.add_argument_group("int8 (docs/training.md)")
    qat.add_argument(
        "--qat",
        action="store_true",
        help="quantization-aware fine-tuning of a per-frame network from --init-from: its "
        "convolutions rounded as vidseg-export --int8 runs them, batch norms frozen",
    )
    qat.add_argument(
        "--qat-float-convs",
        type=int,
        default=0,
        metavar="N",
        help="leave the first N convolutions float, as --int8-float-convs N will",
    )
    relax = p.add_argument_group("seed 002 (docs/training.md)")
    relax.add_argument(
        "--label-relaxation",
        action="store_true",
        help="boundary label relaxation: maximise the likelihood of the union of "
        "the classes in each pixel's (2R+1)x(2R+1) label window",
    )
    relax.add_argument(
        "--relax-border",
        type=int,
        default=1,
        metavar="R",
        help="window radius R of --label-relaxation (1: 3x3)",
    )
    relax.add_argument(
        "--propagation-length",
        type=int,
        metavar="N",
        help="supervise only the labelled (last) frame of each clip and the N "
        "before it, whose labels are propagated (0: off; None: every frame)",
    )
    memory = p.add_argument_group("recurrent memory (docs/training.md)")
    memory.add_argument(
        "--tbptt",
        type=int,
        default=0,
        metavar="K",
        help="truncated BPTT: backward every K frames of a clip, the state "
        "detached between chunks; one optimizer step per clip (0: whole clip)",
    )
    memory.add_argument(
        "--warmup-frames",
        type=int,
        default=0,
        metavar="W",
        help="first W frames of each clip only warm the state up: no gradient, no loss",
    )
    memory.add_argument(
        "--consistency-weight",
        type=float,
        default=0.0,
        metavar="W",
        help="weight of the flow-warped temporal-consistency loss on the "
        "unlabelled clips of --consistency-videos (0: off)",
    )
    memory.add_argument(
        "--consistency-videos",
        metavar="DIR",
        help="folder of unlabelled videos for --consistency-weight (clips from the kind of "
        "camera the model will see)",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _check_clip_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """parser.error on a bad combination of the clip options."""
    for flag, value in (
        ("--relax-border", args.relax_border),
        ("--tbptt", args.tbptt),
        ("--warmup-frames", args.warmup_frames),
        ("--propagation-length", args.propagation_length or 0),
        ("--consistency-weight", args.consistency_weight),
    ):
        if value < 0:
            parser.error(f"{flag} must be >= 0")
    if args.warmup_frames >= args.seq_len:
        parser.error(
            f"--warmup-frames {args.warmup_frames} leaves no frame with a loss in "
            f"clips of --seq-len {args.seq_len}"
        )
    if args.consistency_weight and not args.consistency_videos:
        parser.error("--consistency-weight needs --consistency-videos DIR")
    if args.consistency_weight and args.seq_len < 2:
        parser.error("--consistency-weight needs clips of --seq-len 2 or more")
    if args.qat and not args.init_from:
        parser.error("--qat fine-tunes a trained float model: give its checkpoint with --init-from")
    if args.qat_float_convs and not args.qat:
        parser.error("--qat-float-convs goes with --qat")
    if args.qat_float_convs < 0:
        parser.error(f"--qat-float-convs must be >= 0, got {args.qat_float_convs}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.model not in list_models():
        parser.error(f"unknown --model {args.model!r}; choose from {', '.join(list_models())}")
    if args.max_steps is not None and args.max_steps < 1:
        parser.error("--max-steps must be >= 1")
    if args.eval_every < 1:
        parser.error(f"--eval-every must be >= 1, got {args.eval_every}")
    if args.stop_after_minutes is not None and not args.stop_after_minutes > 0:
        parser.error(f"--stop-after-minutes must be > 0, got {args.stop_after_minutes:g}")
    if args.workers < 0:
        parser.error("--workers must be >= 0")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.class_balance < 0:
        parser.error("--class-balance must be >= 0")
    if not 0 < args.scale_range[0] <= args.scale_range[1]:
        parser.error(
            f"--scale-range {args.scale_range[0]:g} {args.scale_range[1]:g}: need 0 < LO <= HI"
        )
    _check_clip_args(parser, args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    # the command that starts the run: a resumed one keeps the record in its checkpoint, and
    # one from before the record is best described by its resuming command less --resume
    given = sys.argv[1:] if argv is None else argv
    command = command_line("vidseg-train", [a for a in given if a != "--resume"])
    code, metrics = run_for_cli(
        "vidseg-train",
        lambda: train(args, command),
        debug=args.debug,
        interrupted="interrupted; resume with --resume",
    )
    if code:
        return code
    if metrics is None:
        print(
            f"stopped after {args.stop_after_minutes:g} minutes of training; checkpoint "
            f"{Path(args.out) / CHECKPOINT}: continue with the same command and --resume"
        )
        return 0
    print(
        f"val mIoU {metrics.miou:.1f} (pixel acc {metrics.pixel_acc:.1f}); "
        f"checkpoint {Path(args.out) / CHECKPOINT}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
