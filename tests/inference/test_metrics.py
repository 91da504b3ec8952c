"""inference.metrics: frame metrics against independent formulas, network metrics through their weight loaders
(random weights written to files), pose estimation on rendered and rotated panoramas, pose errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from lpips_helpers import write_lpips
from safetensors.torch import save_file

from dataset.core.conventions import crop_rotation, pose_from_heading, rotation_from_heading
from inference import metrics as M


@pytest.fixture(scope="module")
def clip() -> tuple[np.ndarray, np.ndarray]:
    """A 13-frame 384x192 clip of a procedural room (walking 0.1 m and turning 2 degrees per frame), as H.264
    decodes it, with its poses."""
    from dataset.core.codecs import decode_mp4, encode_mp4
    from dataset.render.embedded import EmbeddedRenderer
    from dataset.sources import load_scene

    poses = np.stack([pose_from_heading((-0.6 + 0.1 * i, -0.3, 1.6), math.radians(10 + 2 * i)) for i in range(13)])
    with EmbeddedRenderer(load_scene("procedural:room:6x8x3")) as renderer:
        rgb = renderer.render(poses, 384).rgb
    return decode_mp4(encode_mp4(rgb, 12)), poses


def noisy(frames: np.ndarray, amount: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(frames.astype(int) + rng.integers(-amount, amount + 1, frames.shape), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- PSNR, SSIM


def test_psnr_is_capped_for_identical_frames_and_is_the_mean_of_frame_psnrs(clip):
    frames = clip[0][:4]
    assert np.isinf(M.frame_psnr(frames, frames)).all()
    assert M.psnr(frames, frames) == M.PSNR_CAP_DB
    other = noisy(frames, 12)
    mse = ((frames.astype(np.float64) - other) ** 2).reshape(4, -1).mean(1)
    assert M.psnr(frames, other) == pytest.approx(np.mean(10 * np.log10(255.0**2 / mse)), rel=1e-12)


def test_ssim_is_one_for_identical_frames_and_matches_the_closed_form_on_flat_frames(clip):
    frames = clip[0][:2]
    assert M.ssim(frames, frames) == pytest.approx(1.0, abs=1e-12)
    assert M.ssim(frames, noisy(frames, 30)) < 0.9
    a, b = np.full((1, 32, 64, 3), 100, np.uint8), np.full((1, 32, 64, 3), 120, np.uint8)
    c1 = (0.01 * 255) ** 2  # flat frames: no variance, SSIM is the luminance term alone
    assert M.ssim(a, b) == pytest.approx((2 * 100 * 120 + c1) / (100**2 + 120**2 + c1), rel=1e-12)


def test_torch_ssim_equals_the_numpy_ssim_and_has_gradients(clip):
    frames = clip[0][:3]
    pred_frames = noisy(frames, 30)
    pred = torch.tensor(pred_frames / 255.0, requires_grad=True)
    ours = M.torch_ssim(pred, torch.tensor(frames / 255.0))
    np.testing.assert_allclose(ours.detach().numpy(), M.frame_ssim(pred_frames, frames), rtol=1e-9)
    (1 - ours).mean().backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_frame_metrics_reject_mismatched_videos(clip):
    with pytest.raises(ValueError, match="differ"):
        M.psnr(clip[0][:3], clip[0][:2])
    with pytest.raises(ValueError, match="uint8"):
        M.ssim(clip[0].astype(np.float32), clip[0].astype(np.float32))


# ---------------------------------------------------------------------------------------------- LPIPS


@pytest.mark.parametrize(("trunk", "ctor"), [("alex", "alexnet"), ("vgg", "vgg16")])
def test_lpips_trunks_have_torchvision_keys(trunk, ctor):
    import torchvision

    with torch.device("meta"):  # shapes only: torchvision's own trunk, as its weight files hold it
        ref = {k: v.shape for k, v in getattr(torchvision.models, ctor)().state_dict().items() if "features" in k}
    ours = {f"features.{k}": v.shape for k, v in M.LpipsNetwork(trunk).features.state_dict().items()}
    assert ours == {k: v for k, v in ref.items() if k in ours} and len(ours) == (10 if trunk == "alex" else 26)


@pytest.mark.parametrize("trunk", ["alex", "vgg"])
def test_lpips_is_zero_for_identical_frames_and_grows_with_noise(tmp_path, clip, trunk):
    net = M.load_lpips(write_lpips(tmp_path / "w", trunk))
    assert net.trunk == trunk
    frames = clip[0][:2, :96, :192] if trunk == "alex" else clip[0][:1, :48, :96]
    assert M.lpips(frames, frames, net) == 0.0
    light, heavy = M.lpips(frames, noisy(frames, 10), net), M.lpips(frames, noisy(frames, 60), net)
    assert 0 < light < heavy


def test_lpips_reads_lpips_own_layout_and_rejects_incomplete_weights(tmp_path, clip):
    folder = write_lpips(tmp_path / "w")
    net = M.load_lpips(folder)
    own = {}  # the trunk in lpips' layout: net.slice<K>.<torchvision index>.<param>
    for k, (lo, hi) in enumerate(net.slices):
        own.update({f"net.slice{k + 1}.{name}": v for name, v in net.features.state_dict().items()
                    if lo <= int(name.split(".")[0]) < hi})
    own.update({f"lin{i}.model.1.weight": lin.weight for i, lin in enumerate(net.lins)})
    torch.save(own, tmp_path / "lpips.pth")
    frames = clip[0][:1, :96, :192]
    other = noisy(frames, 20)
    assert M.lpips(frames, other, tmp_path / "lpips.pth") == pytest.approx(M.lpips(frames, other, net), rel=1e-6)
    (folder / "heads.pth").unlink()
    with pytest.raises(ValueError, match="lacks 'lins.0.weight'"):
        M.load_lpips(folder)
    with pytest.raises(M.WeightsMissing, match="does not exist"):
        M.load_lpips(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------- FID, FVD


def test_frechet_distance_matches_the_closed_form():
    import scipy.linalg

    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, (4000, 3)) @ np.diag([1.0, 2.0, 0.5])
    b = rng.normal(1.0, 1.0, (3000, 3)) @ np.diag([0.5, 1.0, 3.0])
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(sa + sb - 2 * scipy.linalg.sqrtm(sa @ sb).real)
    assert M.frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    x, y = a[:, :1], b[:, :1]  # one dimension: (mu_x - mu_y)^2 + (sigma_x - sigma_y)^2
    assert M.frechet_distance(x, y) == pytest.approx((x.mean() - y.mean()) ** 2 + (x.std(ddof=1) - y.std(ddof=1)) ** 2,
                                                     rel=1e-9)
    few = rng.normal(size=(5, 64))  # rank-deficient covariance: still exactly 0 against itself
    assert M.frechet_distance(few, few) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="at least 2"):
        M.frechet_distance(a[:1], b)


@pytest.mark.slow
def test_fid_is_zero_for_identical_frames_and_positive_otherwise(tmp_path, clip):
    torch.manual_seed(0)
    sd = M.InceptionFeatures().state_dict()
    for v in sd.values():
        if v.ndim == 4:
            torch.nn.init.kaiming_normal_(v)  # keeps activations alive through the 94 random layers
    save_file(sd, tmp_path / "inception.safetensors")
    net = M.load_inception(tmp_path / "inception.safetensors")
    a = M.inception_features(clip[0][[0, 6]], net)
    assert a.shape == (2, 2048) and M.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert M.fid(clip[0][[0, 6]], clip[0][[3, 12]], net) > 1e-6
    torch.save({k: v for k, v in sd.items() if not k.startswith("Mixed_7c")}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="lacks 'Mixed_7c"):
        M.load_inception(tmp_path / "partial.pth")


class TinyI3D(torch.nn.Module):
    """Stands in for i3d_torchscript.pt: the same call signature, a random 3D conv and global pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(3, 16, kernel_size=(3, 7, 7), stride=(1, 4, 4))

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        assert x.shape[1:2] == (3,) and x.shape[-2:] == (224, 224) and float(x.abs().max()) <= 1.0
        return torch.relu(self.conv(x)).mean(dim=(2, 3, 4))


def test_fvd_loads_torchscript_and_is_zero_for_identical_videos(tmp_path, clip):
    torch.manual_seed(0)
    torch.jit.script(TinyI3D()).save(str(tmp_path / "i3d_torchscript.pt"))
    net = M.load_i3d(tmp_path / "i3d_torchscript.pt")
    videos = [clip[0][:5], clip[0][4:9], clip[0][8:13]]
    assert M.fvd(videos, videos, net) == pytest.approx(0.0, abs=1e-9)
    assert M.fvd(videos, [noisy(v, 40) for v in videos], net) > 1e-6
    (tmp_path / "bad.pt").write_bytes(b"not torchscript")
    with pytest.raises(ValueError, match="not a TorchScript I3D"):
        M.load_i3d(tmp_path / "bad.pt")


def test_missing_weights_are_null_with_the_reason(tmp_path, clip):
    frames, poses = clip
    pair = M.VideoPair("c", frames, frames, poses)
    result = M.evaluate_videos([pair], M.MetricWeights(inception=tmp_path / "absent.pth"))
    assert result["lpips"] is None and result["fid"] is None and result["fvd"] is None
    assert result["missing"] == {"lpips": "no --lpips-weights given", "fid": f"--inception-weights {tmp_path}"
                                 f"/absent.pth does not exist", "fvd": "no --i3d-weights given"}
    assert result["psnr"] == M.PSNR_CAP_DB and result["psnr_capped"] and result["ssim"] == pytest.approx(1.0)
    (tmp_path / "broken.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read weights"):
        M.evaluate_videos([pair], M.MetricWeights(lpips=tmp_path / "broken.safetensors"))


# ---------------------------------------------------------------------------------------------- camera poses


def test_estimate_poses_recovers_a_pure_yaw_exactly(clip):
    frame = clip[0][0]
    shifts = [0, 3, 7, 12]
    est = M.estimate_poses(np.stack([np.roll(frame, -s, axis=1) for s in shifts]))
    for s, pose in zip(shifts, est, strict=True):  # a roll by s columns is a yaw of s * 360 / W degrees
        angle = np.degrees(np.arccos(np.clip((np.trace(pose[:3, :3].T @ crop_rotation(s * 360 / 384, 0)) - 1) / 2,
                                             -1, 1)))
        assert angle < 0.01 and np.abs(pose[:3, 3]).max() == 0.0


def test_estimate_poses_follows_a_rendered_walk(clip):
    frames, poses = clip
    est = M.estimate_poses(frames)
    assert est.shape == (13, 4, 4) and np.array_equal(est[0], np.eye(4))
    errors = M.pose_errors(est, poses)
    assert errors["r_err_deg"] < 0.5 and errors["t_err"] < 0.03, errors
    assert np.array_equal(M.estimate_poses(frames), est)  # seeded RANSAC: same video, same path


def test_pose_errors_align_origin_orientation_and_scale():
    steps = np.arange(9)
    requested = np.stack([pose_from_heading((0.3 * i, 0.1 * i**1.5, 1.6), math.radians(5 * i)) for i in steps])
    moved = np.eye(4)
    moved[:3, :3], moved[:3, 3] = rotation_from_heading(1.0, 0.2), (4.0, -2.0, 1.0)
    estimate = moved @ requested
    estimate[:, :3, 3] = (estimate[:, :3, 3] - estimate[0, :3, 3]) * 0.25 + estimate[0, :3, 3]  # scale 1/4
    assert M.pose_errors(estimate, requested) == pytest.approx({"r_err_deg": 0.0, "t_err": 0.0}, abs=1e-9)
    drift = np.linspace(0, 10, len(steps))
    drifted = np.stack([pose_from_heading(p[:3, 3], math.radians(5 * i + d)) for i, (p, d) in
                        enumerate(zip(requested, drift, strict=True))])
    assert M.pose_errors(requested, drifted)["r_err_deg"] == pytest.approx(5.0, abs=1e-9)
    still = np.repeat(requested[:1], len(steps), axis=0)
    assert M.pose_errors(requested, still)["t_err"] is None
    with pytest.raises(ValueError, match="one pose per frame"):
        M.pose_errors(requested[:3], requested)
