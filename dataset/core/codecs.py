"""Clip payload codecs: equirect RGB frames as H.264 MP4 bytes, range depth as zstd float16 bytes.

Both are plain, widely readable formats: the MP4 opens in PyAV, OpenCV and ffmpeg; the depth is
``zstandard``-compressed little-endian float16 of shape (frames, height, width), readable with
``zstandard`` or ``pyarrow.decompress`` and numpy.
"""

from __future__ import annotations

import io
from fractions import Fraction

import numpy as np
import zstandard


class Mp4Encoder:
    """Streams RGB frames into an in-memory H.264 MP4 (yuv420p), one frame at a time.

    ``threads`` = 0 lets x264 use every core; build workers pass 1 (each holds one CPU).
    """

    def __init__(self, width: int, height: int, fps: float, crf: int = 18, preset: str = "veryfast",
                 threads: int = 0) -> None:
        import av

        if width % 2 or height % 2:
            raise ValueError(f"H.264 with yuv420p needs even frame sizes, got {width}x{height}")
        self._buffer = io.BytesIO()
        self._container = av.open(self._buffer, mode="w", format="mp4")
        rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(crf), "preset": preset, "threads": str(threads)}
        self._stream.codec_context.time_base = 1 / rate
        self.frames = 0

    def add(self, rgb: np.ndarray) -> None:
        """Encode one (H, W, 3) uint8 frame."""
        import av

        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.frames
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def finish(self) -> bytes:
        """Flush the encoder and return the MP4 file's bytes."""
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        return self._buffer.getvalue()


def encode_mp4(frames: np.ndarray, fps: float, crf: int = 18, preset: str = "veryfast", threads: int = 0) -> bytes:
    """MP4 bytes of RGB frames (N, H, W, 3) uint8."""
    enc = Mp4Encoder(frames.shape[2], frames.shape[1], fps, crf, preset, threads)
    for f in frames:
        enc.add(f)
    return enc.finish()


def decode_mp4(data: bytes) -> np.ndarray:
    """RGB frames (N, H, W, 3) uint8 of MP4 bytes."""
    import av

    with av.open(io.BytesIO(data), mode="r") as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def decode_first_frame(data: bytes) -> np.ndarray:
    """The first (H, W, 3) uint8 frame of MP4 bytes, without decoding the rest."""
    import av

    with av.open(io.BytesIO(data), mode="r") as container:
        for frame in container.decode(video=0):
            return frame.to_ndarray(format="rgb24")
    raise ValueError("the video has no frames")


def encode_depth(depth: np.ndarray, level: int = 3) -> bytes:
    """zstd bytes of range depth (N, H, W) stored as little-endian float16 (0 stays 0 = no hit)."""
    half = np.asarray(depth, dtype="<f2")
    return zstandard.ZstdCompressor(level=level).compress(np.ascontiguousarray(half).tobytes())


def decode_depth(data: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    """float32 range depth (N, H, W) of ``encode_depth`` bytes."""
    raw = zstandard.ZstdDecompressor().decompress(data, max_output_size=int(np.prod(shape)) * 2)
    return np.frombuffer(raw, dtype="<f2").reshape(shape).astype(np.float32)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 images or stacks."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))
