"""The latent cache: training samples of the panoramic video model, precomputed per clip (``matrix-pano
cache-latents``, ``training.cache_job``), and ``LatentCacheDataset``, the PyTorch dataset that training reads.

A cache folder is a companion of a built dataset, keyed by ``clip_id``::

    CACHE/
      manifest.json                source dataset, model (folder or "tiny"), ConditionSpec, shapes, counts
      condition.json               the ConditionSpec the condition was built with (``inference.condition``)
      shards/part-NNNNN.parquet    one row per clip, plus one per augmented variant (``CACHE_SCHEMA``)
      shards/part-NNNNN.json       commit markers, the build's protocol (``dataset.store.shards``)
      failures.parquet             clips that could not be cached, with the reason

Tensors are stored without their batch dimension as little-endian float16 bytes (``<f2``, C order) beside an
int32 shape column: ``latents`` (16, F_lat, h, w) normalised VAE latents of the clip's frames, ``condition``
(20, F_lat, h, w) = mask 4 | condition latents 16, ``text`` (512, D_text) umT5 embedding of the caption,
``image`` (N_img, D_img) image tokens of frame 0 under the frame-0 policy. Values beyond float16's range are
refused when a row is made (never stored as inf). The reader gives them back as float32 tensors.

A clip cached with augmentation (``CacheSpec.augment``, ``training.augment``) has several rows under its id: the
clean one (``augment`` = ``""``) and its variants (``augment`` = the JSON of what was applied: variant index, yaw
roll in columns, depth factor and noise, mask erosion in px), all in one shard; the reader yields each row as a
sample.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from dataset.store.shards import ShardWriter, committed_shards, read_manifest
from inference.condition import ConditionSpec
from training.torch_dataset import RowGroupDataset

TENSORS = ("latents", "condition", "text", "image")
"""The stored tensors, in schema order; each has a ``NAME`` bytes column and a ``NAME_shape`` column."""
STORAGE_DTYPE = np.dtype("<f2")
"""How tensors are stored: little-endian IEEE float16."""
CACHE_JOB = "cache-latents"
"""The job name in the cache's lock file and error messages."""

CACHE_SCHEMA = pa.schema(
    [("clip_id", pa.string()), ("scene_id", pa.string()), ("status", pa.string()), ("num_frames", pa.int32()),
     ("prompt", pa.string()), ("augment", pa.string())]
    + [field for name in TENSORS for field in ((name, pa.binary()), (f"{name}_shape", pa.list_(pa.int32())))])
"""One row per cached clip and augmented variant: its id, scene and status copied from the source dataset, the
frames it was cached from, the prompt its text embedding is of (the clip's caption; ``""`` = the empty prompt),
the augmentation applied (``""`` = the clean clip, else a JSON object, see ``training.augment``), and the
tensors."""


def tensor_bytes(tensor: torch.Tensor, name: str) -> tuple[bytes, list[int]]:
    """(float16 little-endian bytes, shape) of ``tensor``; ``ValueError`` if it has non-finite values or values
    float16 cannot hold."""
    array = tensor.detach().to("cpu", torch.float32).numpy()
    if not np.isfinite(array).all():
        raise ValueError(f"{name} has non-finite values (the model produced inf/nan)")
    peak = float(np.abs(array).max(initial=0.0))
    if peak > float(np.finfo(np.float16).max):
        raise ValueError(f"{name} has values up to {peak:.3g}, beyond float16's range: the cache cannot store them")
    return np.ascontiguousarray(array, STORAGE_DTYPE).tobytes(), list(array.shape)


def tensor_from_bytes(data: bytes, shape: list[int]) -> torch.Tensor:
    """The float32 tensor of stored bytes and shape."""
    array = np.frombuffer(data, STORAGE_DTYPE)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"stored tensor has {array.size} values, its shape {shape} needs {int(np.prod(shape))}")
    return torch.from_numpy(array.reshape(shape).astype(np.float32))


def cache_row(clip_id: str, scene_id: str, status: str, num_frames: int, prompt: str,
              tensors: dict[str, torch.Tensor], augment: str = "") -> dict:
    """The ``CACHE_SCHEMA`` row of one clip (or one augmented variant of it: ``augment`` the JSON of what was
    applied); ``tensors`` maps each of ``TENSORS`` to its tensor with a batch dimension of 1, as the encoders
    return them (stored without it)."""
    missing = [n for n in TENSORS if n not in tensors]
    if missing:
        raise ValueError(f"cache row of {clip_id} lacks {', '.join(missing)}")
    row = {"clip_id": clip_id, "scene_id": scene_id, "status": status, "num_frames": int(num_frames),
           "prompt": prompt, "augment": augment}
    for name in TENSORS:
        t = tensors[name]
        if t.ndim < 2 or t.shape[0] != 1:
            raise ValueError(f"{name} of {clip_id} has shape {tuple(t.shape)}: expected a batch of one clip")
        row[name], row[f"{name}_shape"] = tensor_bytes(t[0], name)
    return row


def cache_writer(out: str | Path, rows_per_group: int = 4) -> ShardWriter:
    """A shard writer of ``out/shards`` with the cache schema (commit it with ``next_shard_number(out)``)."""
    return ShardWriter(Path(out) / "shards", rows_per_group, schema=CACHE_SCHEMA)


def read_cache_manifest(folder: str | Path) -> dict:
    """A cache folder's ``manifest.json``; ``FileNotFoundError`` naming the folder if it is not a latent cache."""
    manifest = read_manifest(folder)
    if manifest.get("job") != CACHE_JOB:
        raise FileNotFoundError(f"{folder} is not a latent cache (no manifest.json written by matrix-pano "
                                f"cache-latents): run `matrix-pano cache-latents DATASET --out {folder}` first")
    return manifest


class LatentCacheDataset(RowGroupDataset):
    """Cached samples as dicts: ``clip_id`` str and float32 tensors ``latents`` (16, F_lat, h, w), ``condition``
    (20, F_lat, h, w), ``text`` (512, D_text), ``image`` (N_img, D_img).

    Work is split by Parquet row group over every committed shard of ``dirs`` (in order): each (rank,
    DataLoader worker) pair reads a disjoint, deterministic subset, so one epoch over all of them yields every
    row exactly once (each clip and each of its augmented variants; ``training.torch_dataset``'s scheme). Every
    cache must have been built with the same ConditionSpec and model (``spec``, ``model``), so that the samples
    agree with each other and with inference.
    """

    def __init__(self, dirs: list[str | Path], rank: int | None = None, world_size: int | None = None,
                 shuffle: bool = False, seed: int = 0) -> None:
        if isinstance(dirs, (str, Path)):
            dirs = [dirs]
        if not dirs:
            raise ValueError("LatentCacheDataset needs at least one cache folder")
        self.dirs = [Path(d) for d in dirs]
        manifests = [read_cache_manifest(d) for d in self.dirs]
        specs = {json.dumps(m["condition"], sort_keys=True) for m in manifests}
        models = {m["model"] for m in manifests}
        if len(specs) > 1 or len(models) > 1:
            raise ValueError(f"caches {', '.join(map(str, self.dirs))} were built with different condition specs or "
                             f"models ({', '.join(sorted(models))}): cache every dataset with the same settings")
        self.spec = ConditionSpec.model_validate(manifests[0]["condition"])
        """The ConditionSpec every cache was built with (train-video records it beside its checkpoints)."""
        self.model = manifests[0]["model"]
        """The model folder (or ``tiny``) the caches were encoded with."""
        super().__init__([p for d in self.dirs for p, _ in committed_shards(d)], shuffle, seed, rank, world_size)

    def __len__(self) -> int:
        """Cached samples (rows: clips and their augmented variants) in all caches (all ranks together)."""
        return sum(pq.ParquetFile(p).metadata.num_rows for p in dict.fromkeys(p for p, _ in self.units))

    def __iter__(self) -> Iterator[dict]:
        columns = ["clip_id"] + [c for n in TENSORS for c in (n, f"{n}_shape")]
        for shard, group in self.my_units():
            for row in pq.ParquetFile(shard).read_row_group(group, columns=columns).to_pylist():
                yield {"clip_id": row["clip_id"],
                       **{n: tensor_from_bytes(row[n], row[f"{n}_shape"]) for n in TENSORS}}
