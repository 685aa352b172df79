"""Live-source behaviour: the newest frame wins, drops are counted, errors are forwarded; a
network URL (a local HTTP server) decodes like the file and runs through vidseg-run."""

from __future__ import annotations

import functools
import http.server
import subprocess
import sys
import threading
import time
from fractions import Fraction

import numpy as np
import pytest

from vidseg.engine.sources import LatestFrameSource, paced
from vidseg.engine.video import Frame, VideoInfo, read_frames, read_label_frames


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


def test_image_folder(tmp_path, sample_clip) -> None:
    import cv2

    from vidseg.engine.errors import VideoIOError
    from vidseg.engine.sources import read_image_folder

    clip = [f.image for f in read_frames(sample_clip, size=(96, 64), max_frames=3)]
    for i, image in enumerate(clip):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), image[:, :, ::-1])
    (tmp_path / "notes.txt").write_text("not an image")
    frames = list(read_image_folder(tmp_path, fps=Fraction(10)))
    assert [f.index for f in frames] == [0, 1, 2]
    assert frames[2].timestamp_s == pytest.approx(0.2)
    for frame, image in zip(frames, clip):
        np.testing.assert_array_equal(frame.image, image)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoIOError, match="no images"):
        list(read_image_folder(tmp_path / "empty"))
    with pytest.raises(VideoIOError, match="not found"):
        list(read_image_folder(tmp_path / "missing"))


@pytest.fixture()
def http_clip(sample_clip):
    """The sample clip served over HTTP from a local server (a network source, no internet)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(sample_clip.parent))  # fmt: skip
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
    proc = subprocess.run([sys.executable, "-m", "vidseg.engine", http_clip, "--out", str(out),
                           "--model", str(tiny_bundle), "--max-frames", "5", "-q"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert VideoInfo.from_path(out).frame_count == 5


def test_unreachable_url_is_a_clean_error(tiny_bundle, tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "vidseg.engine", "http://127.0.0.1:9/none.mp4",
                           "--out", str(tmp_path / "o.mp4"), "--model", str(tiny_bundle), "-q"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 5 and "Traceback" not in proc.stderr, proc.stderr
    assert "127.0.0.1:9" in proc.stderr


def test_vidseg_run_reads_a_pipe(sample_clip, tiny_bundle, tmp_path) -> None:
    """``-`` reads standard input: the clip piped in gives the same frames as the file."""
    out = tmp_path / "seg.mkv"
    with open(sample_clip, "rb") as stdin:
        proc = subprocess.run([sys.executable, "-m", "vidseg.engine", "-", "--out", str(out),
                               "--mask", "--model", str(tiny_bundle), "--max-frames", "6", "-q"],
                              stdin=stdin, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    ref = tmp_path / "ref.mkv"
    proc = subprocess.run([sys.executable, "-m", "vidseg.engine", str(sample_clip), "--out",
                           str(ref), "--mask", "--model", str(tiny_bundle), "--max-frames", "6",
                           "-q"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    piped, direct = list(read_label_frames(out)), list(read_label_frames(ref))
    assert len(piped) == len(direct) == 6
    for a, b in zip(piped, direct):
        np.testing.assert_array_equal(a, b)


def test_garbage_on_stdin_is_a_clean_error(tiny_bundle, tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "vidseg.engine", "-", "--out",
                           str(tmp_path / "o.mp4"), "--model", str(tiny_bundle), "-q"],
                          input=b"not a video at all" * 100, capture_output=True,
                          timeout=120)  # fmt: skip
    err = proc.stderr.decode()
    assert proc.returncode == 5 and "Traceback" not in err, err
    assert not (tmp_path / "o.mp4").exists()
