"""``vidseg-run INPUT --triton URL --out OUT``: segment a video on a Triton Inference Server.

The server holds the recurrent state (a repository from ``vidseg-export BUNDLE --triton
REPO``, implicit state); this client decodes, resizes each frame to the model input, sends it
over gRPC with one sequence id per video (``sequence_start`` on the first frame,
``sequence_end`` on the last: one frame of look-ahead tells which is last), and upsamples the
returned labels to the frame like the engine does (``engine.upsample``: crisp from logits).
The model's input size, classes and palette come from the model config's ``vidseg_manifest``
parameter, so the client needs no bundle.

``tritonclient[grpc]`` (the ``[triton]`` extra) is imported only when a client is made; this
module, like the rest of the engine, never imports torch.
"""

from __future__ import annotations

import json
import logging
import secrets
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from vidseg.engine.audio import AudioTrack
from vidseg.engine.bundle import Manifest
from vidseg.engine.errors import BackendError, BundleError, TruncatedVideoError
from vidseg.engine.frame import Frame
from vidseg.engine.masks import MaskSequenceWriter
from vidseg.engine.outfile import lines_to_stderr, write_text, writes_through
from vidseg.engine.overlay import blend, palette_lut
from vidseg.engine.upsample import GraphOutputs, upsample
from vidseg.engine.video import open_video
from vidseg.engine.writer import VideoWriter

logger = logging.getLogger(__name__)

MANIFEST_PARAMETER = "vidseg_manifest"  # written by vidseg.export.triton
DEFAULT_MODEL = "vidseg"
EXTRA_HINT = "pip install 'vidseg[triton]'"
MASK_VIDEO_SUFFIXES = (".mkv", ".mp4")


def _grpc() -> Any:
    try:
        import tritonclient.grpc as grpcclient
    except ImportError as exc:
        raise BackendError(f"--triton needs tritonclient[grpc] ({EXTRA_HINT}): {exc}") from None
    return grpcclient


def _server_url(url: str) -> str:
    """``grpc://host:port`` or ``host:port`` -> ``host:port`` (8001, Triton's gRPC port, when
    no port is given)."""
    url = url.removeprefix("grpc://").rstrip("/")
    return url if ":" in url.rsplit("]", 1)[-1] else f"{url}:8001"


class TritonSegmenter:
    """One video stream segmented by a Triton model, as one sequence.

    Args:
        url: the server's gRPC endpoint, ``host:port`` (``grpc://`` optional).
        model: the model name in the repository (``vidseg-export --triton-name``).
        sequence_id: the sequence's correlation id (default: a random 63-bit id).
        timeout_s: per-request deadline, seconds.

    Raises:
        BackendError: tritonclient missing, the server unreachable, the model unknown or not
            a vidseg export (no manifest parameter).
        BundleError: the manifest it carries is invalid.
    """

    def __init__(
        self,
        url: str,
        model: str = DEFAULT_MODEL,
        *,
        sequence_id: int | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        grpc = _grpc()
        self._grpc = grpc
        self.url, self.model, self.timeout_s = _server_url(url), model, timeout_s
        self.sequence_id = sequence_id or (secrets.randbits(63) or 1)
        try:
            self._client = grpc.InferenceServerClient(url=self.url)
            config = self._client.get_model_config(model, client_timeout=timeout_s).config
        except Exception as exc:  # tritonclient raises InferenceServerException, grpc errors
            raise BackendError(f"triton {self.url} model {model!r}: {_reason(exc)}") from None
        if MANIFEST_PARAMETER not in config.parameters:
            raise BackendError(
                f"triton model {model!r} has no {MANIFEST_PARAMETER} parameter "
                "(export it with vidseg-export BUNDLE --triton REPO)"
            )
        raw = config.parameters[MANIFEST_PARAMETER].string_value
        try:
            self.manifest = Manifest.from_dict(json.loads(raw), source=f"triton:{model}")
        except json.JSONDecodeError as exc:
            raise BundleError(f"triton model {model!r}: unreadable manifest: {exc}") from None
        self.input_size = (self.manifest.input.height, self.manifest.input.width)
        self._outputs = [o.name for o in self.manifest.outputs]
        self._roles = {o.name: o.role for o in self.manifest.outputs}
        self._started = False
        self.frames = 0

    def step(self, frame: np.ndarray, *, last: bool = False) -> np.ndarray:
        """(H, W) uint8 labels of (H, W, 3) uint8 RGB ``frame``; ``last`` ends the sequence.

        Raises:
            BackendError: the request failed (server error, deadline).
        """
        height, width = self.input_size
        x = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
        tensor = self._grpc.InferInput(self.manifest.input.name, [1, height, width, 3], "UINT8")
        tensor.set_data_from_numpy(np.ascontiguousarray(x)[None])
        wanted = [self._grpc.InferRequestedOutput(name) for name in self._outputs]
        try:
            response = self._client.infer(
                self.model,
                [tensor],
                outputs=wanted,
                sequence_id=self.sequence_id,
                sequence_start=not self._started,
                sequence_end=last,
                client_timeout=self.timeout_s,
            )
        except Exception as exc:
            raise BackendError(
                f"triton {self.url} model {self.model!r} frame {self.frames}: {_reason(exc)}"
            ) from None
        self._started = not last
        self.frames += 1
        got = {self._roles[name]: response.as_numpy(name)[0] for name in self._outputs}
        outputs = GraphOutputs(got["labels"], got.get("scores"), got.get("logits"))
        labels, _ = upsample(outputs, *frame.shape[:2])
        return labels

    def close(self) -> None:
        self._client.close()


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _with_last(frames: Iterator[Frame]) -> Iterator[tuple[Frame, bool]]:
    """Each frame and whether it is the last: one frame of look-ahead. A decode error after
    a frame marks that frame last (so the server's sequence ends) and is then re-raised."""
    pending: Frame | None = None
    try:
        for frame in frames:
            if pending is not None:
                yield pending, False
            pending = frame
    except TruncatedVideoError:
        if pending is not None:
            yield pending, True
        raise
    if pending is not None:
        yield pending, True


@dataclass(frozen=True)
class TritonRunSummary:
    """What ``run_triton`` did."""

    frames: int
    seconds: float  # wall time, decode to the last encoded frame
    sequence_id: int
    model: str

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def run_triton(
    input: str,
    out: str | Path,
    *,
    url: str,
    model: str = DEFAULT_MODEL,
    mask: bool = False,
    alpha: float = 0.5,
    max_frames: int | None = None,
    overwrite: bool = False,
    timeout_s: float = 30.0,
    audio: bool = True,
) -> TritonRunSummary:
    """Segment ``input`` on the Triton server at ``url`` and write ``out``: an overlay video
    (with the input's audio, read by the same demuxer, unless ``audio`` is False), or with
    ``mask`` PNG class ids into a directory (lossless label video for .mkv/.mp4).

    Outputs are atomic (written under a temporary name, renamed when complete). A truncated
    input writes the frames it had, ends the sequence, then raises.

    Raises:
        BackendError, BundleError: as ``TritonSegmenter``.
        VideoIOError / TruncatedVideoError: the input cannot be read / ended early.
    """
    segmenter = TritonSegmenter(url, model, timeout_s=timeout_s)
    t0 = time.perf_counter_ns()
    try:
        track = AudioTrack() if audio and not mask else None
        info, frames = open_video(input, max_frames=max_frames, audio=track)
        lut = palette_lut(segmenter.manifest.palette)
        with ExitStack() as stack:
            out = Path(out)
            suffix = out.suffix.lower()
            if mask and suffix not in MASK_VIDEO_SUFFIXES and not writes_through(out):
                sink: Any = stack.enter_context(MaskSequenceWriter(out, overwrite=overwrite))
            else:
                sink = stack.enter_context(
                    VideoWriter(
                        out,
                        width=info.width,
                        height=info.height,
                        fps=info.fps,
                        time_base=info.time_base,
                        lossless=mask,
                        codec="ffv1" if mask and suffix in (".mkv", "") else "libx264",
                        overwrite=overwrite,
                        audio=track,
                        zero_start=True,
                    )
                )
            try:
                for frame, last in _with_last(frames):
                    labels = segmenter.step(frame.image, last=last)
                    image = labels if mask else blend(frame.image, labels, lut, alpha)
                    sink.write(image, pts=frame.pts)
            except TruncatedVideoError:
                stack.close()  # commit the frames decoded, then report
                raise
    finally:
        segmenter.close()
    seconds = (time.perf_counter_ns() - t0) / 1e9
    return TritonRunSummary(segmenter.frames, seconds, segmenter.sequence_id, model)


UNSUPPORTED_WITH_TRITON = ("model", "mask_out", "scores", "jsonl", "live", "show", "no_memory")


def cli_run(args: Any) -> int:
    """``vidseg-run --triton URL``: ``run_triton`` with the parsed flags (INPUT, --out,
    --triton-model, --mask, --alpha, --max-frames, --overwrite, --timeout, --json); prints
    one summary line or one error line. Returns the exit code."""
    from vidseg.engine.errors import run_for_cli

    used = [f"--{n.replace('_', '-')}" for n in UNSUPPORTED_WITH_TRITON if getattr(args, n, None)]
    if used or not args.out:
        print(
            f"vidseg-run: error: --triton needs --out and takes no {', '.join(used) or '--model'}"
            " (the model is on the server)",
            file=sys.stderr,
        )
        return 2
    code, summary = run_for_cli(
        "vidseg-run",
        lambda: run_triton(
            args.input,
            args.out,
            url=args.triton,
            model=args.triton_model,
            mask=args.mask,
            alpha=args.alpha,
            max_frames=args.max_frames,
            overwrite=args.overwrite,
            timeout_s=args.timeout or 30.0,
            audio=not args.no_audio,
        ),
        debug=args.debug,
    )
    if summary is None:
        return code
    with lines_to_stderr(args.json) as stdout:  # --json -: the summary alone on stdout
        if args.json:
            report = {
                "frames": summary.frames,
                "fps": summary.fps,
                "seconds": summary.seconds,
                "sequence_id": summary.sequence_id,
                "model": summary.model,
                "server": args.triton,
            }
            text = json.dumps(report, indent=2) + "\n"
            code, _ = run_for_cli(
                "vidseg-run", lambda: write_text(args.json, text, stdout=stdout), debug=args.debug
            )
            if code:
                return code
        print(
            f"vidseg-run: {summary.frames} frames on triton {args.triton} ({summary.model}, "
            f"sequence {summary.sequence_id}) at {summary.fps:.1f} FPS -> {args.out}"
        )
    return 0
