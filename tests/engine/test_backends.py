"""The ORT backend's device path (IO binding, state kept as runtime tensors) against the plain
numpy path; on machines without a GPU it runs on the CPU, the CUDA run itself is skipped."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from vidseg.engine import Segmenter
from vidseg.engine import loaded as loaded_module
from vidseg.engine.backends import BackendOptions, TensorInfo, create_backend
from vidseg.engine.backends.fixed import PingPongBuffers
from vidseg.engine.errors import BackendError
from vidseg.engine.multistream import MultiStreamSegmenter
from vidseg.engine.schedule import Schedule
from vidseg.engine.video import read_frames

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.fixture(scope="module")
def clip(sample_clip: Path) -> list[np.ndarray]:
    return [f.image for f in read_frames(sample_clip, max_frames=16)]


@pytest.mark.parametrize("family", ["recurrent", "keyframe", "split", "tiles"])
def test_io_binding_path_matches_numpy_path(family: str, request, clip, monkeypatch) -> None:
    """State (recurrent) and cache (keyframe) stay OrtValues from run to run, fed back without a
    copy; labels match the numpy path exactly, through a reset. A split bundle's features also
    stay OrtValues between its encode and step graphs. A tile bundle's uint8 view and one-hot
    go in as bound inputs like any aux input."""
    bundle = request.getfixturevalue(BUNDLES[family])
    schedule = Schedule("fixed", 3) if family == "keyframe" else None
    plain = Segmenter(bundle, schedule=schedule)
    monkeypatch.setattr(
        loaded_module, "BackendOptions", functools.partial(BackendOptions, io_binding=True)
    )
    bound = Segmenter(bundle, schedule=schedule)
    held = bound.state.tensors or bound.cache.tensors
    assert held and all(isinstance(v, ort.OrtValue) for v in held.values())
    for i, frame in enumerate(clip):
        if i == 9:
            plain.reset()
            bound.reset()
        a, b = plain.step(frame), bound.step(frame)
        np.testing.assert_array_equal(a.labels, b.labels, err_msg=f"frame {i}")
        if family == "split":  # the pipeline's way: features made ahead, kept as OrtValues
            prepared = bound.prepare(frame)
            assert all(isinstance(v, ort.OrtValue) for v in prepared.features.values())
        assert a.key_frame == b.key_frame
    held = bound.state.tensors or bound.cache.tensors
    assert all(isinstance(v, ort.OrtValue) for v in held.values())
    mine = bound.state if bound.state.tensors else bound.cache
    theirs = plain.state if plain.state.tensors else plain.cache
    for name, value in mine.tensors.items():
        np.testing.assert_allclose(mine.backend.to_host(value), theirs.tensors[name], atol=1e-5)


def test_bad_devices_are_clear_errors(tiny_bundle: Path) -> None:
    with pytest.raises(BackendError, match="cpu, cuda or cuda:N"):
        create_backend("ort", str(tiny_bundle / "step.onnx"), BackendOptions(device="tpu"))
    if not HAS_CUDA:
        with pytest.raises(BackendError, match="needs onnxruntime-gpu"):
            Segmenter(tiny_bundle, device="cuda")
        with pytest.raises(BackendError, match="needs onnxruntime-gpu"):
            MultiStreamSegmenter(tiny_bundle, streams=2, device="cuda")


@pytest.mark.skipif(
    not HAS_CUDA,
    reason="needs onnxruntime-gpu and a CUDA GPU (CUDAExecutionProvider not available)",
)
def test_cuda_matches_cpu(tiny_bundle: Path, clip) -> None:
    cpu, gpu = Segmenter(tiny_bundle), Segmenter(tiny_bundle, device="cuda")
    for i, frame in enumerate(clip):
        a, b = cpu.step(frame), gpu.step(frame)
        assert (a.labels == b.labels).mean() >= 0.999, f"frame {i}"


BUNDLES = {
    "recurrent": "tiny_bundle",
    "split": "tiny_split_bundle",
    "keyframe": "tiny_keyframe_bundle",
    "tiles": "tile_bundle",
}


def _bind_everything(monkeypatch) -> None:
    """Segmenters made from here on run the IO-binding path on the CPU."""
    monkeypatch.setattr(
        loaded_module, "BackendOptions", functools.partial(BackendOptions, io_binding=True)
    )


def _held(seg: Segmenter) -> dict:
    """State and cache tensors of a segmenter, on the host."""
    both = {**seg.state.tensors, **seg.cache.tensors}
    return {name: seg.state.backend.to_host(v) for name, v in both.items()}


@pytest.mark.parametrize("family", list(BUNDLES))
@pytest.mark.parametrize("bound", [False, True], ids=["numpy", "binding"])
def test_warmup_leaves_state_zero_and_first_frame_unchanged(
    family: str, bound: bool, request, clip, monkeypatch
) -> None:
    """Warm-up runs every graph at load on throw-away state: the stream's state and cache are
    still zeros afterwards, and the first frames' labels are those of a segmenter without it."""
    bundle = request.getfixturevalue(BUNDLES[family])
    if bound:
        _bind_everything(monkeypatch)
    cold = Segmenter(bundle, warmup=False)
    warm = Segmenter(bundle)
    assert cold.model.transfers().runs == 0 and cold.warmup_ms < 1
    roles = len(warm.model.backends)  # every graph ran, the encoder too
    assert warm.model.transfers().runs == roles * warm.model.warmup_runs
    held = _held(warm)
    assert held and all(not v.any() for v in held.values())
    for i, frame in enumerate(clip[:4]):
        np.testing.assert_array_equal(
            cold.step(frame).labels, warm.step(frame).labels, err_msg=f"frame {i}"
        )


@pytest.mark.parametrize("family", ["recurrent", "split"])
@pytest.mark.parametrize("path", ["numpy", "binding", "fixed"])
def test_transfers_count_frame_up_and_outputs_down_never_state(
    family: str, path: str, request, clip, monkeypatch
) -> None:
    """Per frame: the frame goes up, labels (+ scores, logits) come down; the recurrent state
    and a split bundle's features are never counted, through a reset too. On the numpy CPU
    path the count is what the binding path would copy."""
    bundle = request.getfixturevalue(BUNDLES[family])
    if path == "binding":
        _bind_everything(monkeypatch)
    seg = Segmenter(bundle, warmup=False, cuda_graph=path == "fixed")
    h, w = seg.input_size
    before = seg.model.transfers()
    for i, frame in enumerate(clip[:6]):
        if i == 3:
            seg.reset()
        result = seg.step(frame[:h, :w])  # at the model size: no resize
        after = seg.model.transfers()
        out = result.outputs
        down = sum(a.nbytes for a in (out.labels, out.scores, out.logits) if a is not None)
        assert after.up_bytes - before.up_bytes == h * w * 3 + (
            # the fixed path copies the zero state in at the start and after a reset
            _state_bytes(seg) if path == "fixed" and i in (0, 3) else 0
        ), f"frame {i}"
        assert after.down_bytes - before.down_bytes == down, f"frame {i}"
        # the runs' time split (trtexec's up / compute / down): every run computes; only the
        # binding and fixed paths copy, so only they time copies
        assert after.compute_ns > before.compute_ns, f"frame {i}"
        copies = (after.up_ns - before.up_ns, after.down_ns - before.down_ns)
        assert (min(copies) > 0) if path != "numpy" else copies == (0, 0), f"frame {i}"
        before = after


def _state_bytes(seg: Segmenter) -> int:
    return sum(v.nbytes for v in _held(seg).values())


@pytest.mark.parametrize("family", list(BUNDLES))
def test_fixed_buffer_path_matches_numpy_path(family: str, request, clip) -> None:
    """``cuda_graph=True`` on the CPU: fixed buffers, state ping-ponged between two sets, the
    frame (a tile bundle: its view and one-hot) copied in with update_inplace; labels equal the
    numpy path over 20 frames with a reset (what the CUDA-graph path runs on a GPU, without the
    capture)."""
    bundle = request.getfixturevalue(BUNDLES[family])
    schedule = Schedule("fixed", 3) if family == "keyframe" else None
    plain = Segmenter(bundle, schedule=schedule)
    fixed = Segmenter(bundle, schedule=schedule, cuda_graph=True)
    assert all(b.fixed for b in fixed.model.backends.values())
    assert fixed.model.encode_ahead is False  # the encoder's buffers are rewritten each frame
    frames = (clip * 2)[:20]
    for i, frame in enumerate(frames):
        if i == 11:
            plain.reset()
            fixed.reset()
        np.testing.assert_array_equal(
            plain.step(frame).labels, fixed.step(frame).labels, err_msg=f"frame {i}"
        )
        if family == "split":  # prepare leaves the encoder to step, which ran it in place
            assert fixed.prepare(frame).features is None


class FakeTensor:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


def test_ping_pong_bookkeeping_frames_0_to_3_and_reset() -> None:
    """Which buffers are bound for frames 0..3 and after a reset: the state alternates between
    two sets (graph id = parity), the frame buffer and the labels buffer never change, no run
    binds one buffer as its input and its output, and only a value that is not the expected
    buffer (the frame, the zero state after a reset) is copied in."""
    made: list[FakeTensor] = []

    def alloc(shape, dtype):
        made.append(FakeTensor(f"buf{len(made)}{list(shape)}{dtype}"))
        return made[-1]

    graph_in = (
        TensorInfo("frame", (None, 4, 6, 3), "uint8"),
        TensorInfo("h_in", (None, 2, 2, 2), "float32"),
    )
    graph_out = (
        TensorInfo("labels", (None, 4, 6), "uint8"),
        TensorInfo("h_out", (None, 2, 2, 2), "float32"),
    )
    buffers = PingPongBuffers(
        graph_in, graph_out, [("h_in", "h_out"), ("x_in", "x_out")], alloc, batch=1
    )
    assert buffers.state == {"h_in": "h_out"}  # a pair not in this graph is ignored
    a, b = buffers.sets["h_in"]
    zeros = FakeTensor("zeros")
    frame = np.zeros((1, 4, 6, 3), np.uint8)
    state = zeros
    plans = []
    for i in range(6):
        if i == 4:  # a reset: StreamState hands in fresh zeros
            state = zeros
        plan = buffers.plan({"frame": frame, "h_in": state})
        buffers.advance()
        plans.append(plan)
        state = plan.outputs["h_out"]  # what StreamState.advance keeps
        assert not set(map(id, plan.inputs.values())) & set(map(id, plan.outputs.values()))
    frame_buffer, labels_buffer = plans[0].inputs["frame"], plans[0].outputs["labels"]
    assert [p.graph_id for p in plans] == [0, 1, 0, 1, 0, 1]
    assert [(p.inputs["h_in"], p.outputs["h_out"]) for p in plans] == [(a, b), (b, a)] * 3
    assert all(
        p.inputs["frame"] is frame_buffer and p.outputs["labels"] is labels_buffer for p in plans
    )
    # uploads: frame every run; the state only where the caller's value was not the buffer
    assert [[n for n, _ in p.uploads] for p in plans] == [
        ["frame", "h_in"],
        ["frame"],
        ["frame"],
        ["frame"],
        ["frame", "h_in"],
        ["frame"],
    ]
    assert plans[4].uploads[1][1] is zeros
    assert len(made) == 4  # two state sets, labels, frame: nothing allocated per frame
    with pytest.raises(BackendError, match="fixed buffer"):
        buffers.plan({"frame": np.zeros((2, 4, 6, 3), np.uint8), "h_in": state})


def test_ping_pong_adopts_a_device_tensor_handed_in_again() -> None:
    """A split bundle's features: the encoder's own fixed output, the same object every frame,
    becomes the step graph's input buffer without a copy; a different one is copied in."""
    graph_in = (TensorInfo("f", (None, 8), "float32"),)
    buffers = PingPongBuffers(
        graph_in,
        (TensorInfo("y", (None, 8), "float32"),),
        [],
        lambda shape, dtype: FakeTensor("ours"),
    )
    features, other = FakeTensor("encoder-out"), FakeTensor("other")
    assert buffers.plan({"f": features}).uploads == ()
    plan = buffers.plan({"f": features})
    assert plan.inputs["f"] is features and plan.uploads == () and plan.graph_id == 0
    assert buffers.plan({"f": other}).uploads == (("f", other),)


def test_fixed_path_binds_two_graph_ids_once_each(tiny_bundle: Path, clip, monkeypatch) -> None:
    """The ORT side of the ping-pong with a spy session: the run options carry gpu_graph_id
    0, 1, 0, 1 (as with capture on a GPU), one IOBinding per graph id made once, the frame
    buffer updated in place each run."""
    seg = Segmenter(tiny_bundle, warmup=False, cuda_graph=True)
    backend = seg.model.backends["step"]
    backend.capture = True  # as on a GPU: graph ids in the run options (the CPU ignores them)
    session, calls = backend.session, []

    class Spy:
        def __getattr__(self, name):
            return getattr(session, name)

        def io_binding(self):
            calls.append("io_binding")
            return session.io_binding()

        def run_with_iobinding(self, binding, run_options=None):
            calls.append(run_options.get_run_config_entry("gpu_graph_id"))
            return session.run_with_iobinding(binding, run_options)

    backend.session = Spy()
    h, w = seg.input_size
    for frame in clip[:4]:
        seg.step(frame[:h, :w])
    assert calls == ["io_binding", "0", "io_binding", "1", "0", "1"]
    state = seg.state.tensors
    assert all(v is backend._buffers.sets[k][0] for k, v in state.items())  # after 4 runs


@pytest.mark.skipif(
    not HAS_CUDA,
    reason="needs onnxruntime-gpu and a CUDA GPU (CUDAExecutionProvider not available)",
)
@pytest.mark.parametrize("bundle_name", ["tiny_bundle", "tiny_split_bundle"])
def test_cuda_graph_matches_plain_cuda(bundle_name: str, request, clip) -> None:
    """CUDA graphs (two captured graph ids) against the plain IO-binding path on the GPU over
    24 frames with a reset at frame 12."""
    bundle = request.getfixturevalue(bundle_name)
    plain = Segmenter(bundle, device="cuda", cuda_graph=False)
    graph = Segmenter(bundle, device="cuda")
    assert all(b.capture for b in graph.model.backends.values()), "fell back (see the log)"
    for i, frame in enumerate((clip * 2)[:24]):
        if i == 12:
            plain.reset()
            graph.reset()
        a, b = plain.step(frame), graph.step(frame)
        assert (a.labels == b.labels).mean() >= 0.999, f"frame {i}"


@pytest.mark.skipif(
    not HAS_CUDA,
    reason="needs onnxruntime-gpu and a CUDA GPU (CUDAExecutionProvider not available)",
)
def test_cuda_multistream_matches_segmenters(tiny_bundle: Path, clip) -> None:
    multi = MultiStreamSegmenter(tiny_bundle, streams=3, device="cuda")
    singles = [Segmenter(tiny_bundle, device="cuda") for _ in range(3)]
    for t in range(8):
        frames = [clip[(t + 3 * i) % len(clip)] for i in range(3)]
        if t == 5:
            frames[1] = None  # an idle stream: row operations on device tensors
        for i, (got, frame) in enumerate(zip(multi.step(frames), frames)):
            if frame is not None:
                assert (got.labels == singles[i].step(frame).labels).mean() >= 0.999, (t, i)
