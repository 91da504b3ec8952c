"""The PyTorch dataset: every clip once per epoch across DataLoader workers and ranks, decoded tensors."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader  # noqa: E402

from dataset.store.reader import PanoDataset  # noqa: E402
from training.torch_dataset import PanoClipDataset  # noqa: E402


def test_one_epoch_over_workers_yields_every_clip_once(small_dataset):
    ids = sorted(c.clip_id for c in PanoDataset(small_dataset).clips())
    loader = DataLoader(PanoClipDataset(small_dataset), batch_size=None, num_workers=2)
    seen = [s["clip_id"] for s in loader]
    assert sorted(seen) == ids and len(ids) == 4


def test_ranks_split_the_work_disjointly(small_dataset, monkeypatch):
    parts = []
    for rank in range(3):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "3")
        parts.append({s["clip_id"] for s in PanoClipDataset(small_dataset, with_frames=False, with_depth=False)})
    assert sum(len(p) for p in parts) == len(set().union(*parts)) == 4
    explicit = {s["clip_id"] for s in PanoClipDataset(small_dataset, rank=1, world_size=3, with_frames=False)}
    assert explicit == parts[1]
    with pytest.raises(ValueError, match="outside world size"):
        list(PanoClipDataset(small_dataset, rank=3, world_size=3))


def test_samples_are_decoded_tensors_matching_the_reader(small_dataset):
    ds = PanoClipDataset(small_dataset, scene="procedural:room:6x8x3", shuffle=True, seed=1)
    samples = list(ds)
    assert len(samples) == 2
    s = samples[0]
    clip = next(c for c in PanoDataset(small_dataset).clips() if c.clip_id == s["clip_id"])
    assert s["frames"].shape == (6, 64, 128, 3) and s["frames"].dtype == torch.uint8
    assert torch.equal(s["frames"], torch.from_numpy(clip.frames()))
    assert torch.equal(s["depth"], torch.from_numpy(clip.depth()))
    assert s["c2w"].shape == (6, 4, 4) and s["caption"] == ""
    ds.set_epoch(1)
    assert sorted(x["clip_id"] for x in ds) == sorted(x["clip_id"] for x in samples)
