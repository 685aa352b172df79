"""samples/ros2_node.py without ROS: its message conversion, and a clear exit without rclpy."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "ros2_node.py"
spec = importlib.util.spec_from_file_location("ros2_node", SAMPLE)
ros2_node = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ros2_node)


def message(image: np.ndarray, encoding: str, pad: int = 0) -> SimpleNamespace:
    h, w = image.shape[:2]
    rows = image.reshape(h, -1)
    padded = np.concatenate([rows, np.zeros((h, pad), np.uint8)], axis=1)
    return SimpleNamespace(
        height=h, width=w, encoding=encoding, step=padded.shape[1], data=padded.tobytes()
    )


def test_image_to_rgb_encodings() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    for encoding, image in [
        ("rgb8", rgb),
        ("bgr8", rgb[:, :, ::-1]),
        ("rgba8", np.dstack([rgb, np.full((5, 7), 9, np.uint8)])),
        ("bgra8", np.dstack([rgb[:, :, ::-1], np.zeros((5, 7), np.uint8)])),
    ]:
        got = ros2_node.image_to_rgb(message(np.ascontiguousarray(image), encoding, pad=3))
        np.testing.assert_array_equal(got, rgb, err_msg=encoding)
        assert got.flags["C_CONTIGUOUS"]
    gray = rgb[:, :, 0].copy()
    np.testing.assert_array_equal(
        ros2_node.image_to_rgb(message(gray, "mono8")), np.dstack([gray] * 3)
    )
    with pytest.raises(ValueError, match="encoding"):
        ros2_node.image_to_rgb(message(rgb, "yuv422"))
    short = message(rgb, "rgb8")
    short.data = short.data[:-1]
    with pytest.raises(ValueError, match="too short"):
        ros2_node.image_to_rgb(short)


def test_mono8_fields() -> None:
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    fields = ros2_node.mono8_fields(labels)
    assert (fields["height"], fields["width"], fields["step"], fields["encoding"]) == (
        3,
        4,
        4,
        "mono8",
    )
    assert fields["data"] == labels.tobytes()


def test_without_ros_it_says_so() -> None:
    if importlib.util.find_spec("rclpy") is not None:
        pytest.skip("rclpy is installed here")
    proc = subprocess.run([sys.executable, str(SAMPLE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "needs a ROS 2 install" in proc.stderr
    assert "Traceback" not in proc.stderr
