"""``vidseg-run --triton``: the client against an in-test gRPC server.

No Triton server runs on these machines (docs/scale-out.md says why), so ``TritonStub`` speaks
Triton's gRPC protocol (KServe v2 ``GRPCInferenceService`` from tritonclient's own stubs:
``ModelConfig`` and ``ModelInfer``) over a real socket, and serves a repository written by
``vidseg-export --triton`` the way Triton would: it parses each ``config.pbtxt`` with Triton's
model-config protobuf, runs the graphs on ONNX Runtime, chains an ensemble's steps by its
input/output maps, and keeps each sequence's implicit state as the config's ``state`` entries
say (initial zeros on START, the control inputs filled per request, dropped on END).
"""

from __future__ import annotations

import json
import os
from concurrent import futures
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="needs the [triton] extra (tritonclient[grpc])")

import grpc  # noqa: E402
import onnxruntime as ort  # noqa: E402
from google.protobuf import text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc  # noqa: E402

from vidseg.engine.cli import main as run_main  # noqa: E402
from vidseg.engine.errors import BackendError  # noqa: E402
from vidseg.engine.triton_client import TritonSegmenter  # noqa: E402
from vidseg.engine.video import read_frames, read_label_frames  # noqa: E402

NP_TYPES = {"UINT8": np.uint8, "FP32": np.float32, "INT32": np.int32, "UINT64": np.uint64}
CONFIG_TYPES = {model_config_pb2.TYPE_FP32: np.float32, model_config_pb2.TYPE_UINT8: np.uint8}


class TritonStub(service_pb2_grpc.GRPCInferenceServiceServicer):
    """A model repository served over Triton's gRPC protocol (see the module docstring)."""

    def __init__(self, repo: Path) -> None:
        self.configs, self.sessions = {}, {}
        for model_dir in repo.iterdir():
            config = text_format.Parse(
                (model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
            )
            self.configs[config.name] = config
            graph = model_dir / "1" / "model.onnx"
            if graph.is_file():
                self.sessions[config.name] = ort.InferenceSession(str(graph))
        self.states: dict[tuple[str, int], dict[str, np.ndarray]] = {}
        self.requests: list[tuple[int, bool, bool]] = []  # (sequence id, start, end)

    def ModelConfig(self, request, context):  # noqa: N802 (gRPC method name)
        if request.name not in self.configs:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Request for unknown model '{request.name}'")
        return service_pb2.ModelConfigResponse(config=self.configs[request.name])

    def ModelInfer(self, request, context):  # noqa: N802
        if request.model_name not in self.configs:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model '{request.model_name}'")
        params = request.parameters
        seq = (
            params["sequence_id"].int64_param,
            params["sequence_start"].bool_param,
            params["sequence_end"].bool_param,
        )
        self.requests.append(seq)
        tensors = {
            t.name: np.frombuffer(raw, NP_TYPES[t.datatype]).reshape(tuple(t.shape))
            for t, raw in zip(request.inputs, request.raw_input_contents)
        }
        try:
            outputs = self.run(request.model_name, tensors, *seq)
        except KeyError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        names = [o.name for o in request.outputs] or [
            o.name for o in self.configs[request.model_name].output
        ]
        response = service_pb2.ModelInferResponse(model_name=request.model_name)
        dtypes = {v: k for k, v in NP_TYPES.items()}
        for name in names:
            value = np.ascontiguousarray(outputs[name])
            response.outputs.add(name=name, datatype=dtypes[value.dtype.type], shape=value.shape)
            response.raw_output_contents.append(value.tobytes())
        return response

    def run(self, model: str, tensors: dict, seq_id: int, start: bool, end: bool) -> dict:
        config = self.configs[model]
        if config.platform == "ensemble":
            pool = dict(tensors)
            for step in config.ensemble_scheduling.step:
                feed = {inner: pool[outer] for inner, outer in step.input_map.items()}
                out = self.run(step.model_name, feed, seq_id, start, end)
                pool.update({outer: out[inner] for inner, outer in step.output_map.items()})
            return pool
        feed = dict(tensors)
        if config.HasField("sequence_batching"):
            batching = config.sequence_batching
            key = (model, seq_id)
            if start:
                self.states[key] = {
                    s.input_name: np.zeros((1, *s.dims), CONFIG_TYPES[s.data_type])
                    for s in batching.state
                }
            if key not in self.states:
                raise KeyError(f"sequence {seq_id} of {model} did not START")
            feed.update(self.states[key])
            values = {"START": start, "READY": 1, "END": end, "CORRID": seq_id}
            for control in batching.control_input:
                dtype = np.uint64 if control.name == "CORRID" else np.int32
                feed[control.name] = np.array([[values[control.name]]], dtype)
        session = self.sessions[model]
        names = [o.name for o in session.get_outputs()]
        out = dict(zip(names, session.run(None, feed)))
        if config.HasField("sequence_batching"):
            states = config.sequence_batching.state
            self.states[key] = {s.input_name: out[s.output_name] for s in states}
            if end:
                del self.states[key]
        return out


@pytest.fixture()
def triton_stub(tiny_split_bundle: Path, tmp_path: Path) -> Iterator[tuple[str, TritonStub]]:
    from vidseg.export.triton import TritonOptions, export_triton

    repo = tmp_path / "repo"
    export_triton(tiny_split_bundle, repo, TritonOptions(name="seg"))
    stub = TritonStub(repo)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(stub, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", stub
    server.stop(grace=None)


def test_run_matches_the_local_engine(
    triton_stub, tiny_split_bundle: Path, sample_clip: Path, tmp_path: Path, capsys
) -> None:
    url, stub = triton_stub
    remote, local = tmp_path / "remote.mkv", tmp_path / "local.mkv"
    assert (
        run_main(
            [
                str(sample_clip),
                "--triton",
                url,
                "--triton-model",
                "seg",
                "--out",
                str(remote),
                "--mask",
                "--max-frames",
                "8",
                "-q",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "8 frames" in err and f"on triton {url}" in err
    assert (
        run_main(
            [
                str(sample_clip),
                "--model",
                str(tiny_split_bundle),
                "--out",
                str(local),
                "--mask",
                "--max-frames",
                "8",
                "-q",
            ]
        )
        == 0
    )
    ours, theirs = list(read_label_frames(remote)), list(read_label_frames(local))
    assert len(ours) == len(theirs) == 8
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)
    # one sequence per video: START on the first frame, END on one more request after the
    # last (the last frame again), nothing else
    ids = {r[0] for r in stub.requests}
    assert len(ids) == 1 and 0 not in ids
    assert [r[1:] for r in stub.requests] == [(True, False)] + [(False, False)] * 7 + [
        (False, True)
    ]
    assert stub.states == {}  # the server released the sequence


def test_outputs_follow_the_rule(triton_stub, sample_clip: Path, tmp_path: Path, capsys) -> None:
    """--json - is standard output (the summary line goes to stderr), masks into a device are
    written through and the device stays (was: a file named -, the link replaced)."""
    url, _ = triton_stub
    (tmp_path / "out").mkdir()
    null = tmp_path / "out" / "null"
    null.symlink_to(os.devnull)
    flags = "--triton-model seg --mask --max-frames 2 -q --json -".split()
    args = [str(sample_clip), "--triton", url, "--out", str(null), *flags]
    assert run_main(args) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert summary["frames"] == 2 and summary["triton"]["model"] == "seg"
    assert "2 frames" in err and "on triton" in err
    assert os.readlink(null) == os.devnull and list((tmp_path / "out").iterdir()) == [null]


def test_overlay_keeps_the_audio(triton_stub, tmp_path: Path) -> None:
    """The overlay made on Triton carries the input's audio, read by the demuxer that reads the
    video, up to the video's end (was: video only, without a word)."""
    url, _ = triton_stub
    clip, out = tmp_path / "clip.mp4", tmp_path / "o.mp4"
    with av.open(str(clip), "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        sound = container.add_stream("aac", rate=48000)
        sound.layout = "mono"
        for i in range(12):
            image = np.full((48, 64, 3), i * 20, np.uint8)
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode(None))
        for start in range(0, 48000 // 2, 1024):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="flt", layout="mono"
            )
            frame.sample_rate, frame.pts = 48000, start
            container.mux(sound.encode(frame))
        container.mux(sound.encode(None))
    assert (
        run_main(
            [
                str(clip),
                "--triton",
                url,
                "--triton-model",
                "seg",
                "--out",
                str(out),
                "--max-frames",
                "8",
                "-q",
            ]
        )
        == 0
    )
    with av.open(str(out)) as container:
        assert container.streams.audio, "no audio"
        ends = [
            (p.pts + p.duration) * p.time_base
            for p in container.demux(container.streams.audio[0])
            if p.size
        ]
    assert abs(max(ends) - Fraction(8, 25)) <= Fraction(1024, 48000)


def test_interleaved_streams_keep_their_own_state(
    triton_stub, tiny_split_bundle: Path, sample_clip: Path
) -> None:
    from vidseg.engine import Segmenter

    url, stub = triton_stub
    frames = [f.image for f in read_frames(sample_clip, max_frames=6)]
    clips = {"a": frames, "b": frames[::-1]}
    remote = {k: TritonSegmenter(url, "seg", sequence_id=i + 1) for i, k in enumerate(clips)}
    local = {k: Segmenter(tiny_split_bundle, warmup=False) for k in clips}
    for t in range(6):
        for k, clip in clips.items():
            got = remote[k].step(clip[t], last=t == 5).labels
            np.testing.assert_array_equal(got, local[k].step(clip[t]).labels)
    assert stub.states == {}


@pytest.mark.parametrize("resize", ["letterbox", "crop"])
def test_resize_modes_match_the_local_engine(
    triton_stub, tiny_split_bundle: Path, sample_clip: Path, tmp_path: Path, resize: str
) -> None:
    """--resize reaches the client: the frame is fitted and the labels mapped back onto it as
    the local engine does (was: stretched whatever the flag)."""
    url, _ = triton_stub
    common = [str(sample_clip), "--mask", "--max-frames", "4", "-q", "--resize", resize]
    remote, local = tmp_path / "remote.mkv", tmp_path / "local.mkv"
    triton = ["--triton", url, "--triton-model", "seg", "--out", str(remote)]
    assert run_main([*common, *triton]) == 0
    assert run_main([*common, "--model", str(tiny_split_bundle), "--out", str(local)]) == 0
    ours, theirs = list(read_label_frames(remote)), list(read_label_frames(local))
    assert len(ours) == len(theirs) == 4
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)
    stretched = tmp_path / "stretched.mkv"
    assert run_main([*common[:-2], *triton[:-1], str(stretched)]) == 0
    assert any(not np.array_equal(a, b) for a, b in zip(ours, read_label_frames(stretched)))
    with pytest.raises(ValueError, match="resize must be one of"):
        TritonSegmenter(url, "seg", resize="fill")


def test_errors_are_one_line(triton_stub, sample_clip: Path, tmp_path: Path, capsys) -> None:
    url, _ = triton_stub
    out = str(tmp_path / "o.mp4")
    assert (
        run_main([str(sample_clip), "--triton", url, "--triton-model", "nope", "--out", out, "-q"])
        == 4
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model 'nope'" in err
    assert run_main([str(sample_clip), "--triton", url, "--model", "x", "--out", out]) == 2
    assert "takes no --model" in capsys.readouterr().err
    with pytest.raises(BackendError, match="seg_encode.*vidseg_manifest"):
        TritonSegmenter(url, "seg_encode")  # the encoder alone is no vidseg model
    assert not Path(out).exists()


def test_unreachable_server(sample_clip: Path, tmp_path: Path, capsys) -> None:
    assert (
        run_main(
            [
                str(sample_clip),
                "--triton",
                "127.0.0.1:1",
                "--timeout",
                "2",
                "--out",
                str(tmp_path / "o.mp4"),
            ]
        )
        == 4
    )
    assert "triton 127.0.0.1:1" in capsys.readouterr().err
