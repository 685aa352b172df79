"""``vidseg-train``: train a registered model on CamVid with synthetic temporal clips.

Two phases share one poly learning-rate schedule: the first ``--perframe-fraction`` of the
steps trains on single augmented frames (batch ``2 * --batch``), the rest on clips of
``--seq-len`` frames (batch ``--batch``) with the recurrent state carried through each clip.
Checkpoints (``last.pt``) are written at every evaluation and at the end; ``--resume`` continues
from ``last.pt`` with the optimizer and random-generator states restored, so an interrupted run
resumes where it stopped. Evaluation runs the CamVid val drive in order with state carried.

On a GPU: ``--device cuda`` (or ``auto``) trains and evaluates there, ``--amp`` adds bf16
autocast, and ``--workers N`` builds the augmented clips in N processes so the CPU keeps up.
Checkpoints always hold CPU tensors.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import queue
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import torch
from tqdm import tqdm

from vidseg.engine.errors import VidsegError, run_for_cli
from vidseg.models.data import ClipAugment, LabelledFrames, clip_batch, load_split
from vidseg.models.evaluate import evaluate_sequence, zero_state
from vidseg.models.losses import segmentation_loss
from vidseg.models.metrics import SegMetrics
from vidseg.models.registry import create_model, list_models
from vidseg.models.segnet import normalize

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
            raise VidsegError(f"--device {spec}: CUDA is not available ({why}, torch "
                              f"{torch.__version__}); use --device cpu or auto")  # fmt: skip
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise VidsegError(f"--device {spec}: only {torch.cuda.device_count()} CUDA "
                              "device(s) visible")  # fmt: skip
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

    def __init__(self, data: LabelledFrames, schedule: list[tuple[int, int]], seed: int,
                 aug: ClipAugment) -> None:  # fmt: skip
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
        ClipBatches(data, schedule, seed, aug), batch_size=None,
        sampler=range(start, len(schedule)), num_workers=workers, pin_memory=pin_memory,
        prefetch_factor=4,
    )  # fmt: skip
    # The workers fork when the iterator starts. Each should run OpenCV on one thread (one
    # process per core already), and OpenCV's thread pool cannot be reconfigured in a forked
    # child (cv2.setNumThreads hangs there), so the parent forks them with its own set to 1.
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return iter(loader)
    finally:
        cv2.setNumThreads(threads)


def training_augment(crop: tuple[int, int] | None, input_size: tuple[int, int],
                     source_height: int) -> ClipAugment:  # fmt: skip
    """Clip augmentation matched to the model's input size.

    At inference a frame is resized to ``input_size``, so objects appear at ``input_height /
    source_height`` of their CamVid size; training scales are drawn around that factor
    (``ClipAugment.scale_range`` times it). ``crop`` defaults to the input size capped at
    288x384 (bigger crops cost time and add little context).
    """
    factor = input_size[0] / source_height
    lo, hi = ClipAugment.scale_range
    if crop is None:
        crop = (min(input_size[0], DEFAULT_CROP[0]), min(input_size[1], DEFAULT_CROP[1]))
    return ClipAugment(crop=tuple(crop), scale_range=(lo * factor, hi * factor))


def training_loss(model: torch.nn.Module, frames: torch.Tensor,
                  labels: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """Loss of one batch: frames (B, T, h, w, 3) uint8, labels (B, T, h, w) int64.

    A model with its own ``training_loss(frames, labels)`` (e.g. extra terms, or inputs such
    as optical flow computed from the frames) uses that; others get cross-entropy on
    ``model(normalize(frames))``, one frame (T = 1) or a clip with state carried.
    """
    custom = getattr(model, "training_loss", None)
    if custom is not None:
        return custom(frames, labels)
    x = normalize(frames)  # (B, T, 3, h, w)
    if x.shape[1] == 1:
        x, labels = x[:, 0], labels[:, 0]
    state = zero_state(model, x.shape[0], x.shape[-2], x.shape[-1], x.device)
    return segmentation_loss(model(x, *state)[0], labels)


def _param_groups(model: torch.nn.Module, lr: float) -> list[dict]:
    """The pretrained encoder learns at ``lr``, the new layers at 3x ``lr``."""
    encoder = [p for n, p in model.named_parameters() if n.startswith("encoder.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    return [{"params": encoder, "lr": lr}, {"params": rest, "lr": 3 * lr}]


def train(args: argparse.Namespace) -> SegMetrics:
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    if args.amp and not cuda:
        raise VidsegError(f"--amp (bf16 autocast) needs a CUDA device; the device is {device} "
                          "(drop --amp, or use --device cuda on a GPU machine)")  # fmt: skip
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_data = load_split(args.data, "train", limit=args.limit)
    val_data = load_split(args.data, "val", limit=args.limit)
    model_kwargs = {"input_size": tuple(args.input_size) if args.input_size else None}
    # None = the variant's default: ImageNet weights where it has them, scratch otherwise
    model = create_model(args.model, pretrained=False if args.scratch else None, **model_kwargs)
    if cuda and model.cfg.family == "netwarp":
        raise VidsegError(f"{args.model} trains on the CPU only for now (its DIS optical flow "
                          "reads the frames as numpy arrays); use --device cpu")  # fmt: skip
    if cuda:
        # few fixed shapes (frames, clips, val): autotuning costs ~20 s per new shape on an
        # H200 and makes the steady-state steps ~25% faster
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model.to(device)
    logger.info(
        "training on %s%s, %s",
        device,
        " with bf16 autocast" if args.amp else "",
        f"{args.workers} data workers" if args.workers else "clips built in-process",
    )
    aug = training_augment(args.crop, model.cfg.input_size, train_data.labels.shape[1])
    logger.info("training crops %dx%d at %.2f-%.2fx the source pixels", *aug.crop, *aug.scale_range)
    optimizer = torch.optim.AdamW(_param_groups(model, args.lr), weight_decay=1e-4,
                                  **({"fused": True} if cuda else {}))  # fmt: skip
    steps_per_epoch = math.ceil(len(train_data.images) / args.batch)
    total = args.max_steps or args.epochs * steps_per_epoch
    temporal = model.cfg.family != "perframe"
    perframe_steps = int(total * args.perframe_fraction) if temporal else total
    schedule = [(2 * args.batch, 1)] * perframe_steps + [(args.batch, args.seq_len)] * (
        total - perframe_steps
    )
    rng = np.random.default_rng(args.seed)
    step, history = 0, []
    # before a resume loads the optimizer state: its groups hold the last decayed lr
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    ckpt_path = out / CHECKPOINT
    if args.resume:
        if not ckpt_path.is_file():
            raise VidsegError(f"--resume: no checkpoint at {ckpt_path}")
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if ckpt["model_name"] != args.model:
            raise VidsegError(f"--resume: {ckpt_path} holds {ckpt['model_name']}, not {args.model}")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["torch_rng"])
        rng.bit_generator.state = json.loads(ckpt["numpy_rng"])
        step, history = ckpt["step"], json.loads(ckpt["history"])
        logger.info("resumed from %s at step %d", ckpt_path, step)

    def save(metrics: SegMetrics | None) -> None:
        ckpt = {
            "model_name": args.model,
            "model_kwargs": {k: v for k, v in model_kwargs.items() if v is not None},
            "model": _to_cpu(model.state_dict()),  # loadable without a GPU
            "pretrained": model.cfg.pretrained,  # initial weights, for the bundle manifest
            "optimizer": _to_cpu(optimizer.state_dict()),
            "step": step,
            "total_steps": total,
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": json.dumps(rng.bit_generator.state),
            "history": json.dumps(history),
            "metrics": json.dumps(asdict(metrics) if metrics else {}),
            "train_args": json.dumps({k: v for k, v in vars(args).items() if k != "func"}),
        }
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save(ckpt, tmp)
        tmp.replace(ckpt_path)  # atomic: a kill mid-save never corrupts last.pt

    metrics: SegMetrics | None = None
    model.train()
    bar = tqdm(total=total, initial=step, desc=f"train {args.model}", unit="step", file=sys.stderr)
    started = time.perf_counter()
    if args.workers:
        batches: Iterator = _worker_batches(train_data, schedule, step, args.seed, aug,
                                            args.workers, pin_memory=cuda)  # fmt: skip
    else:  # one background thread, one generator (rng) for the whole run
        batches = _batches(train_data, schedule[step:], rng, aug)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if args.amp
                else contextlib.nullcontext())  # fmt: skip
    for frames, labels in batches:
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base * (1 - step / total) ** 0.9
        frames = torch.as_tensor(frames).to(device, non_blocking=True)
        labels = torch.as_tensor(labels).to(device, non_blocking=True).long()
        with autocast:
            loss = training_loss(model, frames, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        bar.update(1)
        if not cuda or step % LOG_EVERY_CUDA == 0 or step == total:
            bar.set_postfix(loss=f"{loss.item():.3f}", T=frames.shape[1],
                            miou=f"{metrics.miou:.1f}" if metrics else "-")  # fmt: skip
        if step % args.eval_every == 0 or step == total:
            metrics = evaluate_sequence(model, val_data, carry_state=True)
            history.append({"step": step, "loss": loss.item(), "val_miou": metrics.miou,
                            "elapsed_s": time.perf_counter() - started})  # fmt: skip
            save(metrics)
            bar.set_postfix(loss=f"{loss.item():.3f}", miou=f"{metrics.miou:.1f}")
    bar.close()
    if metrics is None:  # resumed a finished run
        metrics = evaluate_sequence(model, val_data, carry_state=True)
    summary = {"model": args.model, "steps": step, "val_miou": metrics.miou,
               "val_pixel_acc": metrics.pixel_acc, "val_iou": metrics.iou}  # fmt: skip
    if temporal:
        summary["val_miou_no_state"] = evaluate_sequence(model, val_data, carry_state=False).miou
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    return metrics


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vidseg-train", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )  # fmt: skip
    p.add_argument("--model", required=True, help="registry name (see vidseg.models.list_models)")
    p.add_argument("--data", required=True, help="CamVid root with train/, trainannot/, val/, ...")
    p.add_argument("--out", required=True, help="run directory for last.pt and metrics.json")
    p.add_argument("--epochs", type=int, default=40, help="passes over the train split")
    p.add_argument("--max-steps", type=int, help="total optimizer steps (overrides --epochs)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--batch", type=int, default=4, help="clips per step (2x for single frames)")
    p.add_argument("--seq-len", type=int, default=4, help="frames per training clip")
    p.add_argument("--perframe-fraction", type=float, default=0.5,
                   help="share of steps on single frames before clips")  # fmt: skip
    p.add_argument(
        "--crop",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="training crop (default: the input size, at most 288x384)",
    )
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                   help="inference size (default: the model's)")  # fmt: skip
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
    p.add_argument("--workers", type=int, default=0,
                   help="processes building the training clips (0: one thread in-process); "
                   "each batch is seeded from --seed and its step")  # fmt: skip
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.model not in list_models():
        parser.error(f"unknown --model {args.model!r}; choose from {', '.join(list_models())}")
    if args.max_steps is not None and args.max_steps < 1:
        parser.error("--max-steps must be >= 1")
    if args.workers < 0:
        parser.error("--workers must be >= 0")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    code, metrics = run_for_cli("vidseg-train", lambda: train(args), debug=args.debug,
                                interrupted="interrupted; resume with --resume")  # fmt: skip
    if metrics is None:
        return code
    print(f"val mIoU {metrics.miou:.1f} (pixel acc {metrics.pixel_acc:.1f}); "
          f"checkpoint {Path(args.out) / CHECKPOINT}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
