"""Where outputs go (engine/outfile.py's rule, for every writer): ``-`` is standard output; a
FIFO, a device or a descriptor path is written through, never replaced; a regular file is
replaced atomically (through a symlink: the file, not the link); a mask folder keeps everything
but its masks.

Device cases use a symlink in tmp_path to /dev/null or /proc/self/fd/1: a writer that wrongly
replaced the path then replaces the link, never the machine's device.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from vidseg.engine.errors import VideoIOError
from vidseg.engine.frame import Frame
from vidseg.engine.framelog import FrameLog
from vidseg.engine.masks import MaskSequenceWriter
from vidseg.engine.segmenter import Result
from vidseg.engine.timing import FrameTimings
from vidseg.engine.video import read_frames, read_label_frames
from vidseg.engine.writer import VideoWriter

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "dashcam.mp4"
CLASSES = ("a", "b")
HANG_GUARD_S = 120  # a reader that never sees EOF fails the test instead of hanging it


def vidseg_run(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vidseg.engine", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


class FifoReader:
    """Reads a FIFO to its end in a thread. The test holds the FIFO open for writing too (so
    the reader's open never blocks and the inode outlives a writer that replaces the path);
    ``close`` drops that end and returns what the reader got."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = path
        self._hold = os.open(path, os.O_RDWR)
        self.data = b""
        opened = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(opened,), daemon=True)
        self._thread.start()
        assert opened.wait(HANG_GUARD_S)  # open before any writer: it never blocks (_hold)

    def _read(self, opened: threading.Event) -> None:
        with open(self.path, "rb") as fifo:
            opened.set()
            self.data = fifo.read()

    def close(self) -> bytes:
        os.close(self._hold)
        self._thread.join(HANG_GUARD_S)
        assert not self._thread.is_alive(), "the FIFO reader never saw the end"
        return self.data


def is_fifo(path: Path) -> bool:
    return stat.S_ISFIFO(os.lstat(path).st_mode)


def frame_and_result(index: int = 0) -> tuple[Frame, Result]:
    labels = np.zeros((8, 12), np.uint8)
    labels[:, 6:] = 1
    frame = Frame(np.zeros((8, 12, 3), np.uint8), index, index, Fraction(1, 25))
    return frame, Result(labels, index, index / 25, FrameTimings(1.0, 2.0, 3.0), key_frame=False)


def write_log(path: Path, frames: int = 3) -> None:
    with FrameLog(path, CLASSES) as log:
        for i in range(frames):
            log.write(*frame_and_result(i))


def write_video(path: Path, frames: int = 4, **options: object) -> None:
    images = [f.image for f in read_frames(SAMPLE, max_frames=frames)]
    height, width = images[0].shape[:2]
    with VideoWriter(path, width=width, height=height, fps=Fraction(25), **options) as writer:
        for image in images:
            writer.write(image)


# ------------------------------------------------------------------------------ the library


def test_jsonl_into_a_fifo_is_written_through(tmp_path: Path) -> None:
    fifo = tmp_path / "log.fifo"
    reader = FifoReader(fifo)
    write_log(fifo)
    lines = reader.close().decode().splitlines()
    assert [json.loads(line)["index"] for line in lines] == [0, 1, 2]
    assert is_fifo(fifo) and sorted(p.name for p in tmp_path.iterdir()) == ["log.fifo"]
    reader = FifoReader(tmp_path / "failed.fifo")  # a failed run leaves the FIFO as it was
    with pytest.raises(RuntimeError, match="boom"):
        with FrameLog(reader.path, CLASSES) as log:
            log.write(*frame_and_result())
            raise RuntimeError("boom")
    reader.close()
    assert is_fifo(reader.path)


@pytest.mark.parametrize("name", ["video.mkv", "video.mp4", "video"])
def test_video_into_a_fifo_is_written_through(name: str, tmp_path: Path) -> None:
    """.mkv streams as is; .mp4 is fragmented (a pipe cannot seek back to its index); a FIFO
    without a suffix gets Matroska."""
    fifo = tmp_path / name
    reader = FifoReader(fifo)
    write_video(fifo)
    data = reader.close()
    assert is_fifo(fifo) and sorted(p.name for p in tmp_path.iterdir()) == [name]
    copy = tmp_path / "copy.bin"
    copy.write_bytes(data)
    assert len(list(read_frames(copy))) == 4


def test_a_link_to_dev_null_stays(tmp_path: Path) -> None:
    link = tmp_path / "null"
    link.symlink_to(os.devnull)
    write_log(link)
    write_video(link, overwrite=False)  # a device needs no overwrite
    with MaskSequenceWriter(tmp_path / "m"):  # (the folder case, for the listing below)
        pass
    assert os.readlink(link) == os.devnull
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "null"]


def test_a_link_to_a_file_keeps_the_link(tmp_path: Path) -> None:
    """The file the link points to is replaced (atomically, beside itself), the link stays."""
    (tmp_path / "data").mkdir()
    target = tmp_path / "data" / "real.jsonl"
    target.write_text("old\n")
    link = tmp_path / "f.jsonl"
    link.symlink_to(target)
    write_log(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert len(target.read_text().splitlines()) == 3
    video_target = tmp_path / "data" / "real.mkv"
    video_link = tmp_path / "v.mkv"
    video_link.symlink_to(video_target)  # dangling: the file is made where it points
    write_video(video_link)
    assert video_link.is_symlink() and len(list(read_frames(video_target))) == 4
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["real.jsonl", "real.mkv"]


def masks(n: int, value: int) -> list[np.ndarray]:
    return [np.full((4, 6), value + i, np.uint8) for i in range(n)]


def fill_folder(folder: Path, old_masks: int) -> None:
    """Someone's folder: their notes, a subfolder, and an earlier run's masks."""
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "keep.txt").write_text("theirs\n")
    (folder / "notes.txt").write_text("theirs\n")
    (folder / "000000.jpg").write_text("a frame, not a mask\n")
    with MaskSequenceWriter(folder / "sub" / "older") as sink:
        for mask in masks(2, 50):
            sink.write(mask)
    for i in range(old_masks):
        (folder / f"{i:06d}.png").write_bytes(b"old")


def every_file(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def read_pngs(folder: Path) -> list[np.ndarray]:
    return [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(folder.glob("*.png"))]


def theirs(folder: Path) -> dict[str, bytes]:
    """Everything but the masks at the top of ``folder``."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not (p.parent == folder and p.suffix == ".png")
    }


def test_mask_folder_overwrite_replaces_only_the_masks(tmp_path: Path) -> None:
    folder = tmp_path / "masks"
    fill_folder(folder, old_masks=5)
    before = theirs(folder)
    everything = every_file(folder)
    with pytest.raises(RuntimeError, match="boom"):  # a failed run changes nothing
        with MaskSequenceWriter(folder, overwrite=True) as sink:
            sink.write(masks(1, 7)[0])
            raise RuntimeError("boom")
    assert every_file(folder) == everything
    with pytest.raises(VideoIOError, match=r"holds masks \(000000.png"):
        MaskSequenceWriter(folder)
    with MaskSequenceWriter(folder, overwrite=True) as sink:
        for mask in masks(3, 7):
            sink.write(mask)
    assert theirs(folder) == before  # other files and subfolders untouched
    written = sorted(p.name for p in folder.glob("*.png"))
    assert written == ["000000.png", "000001.png", "000002.png"]  # the older 3..4 gone too
    assert [m[0, 0] for m in read_pngs(folder)] == [7, 8, 9]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks"]


def test_mask_folder_without_masks_needs_no_overwrite(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    fill_folder(folder, old_masks=0)
    before = theirs(folder)
    with MaskSequenceWriter(folder) as sink:
        sink.write(masks(1, 3)[0])
    assert theirs(folder) == before and (folder / "000000.png").is_file()


def test_mask_folder_through_a_link_and_by_dot(tmp_path: Path, monkeypatch) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "notes.txt").write_text("theirs\n")
    link = tmp_path / "link"
    link.symlink_to(real)
    with MaskSequenceWriter(link) as sink:
        sink.write(masks(1, 3)[0])
    assert link.is_symlink() and sorted(p.name for p in real.iterdir()) == [
        "000000.png",
        "notes.txt",
    ]
    monkeypatch.chdir(real)  # "." is the folder it names (the CLI asks for a name instead)
    with MaskSequenceWriter(".", overwrite=True) as sink:
        sink.write(masks(1, 4)[0])
    assert sorted(p.name for p in real.iterdir()) == ["000000.png", "notes.txt"]


# ---------------------------------------------------------------------------------- the CLI


def test_cli_jsonl_and_json_dash_are_stdout(tiny_bundle: Path, tmp_path: Path) -> None:
    for flags in (["--jsonl", "-"], ["--jsonl", "f.jsonl", "--json", "-"]):
        proc = vidseg_run(
            SAMPLE, *flags, "--max-frames", 2, "--model", tiny_bundle, "-q", cwd=tmp_path
        )
        assert proc.returncode == 0, proc.stderr
        assert not (tmp_path / "-").exists()
        if flags[1] == "-":
            assert [json.loads(line)["index"] for line in proc.stdout.splitlines()] == [0, 1]
        else:
            assert json.loads(proc.stdout)["frames"] == 2
            assert len((tmp_path / "f.jsonl").read_text().splitlines()) == 2


def test_cli_video_dash_is_matroska_on_stdout(tiny_bundle: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vidseg.engine",
            str(SAMPLE),
            "--mask-out",
            "-",
            "--max-frames",
            "3",
            "--model",
            str(tiny_bundle),
            "-q",
        ],
        capture_output=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "ids.mkv").write_bytes(proc.stdout)
    assert len(list(read_label_frames(tmp_path / "ids.mkv"))) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.mkv"]


def test_cli_descriptor_link_writes_to_stdout(tiny_bundle: Path, tmp_path: Path) -> None:
    """A link to /proc/self/fd/1 is the process's standard output (here a pipe): written
    through, no --overwrite needed, the link stays."""
    link = tmp_path / "out.jsonl"
    link.symlink_to("/proc/self/fd/1")
    proc = vidseg_run(SAMPLE, "--jsonl", link, "--max-frames", 2, "--model", tiny_bundle, "-q")
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["index"] for line in proc.stdout.splitlines()] == [0, 1]
    assert os.readlink(link) == "/proc/self/fd/1"


def test_cli_fifo_and_device_outputs(tiny_bundle: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "frames.fifo"
    reader = FifoReader(fifo)
    null = tmp_path / "null"
    null.symlink_to(os.devnull)
    proc = vidseg_run(
        SAMPLE,
        "--jsonl",
        fifo,
        "--out",
        null,
        "--mask-out",
        tmp_path / "n2",
        "--max-frames",
        2,
        "--model",
        tiny_bundle,
        "-q",
    )
    data = reader.close()
    assert proc.returncode == 0, proc.stderr
    assert len(data.decode().splitlines()) == 2 and is_fifo(fifo)
    assert os.readlink(null) == os.devnull and (tmp_path / "n2").is_dir()


def test_cli_mask_and_scores_overwrite_keep_other_files(tmp_path: Path) -> None:
    """The shipped bundle has confidence, so --scores runs too."""
    masks_dir, scores_dir = tmp_path / "masks", tmp_path / "scores"
    fill_folder(masks_dir, old_masks=4)
    fill_folder(scores_dir, old_masks=4)
    before = {d: theirs(d) for d in (masks_dir, scores_dir)}
    proc = vidseg_run(
        SAMPLE, "--mask-out", masks_dir, "--scores", scores_dir, "--max-frames", 2, "-q"
    )
    assert proc.returncode == 2 and "holds masks" in proc.stderr, proc.stderr
    proc = vidseg_run(
        SAMPLE,
        "--mask-out",
        masks_dir,
        "--scores",
        scores_dir,
        "--max-frames",
        2,
        "-q",
        "--overwrite",
    )
    assert proc.returncode == 0, proc.stderr
    for folder in (masks_dir, scores_dir):
        assert theirs(folder) == before[folder]
        assert sorted(p.name for p in folder.glob("*.png")) == ["000000.png", "000001.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks", "scores"]


def test_cli_json_needs_overwrite_and_is_checked_first(tiny_bundle: Path, tmp_path: Path) -> None:
    summary = tmp_path / "s.json"
    summary.write_text("keep\n")
    out = tmp_path / "o.mp4"
    proc = vidseg_run(
        SAMPLE, "--out", out, "--json", summary, "--max-frames", 2, "--model", tiny_bundle, "-q"
    )
    assert proc.returncode == 2 and "s.json exists; pass --overwrite" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert summary.read_text() == "keep\n" and not out.exists()
    proc = vidseg_run(
        SAMPLE,
        "--out",
        out,
        "--json",
        tmp_path / "no" / "s.json",
        "--max-frames",
        2,
        "--model",
        tiny_bundle,
        "-q",
    )
    assert proc.returncode == 5 and "does not exist" in proc.stderr, proc.stderr
    assert not out.exists()  # checked before the run, not after it
    proc = vidseg_run(
        SAMPLE,
        "--out",
        out,
        "--json",
        summary,
        "--max-frames",
        2,
        "--model",
        tiny_bundle,
        "-q",
        "--overwrite",
    )
    assert proc.returncode == 0 and json.loads(summary.read_text())["frames"] == 2
