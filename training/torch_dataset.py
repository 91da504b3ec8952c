"""A PyTorch ``IterableDataset`` over a built dataset's committed shards.

Work is split by Parquet row group (a few clips each): every (rank, DataLoader worker) pair reads a
disjoint, deterministic subset, so one epoch over all ranks and workers yields every clip exactly once.
The rank and world size come from ``torch.distributed`` when it is initialised, else from Ray Train's
context, else from the ``RANK``/``WORLD_SIZE`` environment variables, else (0, 1); pass them to override.

    loader = DataLoader(PanoClipDataset("DIR", status="accepted"), batch_size=None, num_workers=4)
    for clip in loader: clip["frames"]  # (T, H, W, 3) uint8 tensor
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from dataset.store.reader import Clip, PanoDataset, filter_rows


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) of this process in DDP, Ray Train or a torchrun-style environment."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    try:
        from ray import train

        ctx = train.get_context()
        if ctx.get_world_size() > 1:
            return ctx.get_world_rank(), ctx.get_world_size()
    except Exception:  # not inside a Ray Train worker (or Ray Train not installed)
        pass
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class RowGroupDataset(IterableDataset):
    """An iterable dataset over the row groups of Parquet shards, split between ranks and DataLoader workers as
    the module doc says; subclasses iterate ``my_units()``."""

    def __init__(self, shards: list[str | Path], shuffle: bool = False, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None) -> None:
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.rank, self.world_size = rank, world_size
        self.units = [(str(p), g) for p in shards for g in range(pq.ParquetFile(p).num_row_groups)]
        """(shard path, row group) work units in a fixed order."""

    def set_epoch(self, epoch: int) -> None:
        """Change the shuffle order (call before each epoch, as with DistributedSampler)."""
        self.epoch = epoch

    def my_units(self) -> list[tuple[str, int]]:
        """The row groups this rank and DataLoader worker read."""
        auto_rank, auto_world = distributed_rank()
        rank = auto_rank if self.rank is None else self.rank
        world = auto_world if self.world_size is None else self.world_size
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is outside world size {world}")
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        units = list(self.units)
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(units)
        return units[rank * workers + worker :: world * workers]


class PanoClipDataset(RowGroupDataset):
    """Clips as dicts of tensors: ``frames`` (T, H, W, 3) uint8, ``depth`` (T, H, W) float32 metres,
    ``c2w`` (T, 4, 4) float64, plus ``clip_id``, ``scene_id``, ``caption``, ``status``."""

    def __init__(self, path: str | Path, status: str | None = None, scene: str | None = None,
                 with_frames: bool = True, with_depth: bool = True, shuffle: bool = False, seed: int = 0,
                 rank: int | None = None, world_size: int | None = None) -> None:
        super().__init__(PanoDataset(path).shards, shuffle, seed, rank, world_size)
        self.path = Path(path)
        self.status, self.scene = status, scene
        self.with_frames, self.with_depth = with_frames, with_depth

    def __iter__(self) -> Iterator[dict]:
        for shard, group in self.my_units():
            table = filter_rows(pq.ParquetFile(shard).read_row_group(group), self.status, self.scene)
            for row in table.to_pylist():
                yield self._sample(row)

    def _sample(self, row: dict) -> dict:
        clip = Clip(row)
        sample = {"clip_id": row["clip_id"], "scene_id": row["scene_id"], "caption": row["caption"] or "",
                  "status": row["status"], "c2w": torch.from_numpy(clip.c2w)}
        if self.with_frames:
            sample["frames"] = torch.from_numpy(clip.frames())
        if self.with_depth:
            sample["depth"] = torch.from_numpy(clip.depth())
        return sample
