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
from inference.lrm import PRESETS, load_lrm

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
    assert {x["stage"] for x in lines[150:]} == {2}  # stage 1 ran its 50 steps; the new ones are stage 2


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


def _spec(dataset: Path, out: Path, **update):
    from training.lrm import TrainLRMSpec

    base = {"data": [str(dataset)], "out": str(out), "frames": 5, "width": 128, "views": 2, "crop_size": 16,
            "stage1_steps": 2, "stage2_steps": 2, "checkpoint_every": 2, "device": "cpu"}
    return TrainLRMSpec.model_validate({**base, **update})


_WORKER = """
import sys
from training.lrm import TrainLRMSpec, train_lrm
train_lrm(TrainLRMSpec.model_validate_json(open(sys.argv[1]).read()), progress=False)
"""


@pytest.mark.slow
def test_torchrun_two_processes_average_their_samples(dataset, tmp_path):
    import os
    import subprocess
    import sys

    from inference.wan import load_wan
    from training.lrm import SampleSource, _model, depth_loss, load_clips, step_rng

    spec = _spec(dataset, tmp_path / "two")
    (tmp_path / "spec.json").write_text(spec.model_dump_json())
    (tmp_path / "worker.py").write_text(_WORKER)
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(tmp_path / "worker.py"),
                           str(tmp_path / "spec.json")], env=env, capture_output=True, text=True, timeout=600,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [(x["step"], x["stage"]) for x in lines] == [(1, 1), (2, 1), (3, 2), (4, 2)]  # rank 0 logs, once

    # step 1's loss is the mean of what ranks 0 and 1 draw, at the initial weights
    clips, _ = load_clips(spec)
    model = _model(spec, torch.device("cpu"))
    source = SampleSource(clips, load_wan("tiny", device="cpu", parts=("vae",)).vae, spec, model.cfg,
                          torch.device("cpu"))
    drawn = [source.draw(step_rng(spec, 1, rank), with_views=False) for rank in (0, 1)]
    assert not torch.equal(drawn[0].depth, drawn[1].depth)  # the ranks drew different contexts
    with torch.no_grad():
        losses = [float(depth_loss(model(s.latents, s.rays).depth[0], s.depth)[0]) for s in drawn]
    assert lines[0]["loss"] == pytest.approx(np.mean(losses), rel=1e-5), losses  # DDP's global batch of two
    stage1, final = load_lrm(tmp_path / "two" / "checkpoints" / "step-2"), load_lrm(tmp_path / "two")
    for a, b in zip(stage1.depth_parameters(), final.depth_parameters(), strict=True):
        assert torch.equal(a, b)


def test_bf16_checkpointing_and_views_rendered_beside_the_trajectory(dataset, tmp_path):
    from inference.wan import load_wan
    from training.lrm import SampleSource, load_clips, step_rng, train_lrm

    spec = _spec(dataset, tmp_path / "run", precision="bf16", gradient_checkpointing=True, off_trajectory_views=2,
                 stage1_steps=1, stage2_steps=1)
    summary = train_lrm(spec, progress=False)
    assert summary["steps"] == 2 and summary["off_trajectory_views"] == 2 and summary["off_trajectory_missing"] == {}
    logged = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert all(math.isfinite(json.loads(x)["loss"]) for x in logged)

    clips, _ = load_clips(spec)
    clip = clips[0]
    assert clip.extra_rgb.shape == (2, 64, 128, 3) and clip.extra_c2w.shape == (2, 4, 4)
    moved = np.linalg.norm(clip.extra_c2w[:, None, :3, 3] - clip.c2w[None, :, :3, 3], axis=-1).min(1)
    np.testing.assert_allclose(moved, spec.off_trajectory_m, atol=0.06)  # beside the path, not on it
    whole = spec.model_copy(update={"frames": FRAMES, "views": 60})  # the context starts at frame 0
    source = SampleSource(clips, load_wan("tiny", device="cpu", parts=("vae",)).vae, whole, PRESETS["tiny"],
                          torch.device("cpu"))
    sample = source.draw(step_rng(whole, 1, 0), with_views=True)
    where = (clip.c2w[0] @ sample.view_c2w.double().numpy())[:, :3, 3]  # the views' centres in the world
    on_path = np.linalg.norm(where[:, None] - clip.c2w[None, :, :3, 3], axis=-1).min(1) < 1e-4
    beside = np.linalg.norm(where[:, None] - clip.extra_c2w[None, :, :3, 3], axis=-1).min(1) < 1e-4
    assert (on_path | beside).all() and on_path.any() and beside.any()


def test_a_latent_cache_gives_the_context_latents(dataset, tmp_path):
    from dataset.core.jobspec import JobError
    from dataset.store.shards import next_shard_number
    from inference.wan import load_wan
    from training.latent_cache import cache_row, cache_writer
    from training.lrm import SampleSource, load_clips, step_rng

    cache = tmp_path / "cache"
    rng = np.random.default_rng(0)
    clean, variant = (torch.tensor(rng.normal(size=(1, 16, 2, 16, 32)), dtype=torch.float32) for _ in range(2))
    writer = cache_writer(cache, rows_per_group=2)
    for augment, latents in (('{"variant": 1}', variant), ("", clean)):
        writer.add(cache_row("walk", "room", "accepted", 5, "", {"latents": latents, "condition": latents,
                                                                 "text": torch.zeros(1, 4, 8),
                                                                 "image": torch.zeros(1, 2, 8)}, augment))
    writer.commit(next_shard_number(cache))
    (cache / "manifest.json").write_text(json.dumps({"job": "cache-latents", "model": "tiny", "condition": {}}))

    spec = _spec(dataset, tmp_path / "run", width=256, latent_cache=[str(cache)])
    clips, summary = load_clips(spec)
    assert summary["cached_clips"] == 1
    vae = load_wan("tiny", device="cpu", parts=("vae",)).vae
    sample = SampleSource(clips, vae, spec, PRESETS["tiny"], torch.device("cpu")).draw(step_rng(spec, 1, 0), False)
    torch.testing.assert_close(sample.latents, clean.half().float().permute(0, 2, 1, 3, 4))  # the clean row
    np.testing.assert_allclose(sample.c2w[0].numpy(), np.eye(4), atol=1e-6)  # from the cached frame 0 on

    with pytest.raises(JobError, match="set frames: 5"):
        load_clips(spec.model_copy(update={"frames": 9}))
    with pytest.raises(JobError, match="not the vae"):
        load_clips(spec.model_copy(update={"vae": str(tmp_path)}))
    narrow = spec.model_copy(update={"width": 128})
    with pytest.raises(JobError, match="set width"):
        SampleSource(load_clips(narrow)[0], vae, narrow, PRESETS["tiny"], torch.device("cpu")).draw(
            step_rng(spec, 1, 0), False)


def test_a_rerun_keeps_the_length_of_a_finished_stage_1(tmp_path):
    from dataset.core.jobspec import JobError
    from training.lrm import TrainLRMSpec, resumed_spec

    (tmp_path / "train_spec.json").write_text(TrainLRMSpec(stage1_steps=50, stage2_steps=100).model_dump_json())
    longer = TrainLRMSpec(stage1_steps=100, stage2_steps=200).with_steps(160)  # 53 + 107 asked for
    assert (resumed_spec(longer, tmp_path, 150).stage1_steps, resumed_spec(longer, tmp_path, 150).stage2_steps) == (
        50, 110)
    assert resumed_spec(longer, tmp_path, 30).stage1_steps == 53  # stage 1 not over: the new split
    with pytest.raises(JobError, match="more than the 160 steps"):
        resumed_spec(longer, tmp_path, 170)
