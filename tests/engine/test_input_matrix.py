"""``vidseg-run`` over a matrix of generated inputs, with the same invariants checked on every
output.

Each input is made here with PyAV (tiny: 64x48 or so, 12 frames): containers (mp4, mkv, ts,
avi, mov, webm), codecs (H.264, FFV1, MPEG-4, VP9; AAC, Opus, MP3 audio), an odd size, a
display rotation, audio or none, a repeated timestamp, two MPEG-TS files concatenated (the
clock goes back), a start offset, standard input, a folder of images. Every run writes the
overlay (``--out``, in a container chosen per input) and the exact masks (``--mask-out m.mkv``)
with a ``--json`` summary, and every output must hold:

* exit 0, no traceback, at most one warning line about timestamps;
* every frame (the count the input holds), at the size the summary reports (the overlay padded
  to even, the masks exact), upright;
* timestamps that start at 0 and strictly increase; the declared frame rate the input's (AVI:
  what OpenCV reads too);
* the input's audio, where the output container takes its codec, from 0 to the video's end
  within one video frame or one audio frame; otherwise one warning saying so.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from vidseg.engine.cli import main
from vidseg.engine.frame import Frame
from vidseg.engine.sources import rate_limited
from vidseg.engine.video import VideoInfo, read_label_frames

FRAMES = 12
TIMEOUT_S = 300  # per subprocess (standard input cases)
AUDIO_RATE = 48000

# audio codecs each output container takes (FFmpeg's muxers)
ACCEPTS = {
    ".mp4": {"aac", "opus", "mp3"},
    ".mov": {"aac", "opus", "mp3", "pcm_s16le"},
    ".mkv": {"aac", "opus", "mp3", "pcm_s16le"},
    ".avi": {"aac", "mp3", "pcm_s16le"},
    ".webm": {"opus"},
}


@dataclass(frozen=True)
class Input:
    """One generated input and the run made on it."""

    id: str
    name: str  # file name; the suffix picks the container
    codec: str = "libx264"
    pix_fmt: str = "yuv420p"
    size: tuple[int, int] = (64, 48)
    fps: Fraction = Fraction(25)
    audio: str | None = "aac"  # audio encoder, or None
    rotation: int = 0
    start_s: Fraction = Fraction(0)  # the first frame's time
    fault: str | None = None  # "repeat": two frames share a pts; "concat": the file twice;
    # "gap": a frame's slot left empty (not a rate to declare)
    stdin: bool = False
    out: str = "o.mp4"
    options: dict[str, str] = field(default_factory=dict)  # container options
    flags: tuple[str, ...] = ()  # more vidseg-run flags
    count: int = FRAMES  # frames written into the input

    @property
    def decoded(self) -> int:
        """Frames the input holds."""
        return 2 * self.count if self.fault == "concat" else self.count

    @property
    def frames(self) -> int | None:
        """Frames the run writes (None with --live: those not dropped)."""
        flags = dict(zip(self.flags[::2], self.flags[1::2]))
        if "--live" in self.flags:
            return None
        count = min(self.decoded, int(flags.get("--max-frames", self.decoded)))
        if "--max-fps" in flags:
            times = [Frame(np.zeros((1, 1, 3), np.uint8), i, i, 1 / self.fps) for i in range(count)]
            count = len(list(rate_limited(iter(times), float(flags["--max-fps"]))))
        return -(-count // int(flags.get("--vid-stride", 1)))

    @property
    def rate(self) -> Fraction | None:
        """The frame rate the output declares; None where it varies."""
        if self.fault or "--live" in self.flags or "--max-fps" in self.flags:
            return None
        flags = dict(zip(self.flags[::2], self.flags[1::2]))
        return self.fps / int(flags.get("--vid-stride", 1))

    @property
    def upright(self) -> tuple[int, int]:
        width, height = self.size
        return (height, width) if self.rotation % 180 else (width, height)


DECODER_CODECS = {"mp3float": "mp3"}  # decoder name -> codec name
AUDIO_CODEC_NAMES = {"aac": "aac", "libopus": "opus", "libmp3lame": "mp3", "pcm_s16le": "pcm_s16le"}

INPUTS = [
    Input("mp4-h264-aac", "in.mp4"),
    Input("mp4-no-audio", "in.mp4", audio=None),
    Input("mkv-h264-opus", "in.mkv", audio="libopus", out="o.mkv"),
    Input("ts-h264-aac", "in.ts", start_s=Fraction(7, 5)),  # as FFmpeg writes MPEG-TS
    Input("avi-mpeg4-pcm", "in.avi", codec="mpeg4", audio="pcm_s16le", out="o.avi"),
    # MP3's encoder delay shifts this AVI's video by a slot: it declares 13 frames, holds 12
    Input("avi-mpeg4-mp3-gap", "in.avi", codec="mpeg4", audio="libmp3lame", fault="gap"),
    Input("mov-h264-aac", "in.mov", out="o.mov"),
    Input("webm-vp9-opus", "in.webm", codec="libvpx-vp9", audio="libopus", out="o.webm"),
    Input("aac-into-webm", "in.mp4", out="o.webm"),  # WebM takes no AAC: video only, warned
    Input("mp4-into-avi", "in.mp4", out="o.avi"),
    Input("odd-size-ffv1", "in.mkv", codec="ffv1", size=(65, 49)),
    Input("rotated-90", "in.mp4", pix_fmt="yuv444p", rotation=90),
    Input("ntsc-29.97", "in.mp4", fps=Fraction(30000, 1001)),
    Input("start-offset-0.5s", "in.mp4", start_s=Fraction(1, 2)),
    Input("repeated-pts", "in.mkv", codec="mpeg4", fault="repeat"),
    Input("repeated-pts-mask-mkv", "in.mkv", codec="mpeg4", fault="repeat", out="o.mkv"),
    Input("concatenated-ts", "in.ts", fault="concat"),
    Input("stdin-mkv", "in.mkv", stdin=True),
    Input("stdin-ts", "in.ts", stdin=True),
    Input("stdin-faststart-mp4", "in.mp4", stdin=True, options={"movflags": "+faststart"}),
    Input("image-folder", "frames", codec="png", audio=None, fps=Fraction(30)),
    # frames skipped or dropped: the audio stays whole and in place, up to the video's end
    Input("vid-stride-3", "in.mp4", flags=("--vid-stride", "3")),
    Input("vid-stride-3-avi", "in.mp4", out="o.avi", flags=("--vid-stride", "3")),
    Input("max-fps-10", "in.mkv", flags=("--max-fps", "10")),
    Input("live-file", "in.mp4", flags=("--live",)),
    Input("max-frames-5", "in.mkv", out="o.mkv", flags=("--max-frames", "5")),
    Input("stdin-ts-max-frames-5", "in.ts", stdin=True, flags=("--max-frames", "5")),
]


def image(index: int, width: int, height: int) -> np.ndarray:
    """A moving red block on noise: every frame differs."""
    rng = np.random.default_rng(index)
    frame = rng.integers(0, 80, (height, width, 3), dtype=np.uint8)
    x = (index * 3) % max(1, width - 12)
    frame[height // 4 : -height // 4, x : x + 12] = (230, 20, 20)
    return frame


def write_input(spec: Input, path: Path) -> Path:
    """Encode ``spec`` at ``path`` with PyAV (a folder of PNGs for the image folder)."""
    width, height = spec.size
    if spec.codec == "png":
        path.mkdir()
        for i in range(spec.count):
            cv2.imwrite(str(path / f"{i:04d}.png"), image(i, width, height)[:, :, ::-1])
        return path
    time_base = 1 / spec.fps
    first = round(spec.start_s / time_base)
    with av.open(str(path), "w", options=spec.options) as container:
        video = container.add_stream(spec.codec, rate=spec.fps)
        video.width, video.height, video.pix_fmt = width, height, spec.pix_fmt
        video.codec_context.time_base = time_base
        if spec.codec == "libx264":
            video.options = {"preset": "ultrafast"}  # no B-frames
        if spec.rotation:
            video.set_display_rotation(spec.rotation)
        audio = None
        if spec.audio:
            audio = container.add_stream(spec.audio, rate=AUDIO_RATE)
            audio.layout = "mono"
        for i in range(spec.count):
            frame = av.VideoFrame.from_ndarray(image(i, width, height), format="rgb24")
            frame.pts, frame.time_base = first + i, time_base
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if audio is not None:
            seconds = spec.count / spec.fps
            samples = int(AUDIO_RATE * seconds)
            t = np.arange(samples) / AUDIO_RATE
            wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            size = audio.codec_context.frame_size or 1024
            offset = round(spec.start_s * AUDIO_RATE)
            for start in range(0, samples, size):
                chunk = wave[start : start + size][None]
                if spec.audio == "pcm_s16le":
                    pcm = (chunk * 32767).astype(np.int16)
                    frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
                else:
                    frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
                frame.sample_rate, frame.pts = AUDIO_RATE, offset + start
                frame.time_base = Fraction(1, AUDIO_RATE)
                container.mux(audio.encode(frame))
            container.mux(audio.encode(None))
    if spec.fault == "repeat":  # frame 6 gets frame 5's pts (Matroska keeps it as written)
        clean = path.with_name("clean" + path.suffix)
        path.rename(clean)
        with av.open(str(clean)) as src, av.open(str(path), "w") as dst:
            streams = {s.index: dst.add_stream_from_template(s) for s in src.streams}
            last = None
            for packet in src.demux():
                if packet.size == 0:
                    continue
                if packet.stream.type == "video":
                    packet_index = last[0] + 1 if last else 0
                    if packet_index == 6:
                        packet.pts = packet.dts = last[1]
                    last = (packet_index, packet.pts)
                packet.stream = streams[packet.stream.index]
                dst.mux(packet)
    if spec.fault == "concat":  # the same TS twice: its clock restarts half-way
        path.write_bytes(path.read_bytes() * 2)
    return path


@dataclass
class Track:
    """What a written file holds, read back packet by packet."""

    times: list[Fraction]  # video frame times (pts * time base), in presentation order
    video_end: Fraction
    audio: str | None  # codec name
    audio_start: Fraction | None
    audio_end: Fraction | None
    audio_frame: Fraction  # the longest audio packet


def read_back(path: Path, fps: Fraction) -> Track:
    """The file's frame times and audio span; the video ends where its last frame does (its
    stored duration, else one frame at ``fps``)."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        if path.suffix == ".avi":  # AVI stores no pts: its frames are timed by their order
            times = [p.dts * p.time_base for p in container.demux(video) if p.size]
        else:
            times = sorted(frame.pts * frame.time_base for frame in container.decode(video))
    with av.open(str(path)) as container:
        last = max(
            (p for p in container.demux(video=0) if p.size and p.pts is not None),
            key=lambda p: p.pts,
        )
        duration = last.duration * last.time_base if last.duration else 1 / fps
    audio = audio_start = audio_end = None
    audio_frame = Fraction(0)
    with av.open(str(path)) as container:
        if container.streams.audio:
            stream = container.streams.audio[0]
            audio = DECODER_CODECS.get(stream.codec_context.name, stream.codec_context.name)
            for packet in container.demux(stream):
                if packet.size == 0 or packet.pts is None:
                    continue
                start = packet.pts * packet.time_base
                length = (packet.duration or 0) * packet.time_base
                audio_frame = max(audio_frame, length)
                audio_start = start if audio_start is None else min(audio_start, start)
                audio_end = start + length if audio_end is None else max(audio_end, start + length)
    return Track(times, times[-1] + duration, audio, audio_start, audio_end, audio_frame)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every input, made once per module, each in its own folder."""
    root = tmp_path_factory.mktemp("inputs")
    made = {}
    for spec in INPUTS:
        (root / spec.id).mkdir()
        made[spec.id] = write_input(spec, root / spec.id / spec.name)
    return made


def run(
    spec: Input,
    source: Path,
    args: list[str],
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> tuple[int, str]:
    """Run vidseg-run: in this process (fast), or as a subprocess fed on standard input."""
    if spec.stdin:
        with open(source, "rb") as stdin:
            proc = subprocess.run(
                [sys.executable, "-m", "vidseg.engine", "-", *args],
                stdin=stdin,
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S,
            )
        return proc.returncode, proc.stderr
    with caplog.at_level(logging.WARNING):
        code = main([str(source), *args])
    err = capfd.readouterr().err
    logged = "\n".join(f"{r.levelname} {r.name}: {r.getMessage()}" for r in caplog.records)
    return code, err + "\n" + logged


@pytest.mark.parametrize("spec", INPUTS, ids=[spec.id for spec in INPUTS])
def test_input_matrix(
    spec: Input,
    inputs: dict[str, Path],
    tiny_bundle: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = inputs[spec.id]
    out, masks, summary = tmp_path / spec.out, tmp_path / "m.mkv", tmp_path / "run.json"
    args = ["--out", str(out), "--mask-out", str(masks), "--json", str(summary)]
    code, err = run(
        spec, source, [*args, *spec.flags, "--model", str(tiny_bundle), "-q"], capfd, caplog
    )
    assert code == 0 and "Traceback" not in err, err
    result = json.loads(summary.read_text())
    frames = spec.frames
    if frames is None:  # --live: every frame written or dropped
        frames = result["frames"]
        assert 0 < frames and frames + result["dropped"] == spec.decoded, result
    rate = spec.rate or spec.fps

    # every frame, at the size the summary reports; the masks exact and upright
    width, height = spec.upright
    padded = (width + width % 2, height + height % 2)
    info = VideoInfo.from_path(out)
    assert info.frame_count in (frames, None)
    assert (info.width, info.height, info.rotation) == (*padded, 0)
    assert result["frames"] == frames and result["output_size"] == list(padded), result
    labels = list(read_label_frames(masks))
    assert len(labels) == frames and labels[0].shape == (height, width)

    # timestamps: from 0, strictly increasing, at the rate of the frames written
    for path in (out, masks):
        track = read_back(path, rate)
        assert len(track.times) == frames, path
        assert abs(track.times[0]) < Fraction(1, 1000), (path, track.times[:3])
        assert all(b > a for a, b in zip(track.times, track.times[1:])), (path, track.times)
    if spec.rate is not None:
        assert VideoInfo.from_path(out).fps == spec.rate
        assert VideoInfo.from_path(masks).fps == spec.rate
    if spec.out.endswith(".avi"):  # AVI counts frames: OpenCV reads its header
        capture = cv2.VideoCapture(str(out))
        assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(float(rate))
        assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == frames
        capture.release()

    # the audio, over the video's span
    track = read_back(out, rate)
    suffix = Path(spec.out).suffix
    audio = AUDIO_CODEC_NAMES.get(spec.audio or "")
    if audio is not None and audio in ACCEPTS[suffix]:
        assert track.audio == audio, err
        assert_audio_spans_the_video(track, rate)
    else:
        assert track.audio is None
    if audio is not None and audio not in ACCEPTS[suffix]:
        assert err.count("cannot go into") == 1, err

    # one warning about the timestamps, where they needed a repair
    repairs = [line for line in err.splitlines() if "timestamp" in line]
    assert len(repairs) == (1 if spec.fault in ("repeat", "concat") else 0), err


def assert_audio_spans_the_video(track: Track, rate: Fraction) -> None:
    """The audio starts at 0 and ends with the video, each within an audio packet (the unit
    it is cut in) or a video frame."""
    slack = max(1 / rate, track.audio_frame) + Fraction(1, 1000)
    assert -track.audio_frame <= track.audio_start <= track.audio_frame, track
    assert abs(track.audio_end - track.video_end) <= slack, track


def test_ctrl_c_keeps_the_audio_to_the_last_frame(tiny_bundle: Path, tmp_path: Path) -> None:
    """Ctrl-C part-way through a file played with --live: the frames done are written with the
    audio up to the last one's end (was: --live wrote no audio at all)."""
    spec = Input("long", "in.mp4", count=100)  # 4 s: --live plays it at its own rate
    source = write_input(spec, tmp_path / spec.name)
    out = tmp_path / "o.mp4"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vidseg.engine",
            str(source),
            "--out",
            str(out),
            "--live",
            "--stats-every",
            "5",
            "--model",
            str(tiny_bundle),
            "-q",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as from a terminal
    )
    lines: list[str] = []
    status = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("vidseg-run: ") and "interrupted" not in line:
                status.set()  # a status line: frames are being written

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert status.wait(TIMEOUT_S), "".join(lines)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    err = "".join(lines)
    assert proc.returncode == 130 and "Traceback" not in err, err
    frames = int(re.search(r"interrupted after (\d+) frames", err).group(1))
    assert 0 < frames < spec.count, err
    track = read_back(out, spec.fps)
    assert len(track.times) == frames and track.audio == "aac", track
    assert_audio_spans_the_video(track, spec.fps)
