"""Fuzzing (issue 16): random arrays into ``Segmenter.step`` and truncated, bit-flipped copies of
the sample clip into the demuxer end in a clean error or a result, never another exception or a
hang. Bounded and derandomized: 25 examples each, a few seconds."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from vidseg.engine import Segmenter

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def fuzz_segmenter(tiny_bundle: Path) -> Segmenter:
    return Segmenter(tiny_bundle, warmup=False, threads=1)


@_FUZZ
@given(
    shape=st.lists(st.integers(0, 70), min_size=0, max_size=4),
    dtype=st.sampled_from(["uint8", "int8", "uint16", "float32", "float64", "bool", "int64"]),
    channels_last=st.booleans(),
)
@example(shape=[1, 1, 3], dtype="uint8", channels_last=True)  # valid frames of odd sizes:
@example(shape=[70, 1, 3], dtype="uint8", channels_last=True)  # the result branch runs
@example(shape=[3, 67, 3], dtype="uint8", channels_last=False)
def test_fuzz_step_frames(
    fuzz_segmenter: Segmenter, shape: list[int], dtype: str, channels_last: bool
) -> None:
    """Any array: a FrameError or a result at the frame's size, never another exception."""
    from vidseg.engine.errors import FrameError

    if channels_last and len(shape) == 3:
        shape[2] = 3
    frame = np.zeros(shape, dtype)
    try:
        result = fuzz_segmenter.step(frame)
    except FrameError as error:
        assert "\n" not in str(error)
        return
    assert result.labels.shape == frame.shape[:2] and result.labels.dtype == np.uint8


@pytest.fixture(scope="module")
def clip_head(sample_clip: Path) -> bytes:
    return sample_clip.read_bytes()[:150_000]  # the moov atom and the first frames


@_FUZZ
@given(
    cut=st.integers(0, 150_000),
    flips=st.lists(st.tuples(st.integers(0, 149_999), st.integers(0, 7)), max_size=20),
)
def test_fuzz_demux_truncated_and_bit_flipped(
    clip_head: bytes, tmp_path_factory, cut: int, flips: list[tuple[int, int]]
) -> None:
    """A truncated, bit-flipped clip: frames, then at most a VideoIOError (one line), in time."""
    import time

    from vidseg.engine.errors import VideoIOError
    from vidseg.engine.video import open_video

    data = bytearray(clip_head[:cut])
    for at, bit in flips:
        if at < len(data):
            data[at] ^= 1 << bit
    path = tmp_path_factory.mktemp("fuzz") / "clip.mp4"
    path.write_bytes(bytes(data))
    started = time.monotonic()
    try:
        _, frames = open_video(path, max_frames=8)
        for frame in frames:
            assert frame.image.ndim == 3 and frame.image.dtype == np.uint8
    except VideoIOError as error:
        assert "\n" not in str(error), str(error)
    assert time.monotonic() - started < 10


def _mutations() -> st.SearchStrategy:
    """Edits of a valid manifest: a field dropped, or replaced by a value of a random kind."""
    leaf = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-5, 300),
        st.floats(allow_nan=True),
        st.text(max_size=8),
        st.lists(st.integers(-2, 70), max_size=4),
        st.dictionaries(st.text(max_size=6), st.integers(), max_size=2),
    )
    path = st.lists(
        st.sampled_from(
            [
                "family",
                "classes",
                "palette",
                "ignore_index",
                "input",
                "height",
                "width",
                "layout",
                "graphs",
                "step",
                "outputs",
                "state",
                "shape",
                "dtype",
                "stride",
                "role",
                "name",
                "schema_version",
                0,
                1,
                2,
            ]
        ),
        min_size=1,
        max_size=3,
    )
    return st.lists(st.tuples(path, st.one_of(st.just("drop"), leaf)), min_size=1, max_size=3)


@_FUZZ
@given(edits=_mutations())
def test_fuzz_manifest_parsing(tiny_bundle: Path, edits: list) -> None:
    """Any edit of a valid manifest parses, or is refused with a BundleError naming a field;
    never another exception (a KeyError, a TypeError) from the validator."""
    import copy
    import json

    from vidseg.engine.bundle import Manifest
    from vidseg.engine.errors import BundleError

    raw = json.loads((tiny_bundle / "manifest.json").read_text())
    for path, value in edits:
        doc = copy.deepcopy(raw)
        node = doc
        for key in path[:-1]:
            try:
                node = node[key]
            except (KeyError, IndexError, TypeError):
                break
        else:
            last = path[-1]
            if isinstance(node, dict) and isinstance(last, str):
                node.pop(last, None) if value == "drop" else node.__setitem__(last, value)
            elif isinstance(node, list) and isinstance(last, int) and last < len(node):
                node.pop(last) if value == "drop" else node.__setitem__(last, value)
        raw = doc
        try:
            Manifest.from_dict(raw)
        except BundleError as exc:
            assert re.match(r"manifest\.json: field '[^']+' \S", str(exc)), str(exc)
