"""The latent cache: its storage and reader (fast, on hand-made caches), and ``matrix-pano cache-latents`` end to
end on a small built dataset with the tiny model (slow: a build, the tiny model and Ray actors)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dataset.cli import main
from dataset.runtime.failures import read_failures
from dataset.store.reader import PanoDataset
from dataset.store.shards import committed_shards, next_shard_number, scan_shards
from inference.condition import ConditionSpec
from training.latent_cache import (
    CACHE_JOB,
    LatentCacheDataset,
    cache_row,
    cache_writer,
    tensor_bytes,
    tensor_from_bytes,
)

CLIP = {"latents": (16, 2, 8, 16), "condition": (20, 2, 8, 16), "text": (512, 32), "image": (17, 32)}
"""The contract's shapes for a 5-frame 64 x 128 clip with the tiny model."""


def _fake_cache(folder: Path, ids: list[str], spec: ConditionSpec | None = None, rows_per_group: int = 1) -> dict:
    """A cache folder written with the cache's own writer: random tensors of the contract's shapes; returns
    {clip id: {name: float32 tensor}}."""
    gen = torch.Generator().manual_seed(len(ids))
    stored = {}
    writer = cache_writer(folder, rows_per_group)
    for cid in ids:
        tensors = {n: torch.randn((1, *s), generator=gen) for n, s in CLIP.items()}
        writer.add(cache_row(cid, "scene", "accepted", 5, "a room", tensors))
        stored[cid] = {n: t[0] for n, t in tensors.items()}
    writer.commit(next_shard_number(folder))
    (folder / "manifest.json").write_text(json.dumps({
        "job": CACHE_JOB, "model": "tiny", "condition": (spec or ConditionSpec()).model_dump(mode="json")}))
    return stored


def test_tensors_round_trip_as_float16_and_overflow_is_refused():
    t = torch.linspace(-3, 3, 24).reshape(2, 3, 4)
    data, shape = tensor_bytes(t, "latents")
    assert shape == [2, 3, 4] and len(data) == 24 * 2
    back = tensor_from_bytes(data, shape)
    assert back.dtype == torch.float32 and torch.allclose(back, t, atol=2e-3)
    assert np.frombuffer(data, "<f2")[0] == np.float16(-3)  # little-endian float16
    with pytest.raises(ValueError, match="float16's range"):
        tensor_bytes(torch.tensor([1e6]), "text")
    with pytest.raises(ValueError, match="non-finite"):
        tensor_bytes(torch.tensor([float("nan")]), "text")
    with pytest.raises(ValueError, match="batch of one"):
        cache_row("c", "s", "accepted", 5, "", {n: torch.zeros((2, *s)) for n, s in CLIP.items()})


def test_reader_yields_the_contract_and_splits_ranks_disjointly(tmp_path):
    stored = _fake_cache(tmp_path / "a", [f"clip-{i}" for i in range(5)])
    stored |= _fake_cache(tmp_path / "b", ["clip-x", "clip-y"])
    dirs = [tmp_path / "a", tmp_path / "b"]
    full = list(LatentCacheDataset(dirs, rank=0, world_size=1))
    assert [s["clip_id"] for s in full] == list(stored) and len(LatentCacheDataset(dirs)) == 7
    for sample in full:
        assert set(sample) == {"clip_id", *CLIP}
        for name, shape in CLIP.items():
            assert sample[name].dtype == torch.float32 and tuple(sample[name].shape) == shape
            assert torch.allclose(sample[name], stored[sample["clip_id"]][name], atol=4e-3, rtol=1e-3)
    parts = [[s["clip_id"] for s in LatentCacheDataset(dirs, rank=r, world_size=3, shuffle=True, seed=1)]
             for r in range(3)]
    assert sorted(sum(parts, [])) == sorted(stored) and all(parts)
    again = LatentCacheDataset(dirs, rank=0, world_size=3, shuffle=True, seed=1)
    assert [s["clip_id"] for s in again] == parts[0]
    again.set_epoch(1)
    assert len(list(again)) >= 1


def test_reader_refuses_caches_built_with_different_condition_specs(tmp_path):
    _fake_cache(tmp_path / "a", ["a"])
    _fake_cache(tmp_path / "b", ["b"], ConditionSpec(frame0="panorama"))
    assert LatentCacheDataset([tmp_path / "b"]).spec.frame0 == "panorama"
    with pytest.raises(ValueError, match="different condition specs"):
        LatentCacheDataset([tmp_path / "a", tmp_path / "b"])
    (tmp_path / "c").mkdir()
    with pytest.raises(FileNotFoundError, match="not a latent cache"):
        LatentCacheDataset([tmp_path / "c"])


# --------------------------------------------------------------------------------------- end to end


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cached(tmp_path_factory, local_ray):
    """A 5-frame 128 x 64 dataset (2 clips) plus one 6-frame clip, the tiny model as a folder, and the cache of
    it made through the CLI: (dataset, model folder, cache, exit status, input digest before)."""
    from dataset.core.jobspec import parse_job_spec
    from dataset.jobs.build import run_build
    from dataset.store.shards import commit_table, read_committed_table
    from inference.wan import save_tiny

    root = tmp_path_factory.mktemp("latent_cache")
    base = {"scenes": ["procedural:room:6x8x3"], "resolution": [128, 64],
            "output": {"shard_size_mb": 0.001, "rows_per_group": 1}}
    run_build(parse_job_spec({**base, "trajectories_per_scene": 2, "frames_per_clip": 5}), root / "ds", workers=2,
              progress=False)
    run_build(parse_job_spec({**base, "trajectories_per_scene": 1, "frames_per_clip": 6}), root / "six", workers=2,
              progress=False)
    (shard, marker), = committed_shards(root / "six")
    commit_table(root / "ds" / "shards", next_shard_number(root / "ds"), read_committed_table(shard, marker), 1)
    model = save_tiny(root / "wan")
    before = _tree_digest(root / "ds")
    status = main(["cache-latents", str(root / "ds"), "--model", str(model), "--out", str(root / "cache"),
                   "--workers", "2"])
    return root / "ds", model, root / "cache", status, before, marker["clip_ids"][0]


@pytest.mark.slow
def test_cache_reads_back_with_the_contract_shapes(cached):
    ds, _, cache, status, _, six = cached
    assert status == 1  # partial: the 6-frame clip could not be cached
    samples = list(LatentCacheDataset([cache]))
    assert len(samples) == 2 and six not in {s["clip_id"] for s in samples}
    for sample in samples:
        assert {n: tuple(sample[n].shape) for n in CLIP} == CLIP
        assert all(torch.isfinite(sample[n]).all() for n in CLIP)
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["source"] == str(ds.resolve()) and manifest["shapes"] == {n: [list(s)] for n, s in CLIP.items()}
    assert ConditionSpec.model_validate_json((cache / "condition.json").read_text()) == ConditionSpec()
    assert not scan_shards(cache, checksums=True).damaged


@pytest.mark.slow
def test_stored_sample_equals_the_condition_encoded_directly(cached):
    from inference.condition import encode_condition, encode_video, to_pixels
    from inference.guidance import guidance_poses, inputs_from_clip, panorama_mesh, render_guidance
    from inference.wan import load_wan

    ds, model, cache, *_ = cached
    sample = next(iter(LatentCacheDataset([cache])))
    inputs = inputs_from_clip(ds, sample["clip_id"])
    clip = next(c for c in PanoDataset(ds).clips() if c.clip_id == sample["clip_id"])
    guidance, mask = render_guidance(panorama_mesh(inputs.rgb, inputs.depth, inputs.c2w), guidance_poses(inputs),
                                     inputs.rgb.shape[1])
    components = load_wan(model, device="cpu")
    direct = encode_condition(components, guidance, mask, inputs.rgb, clip.row["caption"] or "", ConditionSpec())
    target = encode_video(components.vae, to_pixels(clip.frames()), ConditionSpec().seam_pad_px)
    expected = {"latents": target, "condition": direct.condition, "text": direct.prompt_embeds,
                "image": direct.image_embeds}
    for name, value in expected.items():
        value = value[0].float()
        assert torch.allclose(sample[name], value, rtol=1e-3, atol=1e-3 * float(value.abs().max())), name
    assert sample["condition"][:4].min() >= 0 and sample["condition"][:4].max() <= 1  # the mask channels


@pytest.mark.slow
def test_rerun_is_a_no_op_and_the_input_is_untouched(cached, capsys):
    ds, model, cache, _, before, _ = cached
    shards = _tree_digest(cache / "shards")
    status = main(["cache-latents", str(ds), "--model", str(model), "--out", str(cache)])
    assert status == 1 and "(0 now)" in capsys.readouterr().err
    assert _tree_digest(cache / "shards") == shards
    assert _tree_digest(ds) == before
    # other settings on the same cache are refused with one line, not mixed in
    assert main(["cache-latents", str(ds), "--model", str(model), "--out", str(cache), "--frame0", "panorama"]) == 2
    assert "different settings" in capsys.readouterr().err


@pytest.mark.slow
def test_a_clip_with_a_wrong_frame_count_is_recorded_not_fatal(cached):
    _, _, cache, _, _, six = cached
    failures = read_failures(cache)
    assert [f["clip_id"] for f in failures] == [six]
    assert "6 frames" in failures[0]["error"] and "4k+1" in failures[0]["error"]
    assert "--frames" in failures[0]["error"]


@pytest.mark.slow
def test_frames_takes_the_first_frames_of_longer_clips(cached, tmp_path):
    ds, model, _, _, _, six = cached
    out = tmp_path / "cache5"
    assert main(["cache-latents", str(ds), "--model", str(model), "--out", str(out), "--frames", "5",
                 "--seam-pad-px", "16", "--workers", "1"]) == 0
    samples = {s["clip_id"]: s for s in LatentCacheDataset([out])}
    assert len(samples) == 3 and tuple(samples[six]["latents"].shape) == CLIP["latents"]
    assert LatentCacheDataset([out]).spec.seam_pad_px == 16 and not read_failures(out)
    shutil.rmtree(out)


@pytest.mark.slow
def test_augmented_cache_holds_the_clean_row_and_a_named_variant_per_clip(cached, tmp_path):
    import pyarrow.parquet as pq

    from training.augment import AugmentSpec
    from training.cache_job import CacheSpec, run_cache
    from training.latent_cache import TENSORS

    ds, model, clean_cache, *_ = cached
    out = tmp_path / "augmented"
    spec = CacheSpec(model=str(model), augment=AugmentSpec(copies=1))
    assert main(["cache-latents", str(ds), "--model", str(model), "--out", str(out), "--augment-copies", "1",
                 "--workers", "1"]) == 1  # partial: the 6-frame clip is recorded, as without augmentation
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert counts["clips"] == 2 and counts["rows"] == 4 and counts["cached_now"] == 2
    again = run_cache(ds, out, spec, progress=False)  # resumed by clip id: nothing left to do
    assert again["cached_now"] == 0 and again["rows"] == 4 and not scan_shards(out).damaged

    def rows_of(folder: Path) -> dict[str, list[dict]]:
        rows: dict[str, list[dict]] = {}
        for shard, _ in committed_shards(folder):
            for row in pq.read_table(shard).to_pylist():
                rows.setdefault(row["clip_id"], []).append(row)
        return rows

    clean, augmented = rows_of(clean_cache), rows_of(out)
    assert set(augmented) == set(clean) and all(len(r) == 2 for r in augmented.values())
    for clip_id, (row, variant) in augmented.items():
        (reference,) = clean[clip_id]
        assert row == reference, "the clean row is the one cached without augmentation"
        applied = json.loads(variant["augment"])
        assert applied["variant"] == 1 and set(applied) == {"variant", "roll_px", "depth_factor", "depth_noise",
                                                             "erosion_px"}
        assert 0 <= applied["roll_px"] < 128 and 0 <= applied["erosion_px"] <= 2
        assert [variant[f"{n}_shape"] for n in TENSORS] == [row[f"{n}_shape"] for n in TENSORS]
        assert variant["condition"] != row["condition"] and variant["prompt"] == row["prompt"]
    assert len(list(LatentCacheDataset([out]))) == 4
