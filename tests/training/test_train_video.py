"""train-video on the tiny Wan model, CPU: overfitting, LoRA round trip through diffusers, resume, the CLI on a
latent cache, and 2-process torchrun (gloo) runs, DDP and FSDP2 (checkpointed and resumed), against the
single-process loss curve."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from dataset.cli import main
from dataset.core.jobspec import load_yaml_spec
from dataset.store.shards import next_shard_number
from inference.condition import ConditionSpec, encode_condition, encode_video, read_condition_spec, to_pixels
from inference.wan import load_wan
from training.latent_cache import cache_row, cache_writer
from training.video import (
    ADAPTER_FILE,
    CHECKPOINTS,
    LORA_FILE,
    METRICS_FILE,
    LoraSpec,
    TrainVideoError,
    TrainVideoSpec,
    add_lora,
    train_video,
)

REPO = Path(__file__).resolve().parents[2]
SPEC = ConditionSpec(frame0="panorama")
TENSORS = ("latents", "condition", "text", "image")


def _clip(phase: float, frames: int = 5, height: int = 32, width: int = 64) -> np.ndarray:
    """A smooth panoramic test video (F, H, W, 3) uint8 that drifts sideways."""
    v, u = np.mgrid[0:height, 0:width]
    video = [np.stack([127 + 100 * np.sin(2 * np.pi * u / width + 0.4 * f + phase + c) * np.cos(np.pi * v / height)
                       for c in range(3)], -1) for f in range(frames)]
    return np.clip(video, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def samples() -> list[dict]:
    """Two contract samples encoded by the tiny model (guidance = the clip with its left quarter unknown)."""
    components = load_wan("tiny")
    out = []
    for i, prompt in enumerate(("a living room with a sofa", "a kitchen with a metal sink")):
        video = _clip(1.7 * i)
        mask = np.ones(video.shape[:3], np.float32)
        mask[1:, :, : video.shape[2] // 4] = 0
        cond = encode_condition(components, video, mask, video[0], prompt, SPEC)
        latents = encode_video(components.vae, to_pixels(video), SPEC.seam_pad_px)
        out.append({"clip_id": f"clip-{i}", "latents": latents[0], "condition": cond.condition[0],
                    "text": cond.prompt_embeds[0], "image": cond.image_embeds[0]})
    return out


def _spec(**kw) -> TrainVideoSpec:
    base = {"lora": {"rank": 4, "alpha": 8}, "optimiser": {"lr": 1e-2}, "batch_size": 2, "precision": "fp32",
            "gradient_checkpointing": True, "log_every": 100, "checkpoint_every": 100}
    return TrainVideoSpec.model_validate({**base, **kw})


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]


@pytest.fixture(scope="module")
def overfit_run(samples, tmp_path_factory):
    out = tmp_path_factory.mktemp("overfit")
    spec = _spec(steps=60, overfit_batch=True, optimiser={"lr": 3e-2})
    result = train_video(spec, data=samples, condition=SPEC, out=out)
    return out, result


def test_overfits_one_batch(overfit_run):
    out, result = overfit_run
    rows = _metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 61))
    assert rows[-1]["loss"] < 0.6 * rows[0]["loss"], (rows[0]["loss"], rows[-1]["loss"])
    assert result.losses == pytest.approx([r["loss"] for r in rows])
    assert read_condition_spec(out) == SPEC
    assert json.loads((out / "train_spec.json").read_text())["lora"] == {"rank": 4, "alpha": 8.0,
                                                                          "targets": list(LoraSpec().targets)}


def _forward_kwargs(sample: dict) -> dict:
    return {"hidden_states": torch.cat([sample["latents"], sample["condition"]])[None],
            "timestep": torch.tensor([500.0]), "encoder_hidden_states": sample["text"][None],
            "encoder_hidden_states_image": sample["image"][None], "return_dict": False}


def test_saved_lora_reloads_bit_exactly_into_a_fresh_pipeline(overfit_run, samples):
    from peft.utils import set_peft_model_state_dict

    out, _ = overfit_run
    trained = load_file(out / CHECKPOINTS / "step-60" / ADAPTER_FILE)
    assert load_file(out / LORA_FILE).keys() == {f"transformer.{k}" for k in trained}
    assert not any("add_k_proj" in k for k in trained)  # image K/V frozen by default (Matrix-3D's targets)
    pipe = load_wan("tiny").pipeline()
    pipe.load_lora_weights(out)
    loaded = {name.replace(".default_0.", "."): p.detach() for name, p in pipe.transformer.named_parameters()
              if "lora_" in name}
    for key, value in trained.items():
        assert torch.equal(loaded.pop(key), value), key
    # diffusers pads an I2V LoRA without image K/V with zero A/B layers there (a no-op): nothing else is loaded
    assert loaded and all(("add_k_proj" in k or "add_v_proj" in k) and not v.any() for k, v in loaded.items())
    assert list(pipe.transformer.get_submodule("blocks.0.attn1.to_q").scaling.values()) == [8 / 4]  # alpha / r
    reference = load_wan("tiny").transformer  # the trained adapter as the training loop held it
    add_lora(reference, LoraSpec(rank=4, alpha=8))
    set_peft_model_state_dict(reference, trained)
    kwargs = _forward_kwargs(samples[0])
    with torch.no_grad():
        assert torch.equal(pipe.transformer(**kwargs)[0], reference(**kwargs)[0])


def test_untrained_lora_is_a_no_op_and_bad_targets_are_named(samples):
    transformer = load_wan("tiny").transformer
    kwargs = _forward_kwargs(samples[0])
    before = transformer(**kwargs)[0]
    params = add_lora(transformer, LoraSpec(rank=4))
    assert params and all(p.dtype == torch.float32 and p.requires_grad for p in params)
    assert torch.equal(transformer(**kwargs)[0], before)
    with pytest.raises(ValueError, match="lora target 'q_proj' matches no module"):
        add_lora(load_wan("tiny").transformer, LoraSpec(targets=["q_proj"]))


def test_resume_continues_from_the_checkpoint(samples, tmp_path):
    out = tmp_path / "run"
    spec = _spec(steps=5, checkpoint_every=2, keep_checkpoints=5)
    first = train_video(spec, data=samples, condition=SPEC, out=out)
    assert sorted(p.name for p in (out / CHECKPOINTS).iterdir()) == ["step-2", "step-4", "step-5"]
    shutil.rmtree(out / CHECKPOINTS / "step-5")  # as if the run died after logging step 5
    again = train_video(spec.model_copy(update={"steps": 7}), data=samples, condition=SPEC, out=out)
    assert again.resumed_from == 4 and again.step == 7
    rows = _metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 8))
    assert again.losses[0] == pytest.approx(first.losses[4], rel=1e-5)  # step 5 redone exactly
    with pytest.raises(TrainVideoError, match="different lora"):
        train_video(spec.model_copy(update={"lora": LoraSpec(rank=8)}), data=samples, condition=SPEC, out=out)


def _write_cache(folder: Path, samples: list[dict]) -> Path:
    """A latent cache as cache-latents lays it out (rows, committed shard, manifest, condition.json)."""
    writer = cache_writer(folder, rows_per_group=1)
    for s in samples:
        writer.add(cache_row(s["clip_id"], "scene", "accepted", 5, "", {n: s[n][None] for n in TENSORS}))
    writer.commit(next_shard_number(folder))
    (folder / "manifest.json").write_text(json.dumps({"job": "cache-latents", "model": "tiny",
                                                      "condition": SPEC.model_dump(mode="json")}))
    (folder / "condition.json").write_text(SPEC.model_dump_json())
    return folder


def test_cli_trains_on_a_latent_cache(samples, tmp_path, capsys):
    cache = _write_cache(tmp_path / "cache", samples)
    out = tmp_path / "out"
    assert main(["train-video", str(REPO / "configs/train_video_tiny.yaml"), "--data", str(cache), "--out", str(out),
                 "--steps", "3"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["step"] == 3 and line["out"] == str(out)
    assert [r["step"] for r in _metrics(out)] == [1, 2, 3]
    assert read_condition_spec(out) == SPEC and (out / LORA_FILE).is_file()
    assert main(["train-video", str(REPO / "configs/train_video_tiny.yaml"), "--out", str(tmp_path / "o2")]) == 2
    assert "no training data" in capsys.readouterr().err


def test_configs_validate():
    tiny = load_yaml_spec(REPO / "configs/train_video_tiny.yaml", TrainVideoSpec)
    real = load_yaml_spec(REPO / "configs/train_video_480p.yaml", TrainVideoSpec)
    assert tiny.model == "tiny" and real.lora.rank == 16 and real.lora.alpha == 16 and real.gradient_checkpointing


_WORKER = """
import sys
import torch.distributed
from safetensors.torch import load_file
from inference.condition import ConditionSpec
from training.video import TrainVideoSpec, train_video
flat = load_file(sys.argv[1])
samples = [{"clip_id": str(i), **{n: flat[f"{i}.{n}"] for n in ("latents", "condition", "text", "image")}}
           for i in range(int(sys.argv[2]))]
spec = TrainVideoSpec.model_validate_json(open(sys.argv[3]).read())
condition = ConditionSpec.model_validate_json(sys.argv[4])
torch.distributed.init_process_group("gloo")  # one group for the three runs (train_video then joins it as is)
train_video(spec, data=samples, condition=condition, out=sys.argv[5])
fsdp = spec.model_copy(update={"sharding": "fsdp", "checkpoint_every": 2})
train_video(fsdp.model_copy(update={"steps": 4}), data=samples, condition=condition, out=sys.argv[5] + "-fsdp")
train_video(fsdp, data=samples, condition=condition, out=sys.argv[5] + "-fsdp")  # resumed from its step 4
torch.distributed.destroy_process_group()
"""


@pytest.mark.slow
def test_torchrun_two_processes_match_one(samples, tmp_path):
    spec = _spec(steps=6, batch_size=2, shuffle=True, optimiser={"lr": 1e-3})
    single = train_video(spec, data=samples, condition=SPEC, out=tmp_path / "one")
    save_file({f"{i}.{n}": s[n].contiguous() for i, s in enumerate(samples) for n in TENSORS}, tmp_path / "data.st")
    (tmp_path / "spec.json").write_text(spec.model_dump_json())
    (tmp_path / "worker.py").write_text(_WORKER)
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(tmp_path / "worker.py"),
                           str(tmp_path / "data.st"), str(len(samples)), str(tmp_path / "spec.json"),
                           SPEC.model_dump_json(), str(tmp_path / "two")],
                          env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = [r["loss"] for r in _metrics(tmp_path / "two")]
    assert len(two) == 6
    print("losses, 1 process:", single.losses, "2 processes:", two)
    assert two[0] == pytest.approx(single.losses[0], rel=1e-6)  # same weights, same global batch and noise
    np.testing.assert_allclose(two, single.losses, rtol=1e-5)  # gloo all-reduce vs one mean: rounding only
    a = load_file(tmp_path / "one" / LORA_FILE)
    for run in ("two", "two-fsdp"):
        b = load_file(tmp_path / run / LORA_FILE)
        assert a.keys() == b.keys(), run
        diff = max(float((a[k] - b[k]).abs().max()) for k in a)
        print(run, "max LoRA weight difference:", diff)
        assert diff < 1e-5, run
    sharded = _metrics(tmp_path / "two-fsdp")  # FSDP2 over the 2 processes, checkpointed and resumed at step 4
    assert [r["step"] for r in sharded] == list(range(1, 7))
    np.testing.assert_allclose([r["loss"] for r in sharded], single.losses, rtol=1e-5)
    assert {p.name for p in (tmp_path / "two-fsdp" / CHECKPOINTS / "step-6").iterdir()} == {
        ADAPTER_FILE, "optimizer-rank-0.pt", "optimizer-rank-1.pt", "state.pt"}
