"""inference.super_resolution: the tiny Swin2SR preset through the real loading code, the upscaled shape and
range, and clear errors for folders that are not super-resolution models."""

from __future__ import annotations

import numpy as np
import pytest

from inference.super_resolution import load_super_resolution, save_tiny
from inference.wan import ModelFolderError


def test_tiny_upscales_crops_by_its_scale_through_the_loading_code():
    sr = load_super_resolution("tiny", device="cpu")
    assert sr.scale == 2
    crops = np.random.default_rng(0).integers(0, 256, (3, 18, 18, 3), dtype=np.uint8)  # not a window multiple
    out = sr.upscale(crops)
    assert out.shape == (3, 36, 36, 3) and out.dtype == np.uint8
    assert out.std() > 0  # a real network's output, not a constant
    np.testing.assert_array_equal(sr.upscale(crops[1:2]), out[1:2])  # each crop on its own, whatever the batch


def test_bad_folders_are_named(tmp_path):
    with pytest.raises(ModelFolderError, match="does not exist"):
        load_super_resolution(tmp_path / "absent")
    folder = save_tiny(tmp_path / "sr")
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(ModelFolderError, match="no \\*.safetensors"):
        load_super_resolution(folder)
    from inference.depth_estimate import save_tiny as save_tiny_depth

    with pytest.raises(ModelFolderError, match="upscale"):
        load_super_resolution(save_tiny_depth(tmp_path / "depth"))
