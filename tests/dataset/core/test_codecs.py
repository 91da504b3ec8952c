"""Clip payload codecs: the MP4 opens in PyAV and OpenCV with every frame, depth round-trips within float16."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from dataset.core.codecs import Mp4Encoder, decode_depth, decode_mp4, encode_depth, encode_mp4, psnr


def _frames(n=8, h=64, w=128):
    """Smooth moving gradients (a codec-friendly but non-trivial video)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([np.stack([128 + 100 * np.sin((x + 3 * i) / 11), 128 + 100 * np.cos((y - 2 * i) / 7),
                               128 + 60 * np.sin((x + y) / 17)], -1) for i in range(n)]).astype(np.uint8)


def test_mp4_round_trip_in_pyav_and_opencv(tmp_path):
    frames = _frames()
    data = encode_mp4(frames, fps=12, crf=12)
    decoded = decode_mp4(data)
    assert decoded.shape == frames.shape and psnr(decoded, frames) > 35
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    cap = cv2.VideoCapture(str(path))
    got = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        got.append(bgr[..., ::-1])
    assert len(got) == len(frames) and psnr(np.stack(got), frames) > 35
    if shutil.which("ffprobe"):
        out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                              "stream=codec_name,pix_fmt,nb_read_frames", "-of", "csv=p=0", str(path)],
                             capture_output=True, text=True, check=True).stdout.strip()
        assert out == f"h264,yuv420p,{len(frames)}"


def test_lower_crf_is_higher_fidelity_and_bigger():
    frames = _frames(n=6)
    hi, lo = encode_mp4(frames, 12, crf=12), encode_mp4(frames, 12, crf=30)
    assert len(hi) > len(lo) and psnr(decode_mp4(hi), frames) > psnr(decode_mp4(lo), frames)


def test_odd_sizes_are_refused():
    with pytest.raises(ValueError, match="even frame sizes"):
        Mp4Encoder(127, 64, 12)


def test_depth_round_trip_keeps_no_hit_and_relative_precision():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.3, 200.0, (3, 16, 32)).astype(np.float32)
    depth[:, 0] = 0.0
    back = decode_depth(encode_depth(depth), depth.shape)
    assert (back[:, 0] == 0).all()
    hit = depth > 0
    assert (np.abs(back[hit] - depth[hit]) / depth[hit]).max() < 1e-3
    import pyarrow as pa

    raw = pa.decompress(encode_depth(depth), decompressed_size=depth.size * 2, codec="zstd")
    assert np.array_equal(np.frombuffer(raw, "<f2").reshape(depth.shape).astype(np.float32), back)
