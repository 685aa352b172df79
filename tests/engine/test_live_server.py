"""``vidseg-run`` against real streaming servers, stopped and restarted mid-run: Debian's
``ffmpeg`` serving a clip with audio as MPEG-TS over HTTP to one client (``-listen 1``), and
GStreamer's RTSP server (``GstRtspServer`` through its Python bindings) sending a live H.264
pattern over RTP.

* The server goes away: exit 8 with every frame received written to a playable file, its audio
  read from the same connection (the HTTP server takes one client: a second connection for the
  audio was refused, and the whole output lost).
* ``--reconnect N``: the end of the live stream is a loss to reconnect from; the server comes
  back: one reconnect counted, the state reset, and the run goes on.
* ``--reconnect N`` and the server never comes back: exit 8 after the tries, the frames kept.

The servers send in real time, so each test lasts seconds. Nothing here is timed: the tests
wait (generously) for the run to report frames before they stop the server. Skipped where
``ffmpeg`` is not on PATH, and the RTSP cases where GStreamer's RTSP server is not installed
(CI installs both).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from vidseg.engine.video import read_frames

FFMPEG = shutil.which("ffmpeg")
TIMEOUT_S = 120  # any single wait; a hung run fails instead of blocking the suite
FPS = 25


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s of 64x48 video at 25 fps with an AAC tone, for the server to loop."""
    if FFMPEG is None:
        pytest.skip("ffmpeg is not on PATH: these tests run a real ffmpeg streaming server")
    path = tmp_path_factory.mktemp("server") / "clip.mp4"
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("aac", rate=48000)
        audio.layout = "mono"
        for i in range(2 * FPS):
            image = np.full((48, 64, 3), (i * 5) % 256, np.uint8)
            image[16:32, i % 52 : i % 52 + 12] = (230, 20, 20)
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode(None))
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(2 * 48000) / 48000)).astype(np.float32)
        for start in range(0, tone.size, 1024):
            frame = av.AudioFrame.from_ndarray(
                tone[None, start : start + 1024], format="flt", layout="mono"
            )
            frame.sample_rate, frame.pts = 48000, start
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port: int) -> bool:
    """Whether something listens on ``port`` (127.0.0.1 or any address), read from
    /proc/net/tcp (connecting to find out would take the server's one client)."""
    try:
        table = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return True  # cannot tell: the caller has waited a moment anyway
    wanted = {f"0100007F:{port:04X}", f"00000000:{port:04X}"}
    return any(line.split()[1] in wanted and line.split()[3] == "0A" for line in table)


class Server:
    """A streaming server in a child process, started and stopped at will (same port)."""

    audio = True  # whether its stream carries audio
    url = ""

    def __init__(self, clip: Path) -> None:
        self.clip = clip
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + TIMEOUT_S
        time.sleep(0.2)
        while not listening(self.port):
            assert self.proc.poll() is None, "the server exited at start"
            assert time.monotonic() < deadline, "the server never listened"
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM, as a server being shut down: it closes its client's connection."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class FfmpegServer(Server):
    """``ffmpeg -re -stream_loop -1 -i CLIP ... -f mpegts -listen 1 URL``: one client, looping
    the clip (video and AAC audio) in real time over HTTP; it ends the stream when stopped."""

    def __init__(self, clip: Path) -> None:
        super().__init__(clip)
        self.url = f"http://127.0.0.1:{self.port}/live.ts"

    def command(self) -> list[str]:
        return [
            FFMPEG,
            "-nostdin",
            "-loglevel",
            "error",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
            str(self.clip),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "10",
            "-c:a",
            "aac",
            "-f",
            "mpegts",
            "-listen",
            "1",
            self.url,
        ]


GST_SERVER = """
import sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer
Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(sys.argv[1])
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch("( videotestsrc is-live=true ! video/x-raw,width=64,height=48,framerate=25/1 "
                   "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 "
                   "! rtph264pay name=pay0 pt=96 )")
factory.set_shared(True)
server.get_mount_points().add_factory("/live", factory)
server.attach(None)
GLib.MainLoop().run()
"""
SYSTEM_PYTHON = "/usr/bin/python3"  # GStreamer's bindings come with the system's Python


def gst_rtsp_problem() -> str | None:
    """Why GStreamer's RTSP server cannot run here (None when it can)."""
    if not Path(SYSTEM_PYTHON).is_file():
        return f"no {SYSTEM_PYTHON}"
    check = (
        "import gi; gi.require_version('Gst', '1.0'); "
        "gi.require_version('GstRtspServer', '1.0'); "
        "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
        "assert all(Gst.ElementFactory.find(e) for e in ('x264enc', 'rtph264pay'))"
    )
    proc = subprocess.run([SYSTEM_PYTHON, "-c", check], capture_output=True, timeout=TIMEOUT_S)
    if proc.returncode:
        return (
            "GStreamer's RTSP server is not installed (python3-gi, "
            "gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-good/-ugly)"
        )
    return None


class GstRtspServer(Server):
    """GStreamer's RTSP server (``GstRtspServer`` through its Python bindings) sending a live
    test pattern as H.264 over RTP, no audio; stopping it closes the RTSP connection."""

    audio = False

    def __init__(self, clip: Path) -> None:
        super().__init__(clip)
        self.url = f"rtsp://127.0.0.1:{self.port}/live"
        self.script = clip.with_name("rtsp_server.py")
        self.script.write_text(GST_SERVER)

    def command(self) -> list[str]:
        return [SYSTEM_PYTHON, str(self.script), str(self.port)]


@pytest.fixture(params=["ffmpeg-http", "gstreamer-rtsp"])
def server(request: pytest.FixtureRequest, clip: Path):
    if request.param == "gstreamer-rtsp" and (problem := gst_rtsp_problem()):
        pytest.skip(problem)
    made = FfmpegServer(clip) if request.param == "ffmpeg-http" else GstRtspServer(clip)
    yield made
    made.stop()


class Run:
    """``vidseg-run`` started in the background, its stderr read line by line."""

    def __init__(self, *args: object) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vidseg.engine", *map(str, args), "--stats-every", "5", "-q"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._frames = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if line.startswith("vidseg-run: frames "):  # a status line: frames written
                self._frames.set()

    def wait_for_frames(self) -> None:
        assert self._frames.wait(TIMEOUT_S), self.stderr

    def finish(self) -> int:
        try:
            return self.proc.wait(timeout=TIMEOUT_S)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(10)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)


def audio_span(path: Path) -> tuple[Fraction, Fraction] | None:
    """(start, end) in seconds of the file's audio, None without audio."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        spans = [
            (p.pts * p.time_base, (p.pts + p.duration) * p.time_base)
            for p in container.demux(container.streams.audio[0])
            if p.size and p.pts is not None
        ]
    return min(s for s, _ in spans), max(e for _, e in spans)


def assert_playable(out: Path, frames: int, server: Server) -> None:
    """The file decodes to ``frames`` frames from 0 on, with the audio of the same stream (where
    it has some) that does not outlast them (and ends less than two seconds before: the cut is
    live, and a live MPEG-TS sends its audio up to 0.7 s after the video)."""
    decoded = list(read_frames(out))
    assert len(decoded) == frames > 0
    assert decoded[0].timestamp_s == pytest.approx(0, abs=1e-3)
    video_end = decoded[-1].timestamp_s + 1 / FPS
    span = audio_span(out)
    if not server.audio:
        assert span is None
        return
    assert span is not None, "no audio"
    assert abs(span[0]) < 0.05 and video_end - 2 < span[1] <= video_end + 0.05, (span, video_end)


def test_server_stopped_mid_run(server: Server, tiny_bundle: Path, tmp_path: Path) -> None:
    """The server stops: exit 8, one line, the frames received written and playable with their
    audio (was exit 5, 'cannot read audio from ...: Connection refused', no file)."""
    server.start()
    out, summary = tmp_path / "o.mp4", tmp_path / "run.json"
    run = Run(
        server.url, "--out", out, "--json", summary, "--model", tiny_bundle, "--max-frames", 10_000
    )
    run.wait_for_frames()
    server.stop()
    code = run.finish()
    assert code == 8 and "Traceback" not in run.stderr, run.stderr
    assert re.search(rf"lost {re.escape(server.url)} after \d+ frames: ", run.stderr), run.stderr
    result = json.loads(summary.read_text())
    assert result["source_lost"] is True and result["reconnects"] == 0
    assert_playable(out, result["frames"], server)


def test_reconnect_when_the_server_comes_back(
    server: Server, tiny_bundle: Path, tmp_path: Path
) -> None:
    """--reconnect: the server stops and is back a second later; the end of the stream is a loss
    to reconnect from: one reconnect counted, the state reset, frames from the second
    connection written after those of the first (was: exit 0 at the first end, no reconnect)."""
    server.start()
    out, summary = tmp_path / "o.mp4", tmp_path / "run.json"
    wanted = 60
    run = Run(
        server.url,
        "--out",
        out,
        "--json",
        summary,
        "--model",
        tiny_bundle,
        "--reconnect",
        5,
        "--max-frames",
        wanted,
    )
    run.wait_for_frames()
    server.stop()
    time.sleep(1.0)  # the server is away for a while; vidseg-run backs off and retries
    server.start()
    code = run.finish()
    assert code == 0 and "Traceback" not in run.stderr, run.stderr
    lost = re.search(r"reconnect 1 of 5 in [\d.]+ s after (\d+) frames: lost ", run.stderr)
    assert lost, run.stderr
    result = json.loads(summary.read_text())
    assert result["reconnects"] == 1 and result["state_resets"] >= 1, result
    assert result["frames"] == wanted > int(lost.group(1)), result
    assert_playable(out, wanted, server)


def test_reconnects_run_out(server: Server, tiny_bundle: Path, tmp_path: Path) -> None:
    """--reconnect 1 and the server stays away: one try, then exit 8 with the frames kept."""
    server.start()
    out, summary = tmp_path / "o.mp4", tmp_path / "run.json"
    run = Run(
        server.url,
        "--out",
        out,
        "--json",
        summary,
        "--model",
        tiny_bundle,
        "--reconnect",
        1,
        "--max-frames",
        10_000,
    )
    run.wait_for_frames()
    server.stop()
    code = run.finish()
    assert code == 8 and "Traceback" not in run.stderr, run.stderr
    assert "reconnect 1 of 1" in run.stderr and "gave up after 1 reconnect" in run.stderr
    result = json.loads(summary.read_text())
    assert result["source_lost"] is True and result["reconnects"] == 0
    assert_playable(out, result["frames"], server)
