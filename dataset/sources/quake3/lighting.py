"""Baked lighting: Quake 3's over-bright shift of light maps and vertex colours."""

from __future__ import annotations

import numpy as np

OVERBRIGHT_SHIFT = 2
"""Bits light maps and vertex colours are shifted by: Quake 3 maps are lit with r_mapOverBrightBits 2, which
the game shows as x4 (a x2 shift in the data plus x2 in the display gamma ramp, or x4 in the data when
windowed). A x2 shift alone renders the levels about half as bright as the game."""


def color_shift(rgb: np.ndarray, shift: int = OVERBRIGHT_SHIFT) -> np.ndarray:
    """Quake 3's over-bright shift (R_ColorShiftLightingBytes): x 2**shift, keeping the hue of what saturates.

    A colour whose brightest channel would pass 255 is scaled so that channel is 255 instead of clamping
    each channel, so bright coloured light keeps its colour.
    """
    c = np.asarray(rgb).astype(np.int32) << shift
    peak = c.max(axis=-1, keepdims=True)
    return np.where(peak > 255, c * 255 // np.maximum(peak, 1), c).astype(np.uint8)
