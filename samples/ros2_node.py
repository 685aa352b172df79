"""A ROS 2 node: segment an image topic with vidseg, publish labels (mono8) and confidence.

    ros2 run ... or: python samples/ros2_node.py --ros-args -p model:=/path/to/bundle \\
        -r image:=/camera/image_raw

Subscribes ``image`` (``sensor_msgs/Image``: rgb8, bgr8, rgba8, bgra8 or mono8), publishes
``labels`` (mono8 class ids at the image's size, same header) and, where the bundle has
confidence, ``confidence`` (mono8, 255 x max softmax). Parameters: ``model`` (a bundle
directory; default the bundled model), ``device`` (cpu), ``resize`` (stretch, letterbox, crop),
``reset_on_gap_s`` (reset the recurrent state when the stamps jump by more than this, default
1.0: a paused bag or a restarted camera).

Needs ``rclpy`` and ``sensor_msgs`` (a ROS 2 install); vidseg itself has no ROS dependency.
**Untested with ROS here**: no ROS 2 on the development machines. The message conversion
(``image_to_rgb``, ``mono8_fields``) is plain numpy and is tested without ROS
(``tests/test_samples.py``). One callback at a time (the default single-threaded executor),
so the segmenter's state is touched by one thread.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


def image_to_rgb(msg: Any) -> np.ndarray:
    """A ``sensor_msgs/Image`` (or anything with ``height``, ``width``, ``encoding``, ``step``,
    ``data``) as an (H, W, 3) uint8 RGB array. Rows may be padded (``step`` > width x channels).

    Raises:
        ValueError: an encoding other than ``CHANNELS``' or a buffer too short.
    """
    channels = CHANNELS.get(msg.encoding)
    if channels is None:
        raise ValueError(
            f"unsupported encoding {msg.encoding!r}; expected one of {sorted(CHANNELS)}"
        )
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    buffer = np.frombuffer(bytes(msg.data), np.uint8)
    if step < width * channels or buffer.size < step * height:
        raise ValueError(
            f"image buffer of {buffer.size} bytes is too short for {width}x{height} "
            f"{msg.encoding} with step {step}"
        )
    rows = buffer[: step * height].reshape(height, step)[:, : width * channels]
    pixels = rows.reshape(height, width, channels)
    if msg.encoding == "mono8":
        return np.ascontiguousarray(np.repeat(pixels, 3, axis=2))
    if msg.encoding.startswith("bgr"):
        pixels = pixels[:, :, 2::-1]
    return np.ascontiguousarray(pixels[:, :, :3])


def mono8_fields(image: np.ndarray) -> dict[str, Any]:
    """The fields of a mono8 ``sensor_msgs/Image`` for an (H, W) uint8 array (header aside)."""
    image = np.ascontiguousarray(image, np.uint8)
    height, width = image.shape
    return {
        "height": height,
        "width": width,
        "encoding": "mono8",
        "is_bigendian": 0,
        "step": width,
        "data": image.tobytes(),
    }


def main(argv: list[str] | None = None) -> int:
    try:
        import rclpy
        from rclpy.node import Node
        from sensor_msgs.msg import Image
    except ImportError:
        print(
            "ros2_node: needs a ROS 2 install (rclpy, sensor_msgs); source its setup.bash",
            file=sys.stderr,
        )
        return 2

    from vidseg.engine import Segmenter

    class SegmentationNode(Node):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__("vidseg")
            model = self.declare_parameter("model", "").value or None
            device = self.declare_parameter("device", "cpu").value
            resize = self.declare_parameter("resize", "stretch").value
            self.gap_s = float(self.declare_parameter("reset_on_gap_s", 1.0).value)
            self.segmenter = Segmenter(model, device=device, resize=resize)
            self.last_stamp: float | None = None
            self.labels_pub = self.create_publisher(Image, "labels", 10)
            self.scores_pub = self.create_publisher(Image, "confidence", 10)
            self.create_subscription(Image, "image", self.on_image, 10)
            self.get_logger().info(f"vidseg: {self.segmenter.manifest.name} on {device}")

        def on_image(self, msg: Any) -> None:
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            if self.last_stamp is not None and not 0 <= stamp - self.last_stamp <= self.gap_s:
                self.segmenter.reset()  # a jump in time: the past is unrelated
            self.last_stamp = stamp
            try:
                result = self.segmenter.step(image_to_rgb(msg), timestamp=stamp)
            except ValueError as error:  # a bad message: say so, keep running
                self.get_logger().warning(f"skipped a frame: {error}")
                return
            self.publish(self.labels_pub, msg.header, result.labels)
            if result.scores is not None:
                self.publish(self.scores_pub, msg.header, result.scores)

        def publish(self, publisher: Any, header: Any, image: np.ndarray) -> None:
            out = Image()
            out.header = header
            for name, value in mono8_fields(image).items():
                setattr(out, name, value)
            publisher.publish(out)

    rclpy.init(args=argv)
    node = SegmentationNode()
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
