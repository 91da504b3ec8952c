"""inference.lrm: shapes for 4k + 1 frames (the published size on the meta device), Plücker rays against an
independent computation (both ray mappings), Gaussians from the outputs, a saved and reloaded checkpoint, and
Matrix-3D's checkpoint keys."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dataset.core.conventions import pose_from_heading
from inference.gaussians import quat_multiply, quat_to_rotmat, rotmat_to_quat
from inference.lrm import (
    PRESETS,
    PanoLRM,
    build_lrm,
    latent_frames,
    load_lrm,
    matrix3d_key,
    plucker_rays,
    ray_directions,
    relative_poses,
    save_lrm,
    to_gaussians,
)


def walk(frames: int) -> np.ndarray:
    return np.stack([pose_from_heading((0.1 * i, 0.05 * i, 1.6), 0.2 + 0.1 * i, pitch=0.02 * i)
                     for i in range(frames)])


def inputs(frames: int, height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    lat = torch.randn(1, latent_frames(frames), 16, height // 8, width // 8, generator=gen)
    return lat, plucker_rays(relative_poses(walk(frames)), height, width)[None]


@pytest.mark.parametrize(("frames", "height", "width"), [(9, 64, 128), (17, 32, 64), (1, 64, 128)])
def test_tiny_shapes_for_4k_plus_1_frames(frames, height, width):
    with torch.no_grad():
        out = build_lrm("tiny")(*inputs(frames, height, width))
    grid = (1, frames, height // 2, width // 2)
    assert out.depth.shape == grid and out.opacity_logits.shape == grid
    assert out.scales.shape == (*grid, 3) and out.quats.shape == (*grid, 4) and out.sh0.shape == (*grid, 3)
    assert 0 < float(out.depth.min()) and float(out.depth.max()) < PRESETS["tiny"].max_depth
    torch.testing.assert_close(out.quats.norm(dim=-1), torch.ones(grid))
    footprint = out.depth[..., None] * PRESETS["tiny"].scale_unit / (width // 2)
    ratio = out.scales / footprint
    assert float(ratio.min()) >= PRESETS["tiny"].scale_min - 1e-4 and float(ratio.max()) <= PRESETS["tiny"].scale_max
    with pytest.raises(ValueError, match="4k \\+ 1"):
        latent_frames(frames + 1)


def test_the_published_size_at_480p_and_81_frames_on_the_meta_device():
    with torch.device("meta"):
        model = PanoLRM(PRESETS["published"])
        out = model(torch.empty(1, 21, 16, 60, 120), torch.empty(1, 81, 480, 960, 6))
    assert sum(p.numel() for p in model.parameters()) == 403_470_976
    assert out.depth.shape == (1, 81, 240, 480) and out.scales.shape == (1, 81, 240, 480, 3)


def test_plucker_rays_match_an_independent_computation():
    c2w = walk(5)
    rays = plucker_rays(relative_poses(c2w), 8, 16).numpy()
    rel = np.linalg.inv(c2w[0]) @ c2w
    for f, row, col in ((0, 0, 0), (2, 3, 11), (4, 7, 5)):
        lon = 2 * math.pi * ((col + 0.5) / 16 - 0.5)  # column 8 looks ahead (+z), 12 to the right (+x)
        lat = math.pi * (0.5 - (row + 0.5) / 8)  # row 0 looks up (-y)
        d = rel[f, :3, :3] @ [math.cos(lat) * math.sin(lon), -math.sin(lat), math.cos(lat) * math.cos(lon)]
        o = rel[f, :3, 3]
        np.testing.assert_allclose(rays[f, row, col], np.concatenate([np.cross(o, d), d]), atol=1e-5)
        # the moment is the same from any point of the ray
        np.testing.assert_allclose(np.cross(o + 2.5 * d, d), rays[f, row, col, :3], atol=1e-5)
    np.testing.assert_allclose(rays[0, ..., :3], 0.0, atol=1e-7)  # frame 0 sits at the origin


def test_matrix3d_rays_are_its_sphere_mapping():
    h, w = 6, 12
    d = ray_directions(h, w, "matrix3d").numpy()
    for row, col in ((0, 0), (2, 5), (5, 11)):
        theta = (2 * (col + 0.5) / w - 1) * math.pi  # their longitude: 0 at the centre column
        phi = (2 * (row + 0.5) / h - 1) * math.pi / 2  # their latitude: -pi/2 at the top row
        np.testing.assert_allclose(d[row, col], [math.cos(phi) * math.cos(theta), math.cos(phi) * math.sin(theta),
                                                 math.sin(phi)], atol=1e-6)


def test_gaussians_sit_on_the_predicted_depth_along_each_pixels_ray():
    frames, height, width = 9, 32, 64
    lat, rays = inputs(frames, height, width)
    with torch.no_grad():
        out = build_lrm("tiny")(lat, rays)
    c2w = torch.tensor(walk(frames), dtype=torch.float32)
    g = to_gaussians(out, c2w, frame_stride=2)
    assert len(g) == 5 * (height // 2) * (width // 2)
    first = g.means[: (height // 2) * (width // 2)]  # frame 0: depth x ray from its centre
    np.testing.assert_allclose((first - c2w[0, :3, 3]).norm(dim=-1).numpy(), out.depth[0, 0].flatten().numpy(),
                               rtol=1e-4)
    # a rotation predicted in the camera frame is turned by the pose into the world
    r = quat_to_rotmat(g.quats[:1])[0]
    want = c2w[0, :3, :3] @ quat_to_rotmat(out.quats[0, 0, 0, 0][None])[0]
    torch.testing.assert_close(r, want, atol=1e-5, rtol=1e-5)


def test_quaternion_helpers_agree_with_rotation_matrices():
    q = torch.nn.functional.normalize(torch.randn(64, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    q = torch.where(q[:, :1] < 0, -q, q)
    torch.testing.assert_close(rotmat_to_quat(quat_to_rotmat(q)), q, atol=1e-5, rtol=1e-5)
    a, b = q[:32], q[32:]
    torch.testing.assert_close(quat_to_rotmat(quat_multiply(a, b)), quat_to_rotmat(a) @ quat_to_rotmat(b),
                               atol=1e-5, rtol=1e-5)


def test_a_saved_checkpoint_reloads_to_identical_gaussians(tmp_path):
    model = build_lrm("tiny", seed=3).eval()
    lat, rays = inputs(9, 32, 64)
    folder = save_lrm(model, tmp_path / "lrm")
    again = load_lrm(folder)
    c2w = torch.tensor(walk(9), dtype=torch.float32)
    with torch.no_grad():
        a, b = to_gaussians(model(lat, rays), c2w), to_gaussians(again(lat, rays), c2w)
    for name, value in a.tensors().items():
        torch.testing.assert_close(getattr(b, name), value, rtol=0, atol=0)
    assert not torch.equal(build_lrm("tiny", seed=4).latent_stem.weight, model.latent_stem.weight)
    with pytest.raises(FileNotFoundError, match="lrm_config.json"):
        load_lrm(tmp_path)


def matrix3d_keys() -> set[str]:
    """Matrix-3D's GS_decoder keys (its released module structure, written out by hand from its code)."""
    keys = {"video_conv.weight", "video_conv.bias", "video_layer_norm.weight", "video_layer_norm.bias",
            "camera_conv.weight", "camera_conv.bias", "camera_layer_norm.weight", "camera_layer_norm.bias",
            "linear_proj.weight", "linear_proj.bias", "transformer_input_layernorm.weight",
            "deconv3d_dpt.weight", "deconv3d_sh.weight"}
    layer = ["self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight",
             "self_attn.out_proj.bias", "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias",
             "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"]
    for stack in ["encoder_layer"] + [f"transformer.layers.{i}" for i in range(4)] + \
            [f"transformer_gs.layers.{i}" for i in range(4)]:
        keys |= {f"{stack}.{k}" for k in layer}
    for head in ("dpt_head.dpt", "dpt_head_gs.dpt"):
        for k in range(1, 5):
            keys |= {f"{head}.scratch.layer{k}_rn.weight", f"{head}.scratch.layer_rn.{k - 1}.weight",
                     f"{head}.scratch.refinenet{k}.out_conv.weight", f"{head}.scratch.refinenet{k}.out_conv.bias"}
            for unit in ("resConfUnit1", "resConfUnit2"):
                for conv in ("conv1", "conv2"):
                    keys |= {f"{head}.scratch.refinenet{k}.{unit}.{conv}.{p}" for p in ("weight", "bias")}
        for i in (0, 1, 3):
            keys |= {f"{head}.head.{i}.weight", f"{head}.head.{i}.bias"}
        for k, parts in ((0, 2), (1, 2), (2, 1), (3, 2)):
            keys |= {f"{head}.act_postprocess.{k}.{j}.{p}" for j in range(parts) for p in ("weight", "bias")}
    return keys


def test_matrix3d_checkpoint_keys_map_onto_every_parameter_of_the_published_model():
    with torch.device("meta"):
        ours = PanoLRM(PRESETS["published"]).state_dict()
    mapped = [matrix3d_key(k) for k in matrix3d_keys()]
    used = [k for k in mapped if k is not None]
    assert len(used) == len(set(used)) and set(used) == set(ours)
    with pytest.raises(KeyError, match="unknown key"):
        matrix3d_key("something.else")
