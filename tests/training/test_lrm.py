"""train-lrm with the tiny preset on a built room clip (CPU): stage 1 brings the depth error well under the
room's depth range, stage 2 leaves every depth parameter as stage 1 made it and beats the mean colour on held-out
views through ``reconstruct --method lrm``; a rerun resumes; bad configs are one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from recon_helpers import commit_clip

from dataset.cli import main
from dataset.core.conventions import pose_from_heading
from inference.lrm import load_lrm

REPO = Path(__file__).resolve().parents[2]
FRAMES = 13


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    c2w = np.stack([pose_from_heading((-0.5 + 0.06 * i, -0.4 + 0.04 * i, 1.6), math.radians(20 + 3 * i))
                    for i in range(FRAMES)])
    return commit_clip(tmp_path_factory.mktemp("lrm_data"), "procedural:room:6x8x3", c2w, width=256)


@pytest.mark.slow
def test_train_two_stages_then_reconstruct(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train-lrm", str(REPO / "configs/train_lrm_tiny.yaml"), "--data", str(dataset), "--out", str(out),
                 "--steps", "150", "--quiet"]) == 0  # the config's 100 + 200 steps, halved: 50 + 100
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 150
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, 151)) and [x["stage"] for x in lines] == [1] * 50 + [2] * 100
    depth = [x["depth_l1_m"] for x in lines if x["stage"] == 1]
    first, last = np.mean(depth[:5]), np.mean(depth[-10:])
    with capsys.disabled():
        print({"depth_l1_m": (round(first, 3), round(last, 3)),
               "mse": round(float(np.mean([x["mse"] for x in lines if x["stage"] == 2][-10:])), 5)})
    assert last < 0.5 * first and last < 0.1 * 6.0, (first, last)  # the room spans about 6 m of depth

    stage1, final = load_lrm(out / "checkpoints" / "step-50"), load_lrm(out)
    for a, b in zip(stage1.depth_parameters(), final.depth_parameters(), strict=True):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(stage1.gaussian_parameters(), final.gaussian_parameters(),
                                                        strict=True))

    recon = tmp_path / "recon"
    (tmp_path / "eval.yaml").write_text("eval_every: 2\noff_trajectory_views: 0\n")
    assert main(["reconstruct", "--from-clip", str(dataset), "walk", "--method", "lrm", "--checkpoint", str(out),
                 "--vae", "tiny", "--config", str(tmp_path / "eval.yaml"), "--crop-size", "32", "--backend", "torch",
                 "--quiet", "--out", str(recon)]) == 0
    capsys.readouterr()
    m = json.loads((recon / "metrics.json").read_text())
    with capsys.disabled():
        print({k: m[k] for k in ("psnr", "ssim", "seconds")}, {b: m["baselines"][b]["psnr"] for b in m["baselines"]})
    assert m["psnr"] >= m["baselines"]["mean_colour"]["psnr"] + 2.0

    # a longer run resumes from the last checkpoint instead of starting over
    assert main(["train-lrm", str(REPO / "configs/train_lrm_tiny.yaml"), "--data", str(dataset), "--out", str(out),
                 "--steps", "160", "--quiet"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert again["steps"] == 160 and [x["step"] for x in lines] == list(range(1, 161))


def test_bad_configs_are_one_line_errors(dataset, tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("frames: 8\n")
    assert main(["train-lrm", str(config), "--data", str(dataset), "--out", str(tmp_path / "o")]) == 2
    assert "4k + 1" in capsys.readouterr().err
    config.write_text("frames: 41\n")
    assert main(["train-lrm", str(config), "--data", str(dataset), "--out", str(tmp_path / "o")]) == 2
    assert "no clip has the 41 frames" in capsys.readouterr().err
    assert main(["train-lrm", str(REPO / "configs/train_lrm_tiny.yaml"), "--data", str(tmp_path),
                 "--out", str(tmp_path / "o")]) == 2
    assert "not a Matrix-Pano dataset" in capsys.readouterr().err


def test_steps_split_as_the_config_splits_them_and_interrupted_checkpoints_are_skipped(tmp_path):
    from training.lrm import TrainLRMSpec, _newest_checkpoint

    spec = TrainLRMSpec(stage1_steps=100, stage2_steps=200).with_steps(150)
    assert (spec.stage1_steps, spec.stage2_steps) == (50, 100)
    for name in ("step-5", "step-40", "step-90.tmp"):
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
    assert _newest_checkpoint(tmp_path).name == "step-40"
