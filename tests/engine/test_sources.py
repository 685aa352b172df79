"""Live-source behaviour: the newest frame wins, drops are counted, errors are forwarded; a
network URL (a local HTTP server) decodes like the file and runs through vidseg-run."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import re
import socket
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from vidseg.engine.frame import Frame
from vidseg.engine.sources import LatestFrameSource, paced
from vidseg.engine.video import VideoInfo, read_frames, read_label_frames


def _frames(n: int, fps: int = 100):
    for i in range(n):
        yield Frame(np.full((2, 2, 3), i, np.uint8), i, i, Fraction(1, fps))


def test_paced_follows_timestamps() -> None:
    t0 = time.perf_counter()
    assert [f.index for f in paced(_frames(6, fps=50))] == list(range(6))
    assert time.perf_counter() - t0 >= 5 / 50 * 0.9  # 100 ms of clip time, not instant


def test_slow_consumer_gets_newest_frames_and_drops_are_counted() -> None:
    seen = []
    with LatestFrameSource(paced(_frames(40, fps=200))) as source:
        for frame in source:
            seen.append(frame.index)
            time.sleep(0.02)  # 4 frame intervals per step
    assert seen == sorted(seen) and seen[-1] == 39  # in order, and the newest at the end
    assert source.received == 40
    assert source.dropped == 40 - len(seen) > 10


def test_fast_consumer_drops_nothing() -> None:
    # 100 ms between frames: ample margin for the consumer to wake even on a loaded machine
    with LatestFrameSource(paced(_frames(5, fps=10))) as source:
        seen = [f.index for f in source]
    assert seen == list(range(5)) and source.dropped == 0


def test_reader_error_reaches_consumer() -> None:
    def broken():
        yield from _frames(2)
        raise OSError("camera unplugged")

    with pytest.raises(OSError, match="camera unplugged"):
        with LatestFrameSource(broken()) as source:
            for _ in source:
                time.sleep(0.01)


def test_stuck_reader_is_named_and_stops(caplog) -> None:
    """A reader still blocked in its source when the consumer leaves is named in a warning, and
    stops (closing its source) once the frame arrives."""
    release, closed = threading.Event(), threading.Event()

    def blocked():
        try:
            yield from _frames(1)
            release.wait(10)
            yield from _frames(5)
        finally:
            closed.set()

    source = LatestFrameSource(blocked())
    source.join_timeout_s = 0.2
    with caplog.at_level("WARNING", logger="vidseg.engine.sources"):
        with source:
            next(iter(source))
    assert "'live-source' is still inside its source" in caplog.text
    release.set()
    assert closed.wait(5) and source.received == 1  # the late frame is not taken


def test_iterating_without_with_runs_the_reader() -> None:
    """Without ``with``, iterating starts the reader (it used to wait forever for a thread
    nobody started) and stamps each frame's capture time; closing the iterator stops it."""
    source = LatestFrameSource(_frames(3))
    got: list[Frame] = []
    consumer = threading.Thread(target=lambda: got.extend(source), daemon=True)
    before = time.monotonic_ns()
    consumer.start()
    consumer.join(10)
    assert not consumer.is_alive(), "iterating a LatestFrameSource without `with` blocked"
    assert got and got[-1].index == 2 and source.received == 3
    assert all(before <= f.captured_ns <= time.monotonic_ns() for f in got)

    def endless():
        i = 0
        while True:
            yield from _frames(1)
            i += 1

    source = LatestFrameSource(endless())
    frames = iter(source)
    assert next(frames).index == 0
    frames.close()  # the consumer stops early: the reader stops and closes its source
    source._thread.join(10)
    assert not source._thread.is_alive()


def test_image_folder(tmp_path, sample_clip) -> None:
    import cv2

    from vidseg.engine.errors import VideoIOError
    from vidseg.engine.folder import FOLDER_FPS, open_image_folder

    clip = [f.image for f in read_frames(sample_clip, size=(96, 64), max_frames=3)]
    for i, image in enumerate(clip):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), image[:, :, ::-1])
    (tmp_path / "notes.txt").write_text("not an image")
    info, frames = open_image_folder(tmp_path)
    frames = list(frames)
    assert (info.width, info.height, info.frame_count) == (96, 64, 3)
    assert [f.index for f in frames] == [0, 1, 2]
    assert frames[2].timestamp_s == pytest.approx(2 / FOLDER_FPS)
    for frame, image in zip(frames, clip):
        np.testing.assert_array_equal(frame.image, image)
    assert [f.index for f in open_image_folder(tmp_path, max_frames=2)[1]] == [0, 1]
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoIOError, match="no images"):
        open_image_folder(tmp_path / "empty")


@pytest.fixture()
def http_clip(sample_clip):
    """The sample clip served over HTTP from a local server (a network source, no internet)."""
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(sample_clip.parent)
    )
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{sample_clip.name}"
    server.shutdown()
    thread.join()


def test_http_url_decodes_like_the_file(http_clip: str, sample_clip) -> None:
    remote = list(read_frames(http_clip, max_frames=8, thread_type="SLICE"))
    local = list(read_frames(sample_clip, max_frames=8))
    assert [f.pts for f in remote] == [f.pts for f in local]
    for a, b in zip(remote, local, strict=True):
        np.testing.assert_array_equal(a.image, b.image)


def test_vidseg_run_reads_a_url(http_clip: str, tiny_bundle, tmp_path) -> None:
    out = tmp_path / "seg.mp4"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vidseg.engine",
            http_clip,
            "--out",
            str(out),
            "--model",
            str(tiny_bundle),
            "--max-frames",
            "5",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert VideoInfo.from_path(out).frame_count == 5


def test_unreachable_url_is_a_clean_error(tiny_bundle, tmp_path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vidseg.engine",
            "http://127.0.0.1:9/none.mp4",
            "--out",
            str(tmp_path / "o.mp4"),
            "--model",
            str(tiny_bundle),
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 5 and "Traceback" not in proc.stderr, proc.stderr
    assert "127.0.0.1:9" in proc.stderr


def test_vidseg_run_reads_a_pipe(sample_clip, tiny_bundle, tmp_path) -> None:
    """``-`` reads standard input: the clip piped in gives the same frames as the file."""
    out = tmp_path / "seg.mkv"
    with open(sample_clip, "rb") as stdin:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "vidseg.engine",
                "-",
                "--out",
                str(out),
                "--mask",
                "--model",
                str(tiny_bundle),
                "--max-frames",
                "6",
                "-q",
            ],
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 0, proc.stderr
    ref = tmp_path / "ref.mkv"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vidseg.engine",
            str(sample_clip),
            "--out",
            str(ref),
            "--mask",
            "--model",
            str(tiny_bundle),
            "--max-frames",
            "6",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    piped, direct = list(read_label_frames(out)), list(read_label_frames(ref))
    assert len(piped) == len(direct) == 6
    for a, b in zip(piped, direct):
        np.testing.assert_array_equal(a, b)


def test_garbage_on_stdin_is_a_clean_error(tiny_bundle, tmp_path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vidseg.engine",
            "-",
            "--out",
            str(tmp_path / "o.mp4"),
            "--model",
            str(tiny_bundle),
            "-q",
        ],
        input=b"not a video at all" * 100,
        capture_output=True,
        timeout=120,
    )
    err = proc.stderr.decode()
    assert proc.returncode == 5 and "Traceback" not in err, err
    assert not (tmp_path / "o.mp4").exists()


# --------------------------------------------------------------------------- flaky live sources


class ScriptedServer:
    """An HTTP server on 127.0.0.1 whose k-th connection follows ``plan[k]`` (the last entry
    repeats): ``"silent"`` accepts and never answers; ``("cut", n)`` announces the whole clip
    and closes after ``n`` bytes; ``("stall", n)`` sends ``n`` bytes and then nothing;
    ``"full"`` serves the whole clip. ``connections`` counts the requests."""

    def __init__(self, data: bytes, plan: list) -> None:
        self._data, self._plan = data, plan
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self.connections = 0
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}/live.ts"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._socket.accept()
            except TimeoutError:
                continue
            step = self._plan[min(self.connections, len(self._plan) - 1)]
            self.connections += 1
            conn.settimeout(5)
            request = b""
            with contextlib.suppress(OSError):
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    request += chunk
            kind, size = (step, len(self._data)) if isinstance(step, str) else step
            if kind == "silent":
                self._held.append(conn)
                continue
            with contextlib.suppress(OSError):
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nContent-Length: "
                    b"%d\r\nConnection: close\r\n\r\n" % len(self._data)
                )
                conn.sendall(self._data[:size])
            if kind == "stall":
                self._held.append(conn)
            else:
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for conn in self._held:
            conn.close()
        self._socket.close()


LIVE_FRAMES = 40  # frames of the live clip: 320x180 at 25 fps, MPEG-TS like a camera stream


@pytest.fixture(scope="module")
def live_clip(sample_clip, tmp_path_factory) -> Path:
    """The first LIVE_FRAMES frames of the sample at 320x180 as an MPEG-TS stream."""
    from vidseg.engine.writer import VideoWriter

    path = tmp_path_factory.mktemp("live") / "live.ts"
    frames = list(read_frames(sample_clip, size=(320, 180), max_frames=LIVE_FRAMES))
    with VideoWriter(
        path, width=320, height=180, fps=Fraction(25), time_base=frames[0].time_base
    ) as writer:
        for frame in frames:
            writer.write(frame.image, frame.pts)
    return path


@pytest.fixture()
def serve(live_clip):
    servers: list[ScriptedServer] = []

    def start(*plan) -> ScriptedServer:
        servers.append(ScriptedServer(live_clip.read_bytes(), list(plan)))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def vidseg_run(*args: object) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "vidseg.engine", *map(str, args), "-q"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc, time.monotonic() - started


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr.strip().splitlines()


@pytest.mark.parametrize("scheme", ["http", "rtsp"])
def test_silent_source_times_out(scheme: str, serve, tiny_bundle, tmp_path) -> None:
    """A server that accepts and never answers: --timeout fires, exit 8, one line, no file
    (was: vidseg-run waited forever)."""
    server = serve("silent")
    url = server.url.replace("http://", f"{scheme}://")
    out = tmp_path / "o.mp4"
    proc, wall_s = vidseg_run(url, "--out", out, "--model", tiny_bundle, "--timeout", 1)
    assert proc.returncode == 8, proc.stderr
    (line,) = error_lines(proc)
    assert line.startswith("vidseg-run: error: ") and "timed out" in line and url in line
    assert wall_s < 30 and not out.exists() and list(tmp_path.iterdir()) == []


def testnetwork_options() -> None:
    """Socket timeouts go to FFmpeg in microseconds under the name each protocol reads (rtsp:
    ``timeout``; FFmpeg 5 removed ``stimeout``), with the rtsp transport."""
    from vidseg.engine.avinput import is_network_source, network_options

    assert network_options("rtsp://cam/1", 1.5, "tcp") == {
        "rtsp_transport": "tcp",
        "timeout": "1500000",
    }
    assert network_options("rtsp://cam/1", None, "udp") == {"rtsp_transport": "udp"}
    assert network_options("http://cam/x.ts", 2, "tcp") == {"rw_timeout": "2000000"}
    with pytest.raises(ValueError, match="rtsp_transport"):
        network_options("rtsp://cam/1", 1, "carrier-pigeon")
    assert is_network_source("RTSP://cam/1") and is_network_source("https://x/y.mp4")
    assert not is_network_source("clip.mp4") and not is_network_source("file:///clip.mp4")
    assert not is_network_source("-") and not is_network_source("/dev/video0")


def test_stalled_source_is_lost_and_frames_are_kept(
    serve, tiny_bundle, live_clip, tmp_path
) -> None:
    """The stream stops mid-way with the connection open: the read timeout fires, the frames
    that arrived are written, exit 8 (a lost source, not 6: a truncated file)."""
    server = serve(("stall", live_clip.stat().st_size // 2))
    out, summary = tmp_path / "o.mp4", tmp_path / "run.json"
    proc, _ = vidseg_run(
        server.url, "--out", out, "--model", tiny_bundle, "--timeout", 1, "--json", summary
    )
    assert proc.returncode == 8, proc.stderr
    (line,) = error_lines(proc)
    assert f"lost {server.url} after" in line and "wrote the" in line, line
    assert "timed out" in line, line
    result = json.loads(summary.read_text())
    assert result["source_lost"] is True and 0 < result["frames"] < LIVE_FRAMES
    assert VideoInfo.from_path(out).frame_count == result["frames"]


def test_reconnect_resets_state_and_keeps_going(serve, tiny_bundle, live_clip, tmp_path) -> None:
    """The connection drops mid-way, the server comes back: one reconnect, logged in one line;
    the output holds the frames of both parts in order; after the reconnect the labels are a
    fresh start's (the state was reset)."""
    server = serve(("cut", live_clip.stat().st_size // 2), "full")
    out, summary = tmp_path / "o.mkv", tmp_path / "run.json"
    proc, _ = vidseg_run(
        server.url,
        "--out",
        out,
        "--mask",
        "--model",
        tiny_bundle,
        "--reconnect",
        2,
        "--json",
        summary,
    )
    assert proc.returncode == 0, proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 2 and "reconnect 1 of 2" in lines[0] and lines[1].startswith("wrote")
    first = int(re.search(r"in 0.5 s after (\d+) frames: lost ", lines[0]).group(1))
    assert 0 < first < LIVE_FRAMES and server.connections == 2
    result = json.loads(summary.read_text())
    assert result["frames"] == first + LIVE_FRAMES
    assert result["reconnects"] == 1 and result["state_resets"] == 1
    ref = tmp_path / "ref.mkv"
    proc, _ = vidseg_run(live_clip, "--out", ref, "--mask", "--model", tiny_bundle)
    assert proc.returncode == 0, proc.stderr
    got, want = list(read_label_frames(out)), list(read_label_frames(ref))
    assert len(got) == first + LIVE_FRAMES and len(want) == LIVE_FRAMES
    for i, expected in enumerate(want[:first] + want):
        np.testing.assert_array_equal(got[i], expected, err_msg=f"frame {i}")
    stamps = [f.pts * f.time_base for f in read_frames(out)]
    assert stamps == sorted(set(stamps))  # strictly increasing across the reconnect


def test_reconnects_exhausted(serve, tiny_bundle, live_clip, tmp_path) -> None:
    """Dropped, and the server then never answers: one reconnect line, then the loss as the
    error (exit 8) with the frames of the first part written."""
    server = serve(("cut", live_clip.stat().st_size // 2), "silent")
    out = tmp_path / "o.mp4"
    proc, _ = vidseg_run(
        server.url, "--out", out, "--model", tiny_bundle, "--reconnect", 1, "--timeout", 1
    )
    assert proc.returncode == 8, proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 2 and "reconnect 1 of 1" in lines[0], lines
    assert "gave up after 1 reconnect" in lines[1] and "timed out" in lines[1], lines[1]
    assert 0 < VideoInfo.from_path(out).frame_count < LIVE_FRAMES


def test_live_drops_stale_frames(tiny_bundle, sample_clip, tmp_path) -> None:
    """--live on a 1000 fps clip played at its rate: the model cannot keep up, stale frames are
    dropped and counted; every frame is either written or dropped."""
    from vidseg.engine.writer import VideoWriter

    clip = tmp_path / "fast.mp4"
    frames = list(read_frames(sample_clip, size=(160, 96), max_frames=60))
    with VideoWriter(clip, width=160, height=96, fps=Fraction(1000)) as writer:
        for frame in frames:
            writer.write(frame.image)
    out, summary = tmp_path / "o.mp4", tmp_path / "run.json"
    proc, _ = vidseg_run(clip, "--out", out, "--model", tiny_bundle, "--live", "--json", summary)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(summary.read_text())
    assert result["dropped"] > 0 and result["frames"] + result["dropped"] == 60, result
    assert f"{result['dropped']} stale frames dropped" in proc.stderr
    assert VideoInfo.from_path(out).frame_count == result["frames"]


def test_reconnecting_source_renumbers_and_gives_up(monkeypatch) -> None:
    """Across a reconnect: index and pts run on (a reopened source's pts, in another time base,
    follow the last frame's), only the first frame after it has ``discontinuity``; failed
    reopenings back off 0.5, 1 s and the count starts over after a success; when none is left
    the loss is raised."""
    from vidseg.engine import sources
    from vidseg.engine.errors import SourceLostError, VideoIOError

    sleeps: list[float] = []
    monkeypatch.setattr(sources.time, "sleep", sleeps.append)

    def lost_after(pts: list[int], time_base: Fraction):
        for i, p in enumerate(pts):
            yield Frame(np.full((2, 2, 3), i, np.uint8), i, p, time_base)
        raise SourceLostError("lost cam after a while: Input/output error", len(pts))

    def refused():
        raise VideoIOError("cannot read video cam: Connection refused")

    opens = iter([refused, lambda: lost_after([5000, 5040], Fraction(1, 1000)), refused, refused])
    source = sources.ReconnectingSource(
        lost_after([0, 3600, 7200], Fraction(1, 90000)),
        lambda: next(opens)(),
        retries=2,
        name="cam",
    )
    got = []
    with pytest.raises(SourceLostError, match="gave up after 2 reconnect.*Connection refused"):
        for frame in source:
            got.append(frame)
    assert [f.index for f in got] == [0, 1, 2, 3, 4]
    assert [f.pts for f in got] == [0, 3600, 7200, 10800, 14400]
    assert {f.time_base for f in got} == {Fraction(1, 90000)}
    assert [f.discontinuity for f in got] == [False, False, False, True, False]
    assert sleeps == [0.5, 1.0, 0.5, 1.0] and source.reconnects == 1
