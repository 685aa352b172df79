"""``vidseg-run INPUT --triton URL --out OUT``: segment a video on a Triton Inference Server.

The server holds the recurrent state (a repository from ``vidseg-export BUNDLE --triton
REPO``, implicit state); ``TritonSegmenter`` is the stepper ``engine.run.segment`` runs in place
of a ``Segmenter``: it fits each frame to the model input by the resize mode, as the engine
does (``prepare``, in the decode thread), sends it over gRPC with one sequence id per stream
(``sequence_start`` on the first frame; ``sequence_end`` when the stream ends or resets, on one
more request carrying the last frame again, whose answer is not used: a frame cannot be known to
be the last before it is sent without holding every frame back), and returns the answer as a
``Result`` at the frame's size, whose labels are upsampled like the engine's
(``engine.upsample``: crisp from logits) and mapped back through the placement when read. The
model's input size, classes and palette come from the model config's ``vidseg_manifest``
parameter, so the client needs no bundle.

``tritonclient[grpc]`` (the ``[triton]`` extra) is imported only when a client is made; this
module, like the rest of the engine, never imports torch.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any

import numpy as np

from vidseg.engine.bundle import Manifest
from vidseg.engine.errors import BackendError, BundleError
from vidseg.engine.frame import Frame
from vidseg.engine.geometry import check_resize
from vidseg.engine.segmenter import PreparedFrame, Result
from vidseg.engine.slot import prepare
from vidseg.engine.timing import FrameTimings, elapsed_ms
from vidseg.engine.upsample import GraphOutputs

logger = logging.getLogger(__name__)

MANIFEST_PARAMETER = "vidseg_manifest"  # written by vidseg.export.triton
DEFAULT_MODEL = "vidseg"
EXTRA_HINT = "pip install 'vidseg[triton]'"


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
    """One video stream segmented by a Triton model, as one sequence; the stepper protocol of
    ``engine.pipeline`` (``prepare``/``step``/``reset``) and a context manager (``close``).

    Args:
        url: the server's gRPC endpoint, ``host:port`` (``grpc://`` optional).
        model: the model name in the repository (``vidseg-export --triton-name``).
        sequence_id: the first sequence's correlation id (default: a random 63-bit id); a
            ``reset`` starts the next one at a new random id.
        timeout_s: per-request deadline, seconds.
        resize: how a frame fits the model input, as ``Segmenter``'s (``engine.geometry``):
            ``stretch``, ``letterbox`` or ``crop``.

    Raises:
        ValueError: an unknown ``resize``.
        BackendError: tritonclient missing, the server unreachable, the model unknown or not
            a vidseg export (no manifest parameter).
        BundleError: the manifest it carries is invalid.
    """

    cut_resets = 0  # the server's state is reset only by ``reset``

    def __init__(
        self,
        url: str,
        model: str = DEFAULT_MODEL,
        *,
        sequence_id: int | None = None,
        timeout_s: float = 30.0,
        resize: str = "stretch",
    ) -> None:
        self.resize = check_resize(resize)
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
        self._open: np.ndarray | None = None  # the last input sent while a sequence is open
        self.frames = 0

    def prepare(self, frame: np.ndarray | Frame) -> PreparedFrame:
        """The frame fitted to the model's input by the resize mode, as a ``Segmenter``
        prepares it (``engine.slot.prepare``; stateless: any thread).

        Raises:
            FrameError: the frame is not an (H, W, 3) uint8 array with H, W >= 1.
        """
        return prepare(self.input_size, self.resize, frame)

    def step(self, frame: np.ndarray | Frame | PreparedFrame, *, last: bool = False) -> Result:
        """The segmentation of ``frame`` (RGB uint8 (H, W, 3), or prepared), the sequence's
        state carried; ``last`` ends the sequence with this frame.

        Raises:
            BackendError: the request failed (server error, deadline).
        """
        t0 = time.perf_counter_ns()
        x = frame if isinstance(frame, PreparedFrame) else self.prepare(frame)
        t1 = time.perf_counter_ns()
        got = self._infer(x.image, start=self._open is None, end=last)
        self._open = None if last else x.image
        t2 = time.perf_counter_ns()
        outputs = GraphOutputs(got["labels"], got.get("scores"), got.get("logits"))
        self.frames += 1
        timings = FrameTimings(elapsed_ms(t0, t1), elapsed_ms(t1, t2), 0.0)
        size = x.frame_size or x.image.shape[:2]
        return Result(
            None,
            self.frames - 1,
            x.timestamp,
            timings,
            outputs=outputs,
            placement=x.placement,
            size=size,
        )

    def _infer(self, x: np.ndarray, *, start: bool, end: bool) -> dict[str, np.ndarray]:
        height, width = self.input_size
        tensor = self._grpc.InferInput(self.manifest.input.name, [1, height, width, 3], "UINT8")
        tensor.set_data_from_numpy(x[None])
        wanted = [self._grpc.InferRequestedOutput(name) for name in self._outputs]
        try:
            response = self._client.infer(
                self.model,
                [tensor],
                outputs=wanted,
                sequence_id=self.sequence_id,
                sequence_start=start,
                sequence_end=end,
                client_timeout=self.timeout_s,
            )
        except Exception as exc:
            raise BackendError(
                f"triton {self.url} model {self.model!r} frame {self.frames}: {_reason(exc)}"
            ) from None
        return {self._roles[name]: response.as_numpy(name)[0] for name in self._outputs}

    def reset(self) -> None:
        """End the open sequence (the server drops its state); the next frame starts a new one
        under a new id."""
        if self._end_sequence():
            self.sequence_id = secrets.randbits(63) or 1

    def _end_sequence(self) -> bool:
        """Send END on one more request carrying the last frame sent, if a sequence is open;
        whether one was."""
        if self._open is None:
            return False
        self._infer(self._open, start=False, end=True)
        self._open = None
        return True

    def note_dropped(self, frames: int) -> None:
        """Frames the source skipped: nothing to do (the server keeps no telemetry here)."""

    def close(self) -> None:
        """End the open sequence, then the connection."""
        try:
            self._end_sequence()
        finally:
            self._client.close()

    def __enter__(self) -> "TritonSegmenter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
