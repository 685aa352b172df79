"""Tests for vidseg.engine.video: decode, encode, atomic sinks, truncation, exact timing.

Every clip is tiny (64x48, <= 20 frames) and generated here with PyAV directly, so the reader is
never tested only against our own writer.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from vidseg.engine.audio import AudioTrack
from vidseg.engine.errors import TruncatedVideoError, VideoIOError
from vidseg.engine.frame import Frame
from vidseg.engine.masks import MaskSequenceWriter
from vidseg.engine.outputs import Encoding
from vidseg.engine.video import VideoInfo, read_frames, read_label_frames
from vidseg.engine.writer import VideoWriter

LABELS = np.array([*range(12), 255], dtype=np.uint8)


def synthetic_image(index: int, width: int = 64, height: int = 48) -> np.ndarray:
    """(H, W, 3) uint8 RGB: a red 12-px block moving right 3 px/frame over blue-ish noise."""
    rng = np.random.default_rng(index)
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 2] = 96
    image[..., 1] = rng.integers(0, 64, (height, width), dtype=np.uint8)
    x = (index * 3) % (width - 12)
    image[8:-8, x : x + 12] = (230, 20, 20)
    return image


def make_clip(
    path: Path,
    n: int = 20,
    w: int = 64,
    h: int = 48,
    fps: Fraction = Fraction(25),
    *,
    time_base: Fraction | None = None,
    first_pts: int = 0,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Write an H.264 clip with av directly (not VideoWriter); pts = first_pts + i * ticks/frame."""
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "20"}
        tb = time_base or Fraction(fps.denominator, fps.numerator)
        stream.time_base = stream.codec_context.time_base = tb
        step = 1 / (fps * tb)
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(synthetic_image(i, w, h), format="rgb24")
            frame.pts, frame.time_base = first_pts + round(i * step), tb
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return make_clip(tmp_path / "clip.mp4")


def truncate(src: Path, dst: Path, fraction: float = 0.6) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def red_block_x(image: np.ndarray) -> int:
    """Column where the red block starts (first column with mean red > 128)."""
    return int(np.argmax(image[..., 0].mean(axis=0) > 128))


# -------------------------------------------------------------------------------- reading


def test_info_and_frames_of_av_written_clip(clip: Path) -> None:
    info = VideoInfo.from_path(clip)
    assert (info.width, info.height, info.fps, info.frame_count) == (64, 48, Fraction(25), 20)
    assert info.codec == "h264"
    assert info.duration_s == pytest.approx(0.8)
    frames = list(read_frames(clip))
    assert [f.index for f in frames] == list(range(20))
    for i, frame in enumerate(frames):
        assert isinstance(frame, Frame)
        assert frame.image.shape == (48, 64, 3) and frame.image.dtype == np.uint8
        assert frame.image.flags.c_contiguous
        assert frame.time_base == info.time_base
        assert frame.pts is not None and frame.pts * frame.time_base == Fraction(i, 25)
        assert frame.timestamp_s == pytest.approx(i / 25)
        x = (i * 3) % (64 - 12)
        assert red_block_x(frame.image) == pytest.approx(x, abs=1)  # RGB order, right frame
        assert frame.image[24, x + 6, 0] > 180 and frame.image[24, x + 6, 2] < 80


def test_scaling_and_max_frames(clip: Path) -> None:
    frames = list(read_frames(clip, size=(32, 24), max_frames=5, thread_type="slice"))
    assert len(frames) == 5
    assert all(f.image.shape == (24, 32, 3) and f.image.flags.c_contiguous for f in frames)
    assert list(read_frames(clip, max_frames=0)) == []
    assert len(list(read_frames(clip, max_frames=100))) == 20


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"size": (0, 10)}, "size must be positive"),
        ({"max_frames": -1}, "max_frames must be >= 0"),
        ({"thread_type": "fast"}, "thread_type must be one of"),
    ],
)
def test_bad_reader_arguments(clip: Path, bad: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        list(read_frames(clip, **bad))  # type: ignore[arg-type]


def test_ntsc_fps_stays_exact(tmp_path: Path) -> None:
    ntsc = Fraction(30000, 1001)
    src = make_clip(tmp_path / "ntsc.mp4", n=10, fps=ntsc)
    info = VideoInfo.from_path(src)
    assert info.fps == ntsc and isinstance(info.fps, Fraction)
    out = tmp_path / "out.mp4"
    with VideoWriter(out, width=64, height=48, fps=info.fps) as writer:
        for frame in read_frames(src):
            writer.write(frame.image)
    assert VideoInfo.from_path(out).fps == ntsc
    stamps = [f.pts * f.time_base for f in read_frames(out)]
    assert stamps == [i * Fraction(1001, 30000) for i in range(10)]


def test_edit_list_discards_are_not_truncation(tmp_path: Path) -> None:
    # Negative first pts makes the mov muxer write an edit list: 20 samples declared, the demuxer
    # marks the first 3 as discard, the decoder drops them. That is a valid file.
    src = make_clip(tmp_path / "edit.mp4", first_pts=-3)
    assert VideoInfo.from_path(src).frame_count == 20
    frames = list(read_frames(src))
    assert len(frames) == 17 and frames[0].pts == 0


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(VideoIOError, match="nope.mp4: no such file"):
        VideoInfo.from_path(missing)
    with pytest.raises(VideoIOError, match="no such file"):
        list(read_frames(missing))


def test_text_file_named_mp4(tmp_path: Path) -> None:
    fake = tmp_path / "fake.mp4"
    fake.write_text("this is not a video\n" * 10)
    with pytest.raises(VideoIOError, match="fake.mp4: not a readable video") as caught:
        VideoInfo.from_path(fake)
    assert isinstance(caught.value.__cause__, av.error.FFmpegError)
    with pytest.raises(VideoIOError):
        list(read_frames(fake))


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(VideoIOError, match="is a directory"):
        list(read_frames(tmp_path))
    with pytest.raises(VideoIOError, match="is a directory"):
        VideoInfo.from_path(tmp_path)


def test_no_video_stream(tmp_path: Path) -> None:
    wav = tmp_path / "tone.wav"
    with av.open(str(wav), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        samples = np.zeros((1, 800), np.int16)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(VideoIOError, match="no video stream"):
        VideoInfo.from_path(wav)
    with pytest.raises(VideoIOError, match="no video stream"):
        list(read_frames(wav))


def test_truncated_moov_at_end_fails_to_open(tmp_path: Path) -> None:
    cut = truncate(make_clip(tmp_path / "full.mp4"), tmp_path / "cut.mp4")
    with pytest.raises(VideoIOError, match="cut.mp4"):
        list(read_frames(cut))
    with pytest.raises(VideoIOError, match="cut.mp4"):
        VideoInfo.from_path(cut)


@pytest.mark.parametrize("thread_type", ["AUTO", "NONE"])
def test_truncated_faststart_yields_then_raises(tmp_path: Path, thread_type: str) -> None:
    # moov in front: the file opens, declares 20 frames, and its data stops around frame 12.
    # Single-threaded the decoder raises on the partial packet; frame-threaded it drops it and
    # the declared-count check fires. Both must surface as TruncatedVideoError after the frames.
    full = make_clip(tmp_path / "full.mp4", container_options={"movflags": "faststart"})
    cut = truncate(full, tmp_path / "cut.mp4")
    assert VideoInfo.from_path(cut).frame_count == 20
    got: list[Frame] = []
    with pytest.raises(TruncatedVideoError) as caught:
        for frame in read_frames(cut, thread_type=thread_type):
            got.append(frame)
    assert 0 < len(got) < 20
    assert caught.value.frames_decoded == len(got)
    assert "cut.mp4" in str(caught.value)
    assert [f.index for f in got] == list(range(len(got)))
    if thread_type == "NONE":  # this is the decode-raises path (FFmpeg 8 / av 18)
        assert isinstance(caught.value.__cause__, av.error.FFmpegError)
    # max_frames below the fault: no error, the check only applies when reading to the end.
    assert len(list(read_frames(cut, max_frames=2, thread_type=thread_type))) == 2


# -------------------------------------------------------------------------------- writing


def test_write_preserves_count_size_fps_and_source_pts(tmp_path: Path) -> None:
    # Source-like time base 1/12800 with a non-zero first pts (as after a trim): pts must survive.
    tb = Fraction(1, 12800)
    src = make_clip(tmp_path / "src.mp4", time_base=tb, first_pts=1024)
    info = VideoInfo.from_path(src)
    assert info.time_base == tb
    source = list(read_frames(src))
    assert [f.pts for f in source] == [1024 + 512 * i for i in range(20)]
    out = tmp_path / "out.mp4"
    with VideoWriter(
        out, width=info.width, height=info.height, fps=info.fps, time_base=info.time_base
    ) as writer:
        for frame in source:
            writer.write(frame.image, pts=frame.pts)
        assert writer.frames_written == 20
    back_info = VideoInfo.from_path(out)
    assert (back_info.width, back_info.height) == (64, 48)
    assert back_info.fps == Fraction(25) and back_info.frame_count == 20
    back = list(read_frames(out))
    assert len(back) == 20
    assert [f.pts * f.time_base for f in back] == [f.pts * f.time_base for f in source]
    assert [f.timestamp_s for f in back] == [f.timestamp_s for f in source]
    for a, b in zip(source, back):
        assert np.abs(a.image.astype(int) - b.image.astype(int)).mean() < 8


def test_write_default_pts_is_running_index(tmp_path: Path) -> None:
    out = tmp_path / "idx.mp4"
    with VideoWriter(out, width=64, height=48, fps=Fraction(25), time_base=Fraction(1, 12800)) as w:
        for i in range(5):
            w.write(synthetic_image(i))
    assert [f.pts for f in read_frames(out)] == [0, 512, 1024, 1536, 2048]


def test_missing_output_directory(tmp_path: Path) -> None:
    with pytest.raises(VideoIOError, match="output directory does not exist"):
        VideoWriter(tmp_path / "no" / "such" / "out.mp4", width=64, height=48, fps=Fraction(25))
    with pytest.raises(VideoIOError, match="output directory does not exist"):
        MaskSequenceWriter(tmp_path / "no" / "masks")


def test_exception_leaves_no_output_and_no_temp(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(out, width=64, height=48, fps=Fraction(25)) as writer:
            for i in range(3):
                writer.write(synthetic_image(i))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    # An existing output is left untouched by a failed run and replaced by a clean one.
    out.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(out, width=64, height=48, fps=Fraction(25)) as writer:
            writer.write(synthetic_image(0))
            raise KeyboardInterrupt
    assert out.read_bytes() == b"old" and list(tmp_path.iterdir()) == [out]
    with VideoWriter(out, width=64, height=48, fps=Fraction(25)) as writer:
        writer.write(synthetic_image(0))
    assert VideoInfo.from_path(out).frame_count == 1 and list(tmp_path.iterdir()) == [out]


def test_zero_frames_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(VideoIOError, match="no frames"):
        with VideoWriter(tmp_path / "empty.mp4", width=64, height=48, fps=Fraction(25)):
            pass
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Fraction"):
        VideoWriter(tmp_path / "x.mp4", width=64, height=48, fps=29.97)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="outside its with-block"):
        VideoWriter(tmp_path / "x.mp4", width=64, height=48, fps=Fraction(25)).write(
            synthetic_image(0)
        )
    with pytest.raises(ValueError, match="pts must increase"):
        with VideoWriter(tmp_path / "x.mp4", width=64, height=48, fps=Fraction(25)) as writer:
            writer.write(synthetic_image(0), pts=5)
            writer.write(synthetic_image(1), pts=5)
    with pytest.raises(ValueError, match="shape"):
        with VideoWriter(tmp_path / "x.mp4", width=64, height=48, fps=Fraction(25)) as writer:
            writer.write(np.zeros((48, 64), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        with VideoWriter(tmp_path / "x.mp4", width=64, height=48, fps=Fraction(25)) as writer:
            writer.write(np.zeros((48, 64, 3), np.float32))
    with pytest.raises(VideoIOError, match="no container format"):
        with VideoWriter(tmp_path / "x.xyz", width=64, height=48, fps=Fraction(25)):
            pass
    with pytest.raises(VideoIOError, match="codec not available"):
        with VideoWriter(tmp_path / "x.mp4", width=64, height=48, fps=Fraction(25), codec="nope"):
            pass
    assert list(tmp_path.iterdir()) == []


def _os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
@pytest.mark.parametrize("how", ["writer", "encoding"])
def test_encoder_threads(how: str, tmp_path: Path) -> None:
    """``threads=1`` encodes on the writing thread (x264 starts none of its own), 2 starts
    x264's; ``Encoding(threads=...)``, what ``--encoder-threads`` sets, reaches the writer."""
    counts = {}
    for threads in (1, 2):
        out = tmp_path / f"t{threads}.mp4"
        if how == "writer":
            writer = VideoWriter(out, width=64, height=48, fps=Fraction(25), threads=threads)
        else:
            encoding = Encoding(64, 48, Fraction(25), Fraction(1, 25), threads=threads)
            writer = encoding.writer(str(out), "libx264")
        before = _os_threads()
        with writer:
            for i in range(3):
                writer.write(synthetic_image(i))
            counts[threads] = _os_threads() - before
        assert len(list(read_frames(out))) == 3
    assert counts[1] == 0 and counts[2] > 0, counts
    with pytest.raises(ValueError, match="threads must be >= 1"):
        VideoWriter(tmp_path / "x.mp4", width=64, height=48, fps=Fraction(25), threads=0)


def test_odd_size_is_padded_by_one_pixel(tmp_path: Path) -> None:
    out = tmp_path / "odd.mp4"
    images = [synthetic_image(i, 63, 47) for i in range(4)]
    with VideoWriter(out, width=63, height=47, fps=Fraction(25), crf=12) as writer:
        assert writer.output_size == (64, 48)
        for image in images:
            writer.write(image)
    info = VideoInfo.from_path(out)
    assert (info.width, info.height, info.frame_count) == (64, 48, 4)
    for image, frame in zip(images, read_frames(out)):
        # Content sits at the top-left, unscaled: aligned beats shifted by one pixel. (The
        # absolute error is ~6-9 because 4:2:0 subsamples the chroma of the noise.)
        decoded = frame.image[:47, :63].astype(int)
        aligned = np.abs(decoded - image).mean()
        assert aligned < 12
        for shift in ((0, 1), (1, 0), (0, -1), (-1, 0)):
            assert aligned < np.abs(np.roll(decoded, shift, axis=(0, 1)) - image).mean()
        assert red_block_x(frame.image) == pytest.approx(red_block_x(image), abs=1)
        assert np.abs(frame.image[:, 63].astype(int) - frame.image[:, 62].astype(int)).mean() < 8
    # An odd-sized source decodes to C-contiguous arrays (rgb24 rows are padded in FFmpeg).
    odd_src = make_clip(tmp_path / "odd_src.mp4", n=2, w=62, h=46)
    frames = list(read_frames(odd_src, size=(31, 23)))
    assert frames[0].image.shape == (23, 31, 3) and frames[0].image.flags.c_contiguous


@pytest.mark.parametrize(("width", "height"), [(64, 48), (63, 47)])
def test_lossless_label_round_trip_is_exact(tmp_path: Path, width: int, height: int) -> None:
    rng = np.random.default_rng(7)
    masks = [rng.choice(LABELS, size=(height, width)) for _ in range(8)]
    masks[0][:] = 255
    masks[1][:] = 0
    out = tmp_path / "labels.mp4"
    with VideoWriter(out, width=width, height=height, fps=Fraction(25), lossless=True) as writer:
        assert writer.output_size == (width, height)  # 4:0:0 needs no padding
        for mask in masks:
            writer.write(mask)
    back = list(read_label_frames(out))
    assert len(back) == len(masks)
    for mask, got in zip(masks, back):
        assert got.dtype == np.uint8 and got.shape == (height, width)
        np.testing.assert_array_equal(got, mask)


def test_lossless_ffv1_mkv_round_trip(tmp_path: Path) -> None:
    masks = [np.random.default_rng(i).choice(LABELS, size=(48, 64)) for i in range(3)]
    out = tmp_path / "labels.mkv"
    with VideoWriter(out, width=64, height=48, fps=Fraction(25), codec="ffv1", lossless=True) as w:
        for mask in masks:
            w.write(mask)
    for mask, got in zip(masks, read_label_frames(out), strict=True):
        np.testing.assert_array_equal(got, mask)


def test_encoder_os_error_becomes_video_io_error(tmp_path: Path) -> None:
    # A real write failure (EFBIG under RLIMIT_FSIZE, as a stand-in for ENOSPC), isolated in a
    # child process so the limit cannot touch pytest's own files.
    script = textwrap.dedent(
        """
        import resource, sys
        from fractions import Fraction
        from pathlib import Path
        import numpy as np
        from vidseg.engine.errors import VideoIOError
        from vidseg.engine.writer import VideoWriter
        out = Path(sys.argv[1]) / "big.mp4"
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, resource.RLIM_INFINITY))
        rng = np.random.default_rng(0)
        try:
            with VideoWriter(out, width=64, height=48, fps=Fraction(25), crf=0) as writer:
                for i in range(40):
                    writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
        except VideoIOError as error:
            print("VideoIOError", type(error.__cause__).__name__, error)
        sys.stdout.flush()
        print(sorted(p.name for p in out.parent.iterdir()))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("VideoIOError"), result.stdout
    assert lines[-1] == "[]"


# -------------------------------------------------------------------------------- PNG masks


def test_mask_sequence_writer(tmp_path: Path) -> None:
    masks = [np.random.default_rng(i).choice(LABELS, size=(47, 63)) for i in range(5)]
    target = tmp_path / "masks"
    with MaskSequenceWriter(target) as sink:
        for i, mask in enumerate(masks):
            sink.write(mask, pts=i * 512)
        assert sink.frames_written == 5
        assert not target.exists() and (tmp_path / "masks.partial").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks"]
    names = sorted(p.name for p in target.iterdir())
    assert names == [f"{i:06d}.png" for i in range(5)]
    for mask, name in zip(masks, names):
        np.testing.assert_array_equal(cv2.imread(str(target / name), cv2.IMREAD_UNCHANGED), mask)

    with pytest.raises(VideoIOError, match="holds masks"):
        MaskSequenceWriter(target)
    with MaskSequenceWriter(target, overwrite=True) as sink:
        sink.write(masks[0])
    assert sorted(p.name for p in target.iterdir()) == ["000000.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks"]

    empty = tmp_path / "empty"
    empty.mkdir()
    with MaskSequenceWriter(empty) as sink:
        sink.write(masks[1])
    assert sorted(p.name for p in empty.iterdir()) == ["000000.png"]


def test_mask_sequence_writer_exception_and_bad_input(tmp_path: Path) -> None:
    target = tmp_path / "masks"
    with pytest.raises(RuntimeError, match="boom"):
        with MaskSequenceWriter(target) as sink:
            sink.write(np.zeros((4, 4), np.uint8))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        with MaskSequenceWriter(target) as sink:
            sink.write(np.zeros((4, 4, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(VideoIOError, match="not a directory"):
        MaskSequenceWriter(tmp_path / "file")


def _clip_with_audio(path: Path, seconds: float = 1.0) -> None:
    """A 64x48 25 fps clip with an AAC sine track, written with PyAV directly."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = out.add_stream("aac", rate=16000)
        audio.layout = "mono"
        for i in range(int(25 * seconds)):
            img = np.full((48, 64, 3), (i * 9) % 256, np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        t = np.arange(int(16000 * seconds)) / 16000
        samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for start in range(0, samples.size, 1024):
            chunk = samples[start : start + 1024][None]
            frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
            frame.sample_rate, frame.pts = 16000, start
            for packet in audio.encode(frame):
                out.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                out.mux(packet)


def _audio_seconds(path: Path) -> float:
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return 0.0
        stream = c.streams.audio[0]
        ends = [
            float((p.pts + p.duration) * p.time_base) for p in c.demux(stream) if p.pts is not None
        ]
    return max(ends)


def test_audio_is_passed_through_and_cut_to_the_video(tmp_path: Path) -> None:
    """The audio comes from the demuxer that reads the video (one open of the source), copied
    untouched, over the frames written: all of it, or up to the 10th frame's end."""
    src = tmp_path / "with_audio.mp4"
    _clip_with_audio(src)
    info = VideoInfo.from_path(src)
    full, short = tmp_path / "full.mp4", tmp_path / "short.mp4"
    for out, n in ((full, 25), (short, 10)):
        track = AudioTrack()
        with VideoWriter(
            out, width=64, height=48, fps=info.fps, time_base=info.time_base, audio=track
        ) as writer:
            for frame in read_frames(src, max_frames=n, audio=track):
                writer.write(frame.image, frame.pts)
    assert _audio_seconds(full) == pytest.approx(_audio_seconds(src), abs=0.07)
    assert 0.4 - 0.07 < _audio_seconds(short) <= 0.4 + 0.07  # cut at the 10th frame (0.4 s)
    with av.open(str(full)) as c:
        assert c.streams.audio[0].codec_context.name == "aac"  # copied, not re-encoded
    # a source without audio just gives a video-only output
    silent, out = tmp_path / "silent.mp4", tmp_path / "out.mp4"
    with VideoWriter(silent, width=64, height=48, fps=info.fps) as writer:
        writer.write(np.zeros((48, 64, 3), np.uint8))
    track = AudioTrack()
    with VideoWriter(out, width=64, height=48, fps=info.fps, audio=track) as writer:
        for frame in read_frames(silent, audio=track):
            writer.write(frame.image, frame.pts)
    assert _audio_seconds(out) == 0.0 and VideoInfo.from_path(out).frame_count == 1
