"""Movie Render Queue output written here: EXR frames of a colour and a range-depth pass, as MRQ writes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_mrq_frames(folder: Path, rgb: np.ndarray, depth: np.ndarray) -> Path:
    """``FinalImage.NNNN.exr`` (linear colour) and ``M_RangeDepth.NNNN.exr`` (range cm, far = 65504) per frame
    of rendered RGB (N, H, W, 3) uint8 and range depth (N, H, W) metres; returns the folder."""
    import OpenEXR

    folder.mkdir(parents=True, exist_ok=True)
    for i, (colour, rng) in enumerate(zip(rgb, depth, strict=True)):
        cm = np.where(rng > 0, rng * 100, 65504.0)
        for name, pixels in (("FinalImage", (colour / 255.0) ** 2.2), ("M_RangeDepth", np.dstack([cm, cm, cm]))):
            OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage},
                         {"RGB": np.ascontiguousarray(pixels, np.float32)}).write(str(folder / f"{name}.{i:04d}.exr"))
    return folder
