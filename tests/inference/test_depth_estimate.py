"""Keyframe depth for reconstructing a generated video: the tiny estimator through the folder-loading code, clear
errors for folders we cannot load, cube faces stitched at one scale, and keyframes aligned into metric depth by
scale + shift through the poses."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from scene_helpers import make_scene

from dataset.core.conventions import CUBE_LAYOUT, equirect_to_crops, pose_from_heading, range_to_planar
from dataset.render.embedded import EmbeddedRenderer, RenderSettings
from inference.depth_estimate import (
    align_keyframe_depths,
    align_scale_shift,
    estimate_panorama_depth,
    load_depth_estimator,
    tiny_folder,
)
from inference.wan import ModelFolderError

SCALES = np.array([0.6, 1.7, 1.2, 0.8, 2.5, 1.1])
SHIFTS = np.array([0.0, 0.4, -0.2, 0.3, 0.1])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny estimator loaded by name, and the cached folder it was loaded from."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MATRIX_PANO_CACHE", str(tmp_path_factory.mktemp("cache")))
        return load_depth_estimator("tiny", device="cpu"), tiny_folder()


@pytest.fixture(scope="module")
def clip():
    """Five keyframes 0.2 m apart (turning a little) in a room with a crate, 256 x 128, exact range depth."""
    room = make_scene([((-2, -3, 0), (2, 3, 3), True, (0.8, 0.8, 0.8), "room"),
                       ((1.0, 2.0, 0.0), (1.5, 2.5, 0.5), False, (0.8, 0.2, 0.2), "crate")])
    c2w = np.stack([pose_from_heading((-0.4 + 0.2 * i, -0.5 + 0.05 * i, 1.5), 0.3 + 0.1 * i) for i in range(5)])
    with EmbeddedRenderer(room, RenderSettings(threads=2)) as renderer:
        frames = renderer.render(c2w, 256)
    return frames.rgb, frames.depth.astype(np.float64), c2w


def within(depth: np.ndarray, truth: np.ndarray, tol: float = 0.01) -> float:
    """Fraction of pixels within ``tol`` relative error."""
    return float(np.mean(np.abs(depth - truth) <= tol * truth))


def test_tiny_preset_loads_through_the_folder_code_and_gives_depth(tiny):
    estimator, folder = tiny
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    assert type(estimator.model).__name__ == "DepthAnythingForDepthEstimation" and estimator.kind == "disparity"
    rgb = np.random.default_rng(0).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    depth = estimate_panorama_depth(estimator, rgb)
    assert depth.shape == (64, 128) and depth.dtype == np.float32
    assert np.isfinite(depth).all() and (depth > 0).all()
    again = estimate_panorama_depth(load_depth_estimator(folder, device="cpu"), rgb)
    assert np.array_equal(depth, again), "the cached folder holds the same seeded weights"


def test_folders_we_cannot_load_say_what_is_missing(tiny, tmp_path):
    _, folder = tiny
    with pytest.raises(ModelFolderError, match="does not exist"):
        load_depth_estimator(tmp_path / "nowhere")
    for missing, message in (("config.json", "lacks config.json"), ("preprocessor_config.json", "lacks preproc"),
                             ("model.safetensors", "no \\*.safetensors")):
        broken = tmp_path / missing
        shutil.copytree(folder, broken)
        (broken / missing).unlink()
        with pytest.raises(ModelFolderError, match=message):
            load_depth_estimator(broken, device="cpu")
    with pytest.raises(ValueError, match="kind"):
        load_depth_estimator(folder, kind="inverse")


class ExactFaces:
    """An estimator that knows the room: each cube face's true planar depth (or disparity), at its own scale
    (``SCALES``); with ``sky``, the up face sees only sky (a disparity far under the floor)."""

    def __init__(self, rgb: np.ndarray, depth: np.ndarray, size: int, kind: str, sky: bool = False):
        self.kind = kind
        self.faces = equirect_to_crops(rgb, size, 90.0, CUBE_LAYOUT)[0].astype(np.float64)
        planar = range_to_planar(equirect_to_crops(depth, size, 90.0, CUBE_LAYOUT, mode="nearest")[0])
        self.output = SCALES[:, None, None] * (planar if kind == "depth" else 1.0 / planar)
        if sky:
            self.output[4] = 1e-6

    def predict(self, images: np.ndarray) -> np.ndarray:
        which = [int(np.argmin(np.abs(self.faces - img).sum(axis=(1, 2, 3)))) for img in images]
        assert sorted(which) == list(range(6))
        return self.output[which].astype(np.float32)


@pytest.mark.parametrize("kind", ["depth", "disparity"])
def test_cube_faces_at_different_scales_stitch_into_one_range_image(clip, kind):
    rgb, depth, _ = clip
    stitched = estimate_panorama_depth(ExactFaces(rgb[0], depth[0], 64, kind), rgb[0]).astype(np.float64)
    scale = np.median(depth[0] / stitched)
    assert within(scale * stitched, depth[0]) > 0.95, "one scale for the whole panorama: range along each ray"


def test_disparity_under_the_floor_is_no_surface(clip):
    rgb, depth, _ = clip
    stitched = estimate_panorama_depth(ExactFaces(rgb[0], depth[0], 64, "disparity", sky=True), rgb[0])
    assert (stitched[:32] == 0).all(), "latitudes above 45 degrees: the up face only"
    scale = np.median(depth[0, 40:] / stitched[40:])  # below 35 degrees: never the up face
    assert within(scale * stitched[40:], depth[0, 40:]) > 0.95


def test_align_scale_shift_recovers_a_known_affine_map():
    rng = np.random.default_rng(1)
    pred = rng.uniform(0.5, 5.0, (32, 64))
    target = 2.5 * pred - 0.7
    assert np.allclose(align_scale_shift(pred, target, np.ones_like(pred, bool)), (2.5, -0.7), atol=1e-12)
    mask = rng.random(pred.shape) < 0.3
    corrupted = np.where(mask, target, rng.uniform(-50, 50, pred.shape))
    assert np.allclose(align_scale_shift(pred, corrupted, mask), (2.5, -0.7), atol=1e-12)
    assert np.allclose(align_scale_shift(pred, corrupted, mask / pred**2), (2.5, -0.7), atol=1e-12)
    with pytest.raises(ValueError, match="constant"):
        align_scale_shift(np.full_like(pred, 3.0), target, mask)
    with pytest.raises(ValueError, match="at least two pixels"):
        align_scale_shift(pred, target, np.zeros_like(mask))


def test_keyframes_distorted_by_scale_and_shift_come_back_metric(clip):
    _, depth, c2w = clip
    distorted = SCALES[:5, None, None] * depth + SHIFTS[:, None, None]
    distorted[:, :3] = 0.0  # rows without a surface, as an estimator's sky
    aligned = align_keyframe_depths(distorted, c2w, reference_depth=depth[0])
    for k in range(5):
        assert within(aligned[k, 3:], depth[k, 3:]) > 0.99, k
        assert (aligned[k, :3] == 0).all()
    sky = align_keyframe_depths(distorted, c2w, reference_depth=depth[0], sky_factor=2.0)
    assert np.allclose(sky[:, :3], 2.0 * aligned.max(axis=(1, 2))[:, None, None])


def test_without_a_reference_keyframe_zero_sets_the_units(clip):
    _, depth, c2w = clip
    units = 2.5  # a world in other units: poses and keyframe 0's depth both scaled
    scaled = c2w.copy()
    scaled[:, :3, 3] *= units
    distorted = SCALES[:5, None, None] * depth + SHIFTS[:, None, None]
    distorted[0] = units * depth[0]
    aligned = align_keyframe_depths(distorted, scaled)
    assert np.array_equal(aligned[0], distorted[0].astype(np.float32)), "keyframe 0 kept at scale 1, shift 0"
    for k in range(1, 5):
        assert within(aligned[k], units * depth[k]) > 0.99, k
    with pytest.raises(ValueError, match="one pose per keyframe"):
        align_keyframe_depths(distorted, scaled[:3])
