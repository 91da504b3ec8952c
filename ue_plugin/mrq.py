"""Reading Movie Render Queue panoramas (``editor/mrq_panorama.py``): EXR frames of a colour and a depth pass.

MRQ writes one EXR per frame and pass: ``<pass>.<frame>.exr``. The colour pass (linear HDR) is
converted to sRGB uint8; the depth pass holds range in cm in its first channel (the post-process
material of ``mrq_panorama.py``), converted to metres with the far value (>= 600 m) as 0 = no hit.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

FAR_CM = 60000.0


def read_exr(path: Path) -> np.ndarray:
    """An EXR's pixels as float32: (H, W, 3) for RGB(A) images, (H, W) for single-channel ones."""
    import OpenEXR

    try:
        channels = OpenEXR.File(str(path)).channels()
    except Exception as exc:  # the bindings raise plain exceptions for unreadable files
        raise ValueError(f"cannot read {path} as EXR: {exc}") from None
    if "RGBA" in channels or "RGB" in channels:
        return np.asarray(channels.get("RGB", channels.get("RGBA")).pixels, np.float32)[..., :3]
    if all(c in channels for c in "RGB"):
        return np.stack([np.asarray(channels[c].pixels, np.float32) for c in "RGB"], axis=-1)
    first = channels[sorted(channels)[0]].pixels
    return np.asarray(first, np.float32)


def _first_channel(img: np.ndarray) -> np.ndarray:
    return img[..., 0] if img.ndim == 3 else img


def linear_to_srgb8(rgb: np.ndarray) -> np.ndarray:
    """Linear HDR colour to sRGB uint8 (clipped at 1)."""
    x = np.clip(rgb, 0.0, 1.0)
    srgb = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return np.round(srgb * 255).astype(np.uint8)


def pass_frames(folder: Path, pass_name: str) -> list[Path]:
    """``<pass>.<frame>.exr`` files of one pass, in frame order."""
    pattern = re.compile(rf"^{re.escape(pass_name)}\.(\d+)\.exr$", re.I)
    found = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := pattern.match(p.name)))
    return [p for _, p in found]


def read_mrq_frames(folder: str | Path, n_poses: int, color_pass: str = "FinalImage",
                    depth_pass: str = "M_RangeDepth") -> tuple[np.ndarray, np.ndarray]:
    """RGB (N, H, W, 3) uint8 and range depth (N, H, W) float32 metres (0 = no hit) of an MRQ output folder
    rendered for ``n_poses`` poses; a ValueError says when passes, frame counts or sizes do not match."""
    folder = Path(folder)
    colours, depths = pass_frames(folder, color_pass), pass_frames(folder, depth_pass)
    if not colours or len(colours) != len(depths) or len(colours) != n_poses:
        raise ValueError(f"{folder}: {len(colours)} '{color_pass}' and {len(depths)} '{depth_pass}' frames for "
                         f"{n_poses} poses: pass names (--color-pass/--depth-pass) or the trajectory do not match")
    rgb = np.stack([linear_to_srgb8(read_exr(p)[..., :3]) for p in colours])
    depth = np.stack([_first_channel(read_exr(p)) for p in depths]) / 100.0
    depth = np.where((depth >= FAR_CM / 100.0) | ~np.isfinite(depth) | (depth < 0), 0.0, depth).astype(np.float32)
    h, w = depth.shape[1:]
    if rgb.shape[1:3] != (h, w) or w != 2 * h:
        raise ValueError(f"{folder}: colour {rgb.shape[1:3]} and depth {(h, w)} must be the same 2:1 equirect size")
    return rgb, depth
