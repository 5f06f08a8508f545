"""CDR (de)serialization of the episode file's four ROS 2 message types.

mcap_ros2 (de)serializes float32[] one element at a time in Python; for ~25k floats per episode that
was ~5x the 60 ms budget. These four fixed message types are encoded here with struct/numpy instead
(plain little-endian XCDR1, tight and zero-padded, byte-identical to mcap_ros2's output: the tests compare
them and decode our bytes with mcap_ros2 and rclpy). Not rclpy either: see research/mcap-spike.md pitfall 1.
"""

from __future__ import annotations

import struct

import numpy as np

CDR_LE = b"\x00\x01\x00\x00"  # encapsulation header: plain CDR, little-endian
IMAGE_FRAME_ID = "camera"  # header.frame_id of every episode image


class CdrError(ValueError):
    """A message is not the CDR encoding of the type it was read as (truncated, trailing bytes, wrong header)."""


class _CdrOut:
    def __init__(self) -> None:
        self.parts: list[bytes] = [CDR_LE]
        self.pos = 0  # offset after the encapsulation header, what CDR alignment is relative to

    def put(self, data: bytes, align: int) -> None:
        pad = -self.pos % align
        if pad:
            self.parts.append(b"\0" * pad)
        self.parts.append(data)
        self.pos += pad + len(data)

    def u8(self, v: int) -> None:
        self.put(struct.pack("<B", v), 1)

    def u32(self, v: int) -> None:
        self.put(struct.pack("<I", v), 4)

    def string(self, s: str) -> None:
        raw = s.encode() + b"\0"
        self.put(struct.pack("<I", len(raw)) + raw, 4)

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


class _CdrIn:
    def __init__(self, data: bytes, what: str) -> None:
        if data[:4] != CDR_LE:
            raise CdrError(f"{what}: not little-endian CDR (encapsulation {bytes(data[:4]).hex()})")
        self.buf = memoryview(data)[4:]
        self.pos = 0
        self.what = what

    def _take(self, n: int, align: int) -> memoryview:
        self.pos += -self.pos % align
        if self.pos + n > len(self.buf):
            raise CdrError(f"{self.what}: message truncated (needs {self.pos + n} bytes, has {len(self.buf)})")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self._take(1, 1)[0]

    def i32(self) -> int:
        return struct.unpack("<i", self._take(4, 4))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self._take(4, 4))[0]

    def i64(self) -> int:
        return struct.unpack("<q", self._take(8, 8))[0]

    def string(self) -> str:
        raw = bytes(self._take(self.u32(), 1))
        if not raw.endswith(b"\0"):
            raise CdrError(f"{self.what}: string is not NUL-terminated")
        return raw[:-1].decode()

    def array(self, dtype: str, count: int) -> np.ndarray:
        item = np.dtype(dtype).itemsize
        return np.frombuffer(self._take(count * item, item), dtype=dtype)

    def done(self) -> None:
        if self.pos != len(self.buf):
            raise CdrError(f"{self.what}: {len(self.buf) - self.pos} unexpected trailing bytes")


def encode_image(stamp_ns: int, image: np.ndarray) -> bytes:
    """sensor_msgs/msg/Image (rgb8) of an HxWx3 uint8 frame."""
    h, w, _ = image.shape
    out = _CdrOut()
    out.put(struct.pack("<iI", stamp_ns // 1_000_000_000, stamp_ns % 1_000_000_000), 4)
    out.string(IMAGE_FRAME_ID)
    out.put(struct.pack("<II", h, w), 4)
    out.string("rgb8")
    out.u8(0)  # is_bigendian
    out.put(struct.pack("<II", w * 3, image.nbytes), 4)  # step, then uint8[] length
    out.put(image.tobytes(), 1)
    return out.getvalue()


def encode_multiarray(values: np.ndarray, labels: tuple[str, ...]) -> bytes:
    """std_msgs/msg/Float32MultiArray, one layout dimension per label."""
    out = _CdrOut()
    out.u32(len(labels))
    stride = int(values.size)
    for label, size in zip(labels, values.shape, strict=False):
        out.string(label)
        out.put(struct.pack("<II", size, stride), 4)
        stride //= max(int(size), 1)
    out.u32(0)  # data_offset
    out.u32(int(values.size))
    out.put(np.ascontiguousarray(values, dtype="<f4").tobytes(), 4)
    return out.getvalue()


def encode_uint8(v: int) -> bytes:
    return CDR_LE + struct.pack("<B", v)


def encode_int64(v: int) -> bytes:
    return CDR_LE + struct.pack("<q", v)


def decode_image(data: bytes, what: str) -> tuple[int, int, int, str, int, np.ndarray]:
    """(stamp_ns, height, width, encoding, step, pixels) of an Image; `what` names it in errors."""
    r = _CdrIn(data, what)
    sec, nanosec = r.i32(), r.u32()
    r.string()  # frame_id
    height, width = r.u32(), r.u32()
    encoding = r.string()
    r.u8()  # is_bigendian: irrelevant for uint8 rgb8
    step = r.u32()
    pixels = r.array("u1", r.u32())
    r.done()
    return sec * 1_000_000_000 + nanosec, height, width, encoding, step, pixels


def decode_multiarray(data: bytes, what: str) -> tuple[tuple[int, ...], np.ndarray]:
    """(dimension sizes, flat float32 values) of a Float32MultiArray."""
    r = _CdrIn(data, what)
    sizes = []
    for _ in range(r.u32()):
        r.string()
        sizes.append(r.u32())
        r.u32()  # stride
    r.u32()  # data_offset
    values = r.array("<f4", r.u32())
    r.done()
    return tuple(sizes), values


def decode_scalar(data: bytes, what: str, kind: str) -> int:
    """The value of a UInt8 (kind "u8") or Int64 (any other kind) message."""
    r = _CdrIn(data, what)
    v = r.u8() if kind == "u8" else r.i64()
    r.done()
    return v
