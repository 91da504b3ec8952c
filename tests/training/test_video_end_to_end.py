"""The model half end to end on a small built dataset, through the CLI as a user runs it: ``cache-latents`` ->
``train-video`` -> ``generate --from-clip --lora`` -> ``eval-video``, with the tiny model on a CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from dataset.cli import main
from dataset.core.codecs import decode_mp4
from dataset.core.conventions import load_matrix3d_cameras
from dataset.store.reader import PanoDataset

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_cache_train_generate_evaluate(tmp_path, local_ray, capsys):
    from dataset.core.jobspec import parse_job_spec
    from dataset.jobs.build import run_build
    from inference.wan import save_tiny

    data = tmp_path / "ds"
    run_build(parse_job_spec({"scenes": ["procedural:room:6x8x3"], "resolution": [128, 64], "frames_per_clip": 5,
                              "trajectories_per_scene": 2}), data, workers=2, progress=False)
    model = save_tiny(tmp_path / "wan")
    cache = tmp_path / "cache"
    assert main(["cache-latents", str(data), "--model", str(model), "--out", str(cache), "--workers", "1"]) == 0
    counts = json.loads((cache / "manifest.json").read_text())["counts"]
    assert counts["clips"] == 2 and counts["failed"] == 0

    config = yaml.safe_load((REPO / "configs/train_video_tiny.yaml").read_text())
    (tmp_path / "train.yaml").write_text(yaml.safe_dump({**config, "model": str(model)}))
    run = tmp_path / "run"
    assert main(["train-video", str(tmp_path / "train.yaml"), "--data", str(cache), "--out", str(run),
                 "--steps", "4"]) == 0
    capsys.readouterr()
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2, 3, 4] and all(np.isfinite(s["loss"]) for s in steps)

    clip = next(PanoDataset(data).clips())
    outs = {}
    for name in ("a", "b"):
        outs[name] = tmp_path / f"gen-{name}"
        assert main(["generate", "--from-clip", str(data), clip.clip_id, "--prompt", "a room", "--model", str(model),
                     "--lora", str(run), "--steps", "2", "--cfg", "3", "--seed", "7", "--quiet",
                     "--out", str(outs[name])]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["frames"] == 5 and line["lora_format"] == "diffusers"
    a, b = (decode_mp4((outs[n] / "video.mp4").read_bytes()) for n in ("a", "b"))
    assert a.shape == (5, 64, 128, 3) and np.array_equal(a, b), "same seed, same video"
    cams = load_matrix3d_cameras(outs["a"] / "cameras.json")
    assert np.allclose(cams, np.linalg.inv(clip.c2w[0])[None] @ clip.c2w, atol=1e-9)

    metrics = tmp_path / "metrics.json"
    assert main(["eval-video", "--pred", str(outs["a"]), "--gt", str(data), "--out", str(metrics)]) == 0
    m = json.loads(metrics.read_text())
    assert m["clips"] == 1 and m["frames"] == 5 and 0 < m["psnr"] < 100 and -1 <= m["ssim"] < 1
