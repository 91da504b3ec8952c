"""``matrix-pano cache-latents DATASET --model PATH|tiny --out CACHE``: every committed clip of a dataset becomes
a training sample of the panoramic video model, in a latent cache (``training.latent_cache``).

Per clip (``cache_clip``): its first ``frames`` frames (all by default), the guidance video and mask along the
clip's own poses rendered from its frame-0 panorama and depth (``inference.guidance``, CPU, Embree), then with the
model the normalised VAE latents of the clip's frames (the target) and ``encode_condition`` under the
``ConditionSpec`` (condition, image embedding of frame 0, text embedding of the caption; an empty caption is the
empty prompt). Frame counts must be 4k+1 and sizes multiples of 16: a clip that is not (or that has fewer frames
than ``frames``) is recorded in ``CACHE/failures.parquet`` with the reason and the job goes on; ``frames`` takes
the first N frames of longer clips, never rounds. With ``augment.copies`` = n (``training.augment``) each clip
gives n + 1 rows: the clean one, then n variants (frames rolled in yaw with the poses, guidance from jittered depth,
mask eroded), each drawn deterministically from (augment seed, clip id, variant index) and named in the row's
``augment`` column.

Work is spread over Ray actors (``CacheWorker``), each holding the model: one per GPU when the cluster has
GPUs, else one per CPU. A task is one row group of an input shard (a few clips); the driver writes the rows
into cache shards committed like the build's (temporary file, fsync, rename, marker), all rows of a clip in the
same shard, so a rerun skips the clips already cached and redoes the rest. The input dataset is only read, and
the cache is locked while the job writes it. A rerun with other settings (model, spec, frames, augment) is refused
unless ``overwrite``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from pydantic import Field

from dataset.core.jobspec import JobError, StrictModel
from dataset.runtime.failures import read_failures, write_failures
from dataset.runtime.pool import READY, ActorPool
from dataset.runtime.progress import Progress
from dataset.runtime.ray import init_ray
from dataset.store.output import output_lock, prepare_output
from dataset.store.reader import Clip
from dataset.store.shards import (
    QUARANTINE,
    committed_clip_ids,
    committed_shards,
    next_shard_number,
    remove_debris,
    repair_shards,
    write_atomic,
)
from inference.condition import (
    ConditionSpec,
    check_video_size,
    encode_condition,
    encode_video,
    to_pixels,
    write_condition_spec,
)
from inference.guidance import DEFAULT_THRESHOLD, panorama_mesh, render_guidance
from inference.wan import TINY, load_wan
from training.augment import AugmentSpec, augment_inputs, erode_guidance, variant_rng
from training.latent_cache import CACHE_JOB, CACHE_SCHEMA, TENSORS, cache_row, cache_writer

_LIGHT = ["clip_id", "num_frames", "height", "width", "scene", "scene_id", "trajectory_id"]
"""The source columns the driver reads (never the videos)."""
CACHE_PARTS = ("vae", "text_encoder", "image_encoder")
"""The model parts a cache worker loads: encoders only, the transformer is not needed to cache."""
MAX_ATTEMPTS = 2
"""Tries of a row group whose worker died before it is given up (its clips recorded as failures)."""


class CacheError(JobError):
    """The latent cache cannot start or continue (bad input, output or model folder, changed settings)."""


class CacheSpec(StrictModel):
    """Settings of a latent cache; recorded in its manifest, a rerun with others is refused."""

    model: str
    """Wan2.1 I2V folder (diffusers or Wan-AI layout) or ``tiny``."""
    condition: ConditionSpec = ConditionSpec()
    """How the condition is built (frame-0 policy, seam padding, unknown fill); written as condition.json."""
    frames: int | None = Field(None, ge=1)
    """Cache the first N (4k+1) frames of each clip; None = all its frames (then they must be 4k+1)."""
    guidance_threshold: float = Field(DEFAULT_THRESHOLD, gt=0)
    """Relative depth variation above which a panorama pixel is an invisible edge in the guidance mesh."""
    shard_size_mb: float = Field(256.0, gt=0)
    """Cache shards are committed once they hold this many MB."""
    rows_per_group: int = Field(4, ge=1)
    """Rows per Parquet row group of the cache shards."""
    augment: AugmentSpec = AugmentSpec()
    """Augmented variants cached per clip besides the clean row (none by default)."""


def size_problem(num_frames: int, height: int, width: int, frames: int | None) -> str | None:
    """Why a clip of ``num_frames`` frames of ``height`` x ``width`` cannot be cached taking its first ``frames``
    (None = all) frames, or None when it can."""
    if frames is not None and num_frames < frames:
        return f"{num_frames} frames, fewer than --frames {frames}"
    try:
        check_video_size(num_frames if frames is None else frames, height, width)
    except ValueError as exc:
        return str(exc) + ("" if frames is not None else "; --frames N caches the first N frames of longer clips")
    return None


def cache_clip(components, clip: Clip, spec: CacheSpec) -> list[dict]:
    """The cache rows (``CACHE_SCHEMA``) of one clip: the clean row, then ``spec.augment.copies`` augmented
    ones; ``ValueError`` naming the problem if it cannot be cached."""
    frames, poses = clip.frames(), clip.c2w
    if problem := size_problem(*frames.shape[:3], spec.frames):
        raise ValueError(problem)
    if spec.frames is not None:
        frames, poses = frames[:spec.frames], poses[:spec.frames]
    depth0 = clip.depth()[0]
    rows = [_cache_variant(components, clip, spec, frames, poses, depth0)]
    for i in range(1, spec.augment.copies + 1):
        v = augment_inputs(frames, poses, depth0, spec.augment, variant_rng(spec.augment.seed, clip.clip_id, i))
        rows.append(_cache_variant(components, clip, spec, v.frames, v.c2w, v.depth0, v.erosion_px,
                                   json.dumps({"variant": i, **v.applied})))
    return rows


def _cache_variant(components, clip: Clip, spec: CacheSpec, frames: np.ndarray, poses: np.ndarray,
                   depth0: np.ndarray, erosion_px: int = 0, augment: str = "") -> dict:
    """The cache row of ``clip`` from these frames, poses and frame-0 depth: guidance along the poses from the
    frame-0 mesh (its mask eroded by ``erosion_px``), the target latents and the condition."""
    mesh = panorama_mesh(frames[0], depth0, poses[0], spec.guidance_threshold)
    guidance, mask = erode_guidance(*render_guidance(mesh, poses, frames.shape[2]), erosion_px)
    prompt = clip.row["caption"] or ""
    cond = encode_condition(components, guidance, mask.astype(np.float32), frames[0], prompt, spec.condition)
    latents = encode_video(components.vae, to_pixels(frames), spec.condition.seam_pad_px)
    return cache_row(clip.clip_id, clip.row["scene_id"], clip.row["status"], len(frames), prompt,
                     {"latents": latents, "condition": cond.condition, "text": cond.prompt_embeds,
                      "image": cond.image_embeds}, augment)


class CacheWorker:
    """Caches the clips of input row groups (wrapped as a Ray actor); holds the model between tasks."""

    def __init__(self, spec_json: str, src: str, device: str) -> None:
        self.spec = CacheSpec.model_validate_json(spec_json)
        self.src = Path(src)
        self.components = load_wan(self.spec.model, device=device, parts=CACHE_PARTS)  # no transformer

    def ready(self) -> bool:
        return True

    def cache_group(self, shard: str, group: int, clip_ids: list[str]) -> tuple[list[dict], dict[str, str]]:
        """Rows of the clips ``clip_ids`` of row group ``group`` of input shard ``shard`` (all rows of each
        clip, together), and {clip id: reason} of those that could not be cached."""
        table = pq.ParquetFile(self.src / "shards" / shard).read_row_group(group)
        wanted = set(clip_ids)
        rows, failed = [], {}
        for row in table.to_pylist():
            if row["clip_id"] not in wanted:
                continue
            try:
                with torch.inference_mode():
                    rows.extend(cache_clip(self.components, Clip(row), self.spec))
            except Exception as exc:  # one bad clip is recorded, the others go on
                failed[row["clip_id"]] = f"{type(exc).__name__}: {exc}"
        return rows, failed


def run_cache(src: str | Path, out: str | Path, spec: CacheSpec, ray_address: str | None = None,
              workers: int | None = None, overwrite: bool = False, progress: bool = True) -> dict:
    """Cache every committed clip of dataset ``src`` into ``out`` (resumable); returns the counts."""
    src, out = Path(src), Path(out)
    if spec.model != TINY and not Path(spec.model).expanduser().is_dir():
        raise CacheError(f"--model {spec.model}: no such folder; give a Wan2.1 I2V folder or 'tiny'")
    with output_lock(out, CACHE_JOB, error=CacheError):
        return _cache(src, out, spec, ray_address, workers, overwrite, progress)


def _settings(src: Path, spec: CacheSpec) -> dict:
    model = spec.model if spec.model == TINY else str(Path(spec.model).expanduser().resolve())
    return {**spec.model_dump(mode="json"), "model": model, "source": str(src.resolve())}


def _cache(src: Path, out: Path, spec: CacheSpec, ray_address: str | None, workers: int | None, overwrite: bool,
           progress: bool) -> dict:
    settings = _settings(src, spec)
    prepare_output(out, CACHE_JOB, settings=("cache_settings", settings), overwrite=overwrite, src=src,
                   outputs=("shards", QUARANTINE, "manifest.json", "failures.parquet", "condition.json"),
                   error=CacheError)
    quarantined = repair_shards(out)
    remove_debris(out)
    write_condition_spec(out, spec.condition)
    _write_manifest(out, settings, spec, [], None)  # the settings first: a rerun after a crash is checked too
    done = committed_clip_ids(out)
    units, total = [], 0
    failures: dict[str, dict] = {}
    for parquet, _ in committed_shards(src):
        f = pq.ParquetFile(parquet)
        for g in range(f.num_row_groups):
            todo = []
            for row in f.read_row_group(g, columns=_LIGHT).to_pylist():
                total += 1
                if row["clip_id"] in done:
                    continue
                if problem := size_problem(row["num_frames"], row["height"], row["width"], spec.frames):
                    failures[row["clip_id"]] = _failure(row, problem)  # known without a worker or the video
                else:
                    todo.append(row["clip_id"])
            if todo:
                units.append((parquet.name, g, todo))
    start = time.time()
    cached = 0
    try:
        if units:
            cached = _run_workers(src, out, spec, units, total, len(done), failures, ray_address, workers, progress)
    finally:
        write_failures(out, failures)
    shards = committed_shards(out)
    counts = {"clips": len(committed_clip_ids(out)), "rows": sum(m["rows"] for _, m in shards),
              "clips_total": total, "cached_now": cached,
              "failed": len(read_failures(out)), "shards": len(shards), "quarantined": len(quarantined),
              "seconds": round(time.time() - start, 2)}
    _write_manifest(out, settings, spec, shards, counts)
    return counts


def _write_manifest(out: Path, settings: dict, spec: CacheSpec, shards: list, counts: dict | None) -> None:
    """``out/manifest.json``: the settings, the source dataset, the model, the ConditionSpec, the storage dtype,
    each tensor's shapes and the counts (None until the job has run)."""
    manifest = {"job": CACHE_JOB, "cache_settings": settings, "source": settings["source"], "model": settings["model"],
                "condition": spec.condition.model_dump(mode="json"), "storage": "float16 little-endian",
                "shapes": _shapes(shards), "counts": counts}
    write_atomic(out / "manifest.json", json.dumps(manifest, indent=1).encode())


def _shapes(shards: list) -> dict[str, list[list[int]]]:
    """Each tensor's distinct shapes over the committed rows (one shape when every clip has the same size)."""
    seen: dict[str, list[list[int]]] = {n: [] for n in TENSORS}
    for parquet, _ in shards:
        table = pq.read_table(parquet, columns=[f"{n}_shape" for n in TENSORS])
        for n in TENSORS:
            for shape in table.column(f"{n}_shape").to_pylist():
                if shape not in seen[n]:
                    seen[n].append(shape)
    return seen


def _run_workers(src: Path, out: Path, spec: CacheSpec, units: list, total: int, done: int, failures: dict,
                 ray_address: str | None, workers: int | None, progress: bool) -> int:
    """Cache ``units`` on a pool of ``CacheWorker`` actors, committing shards as they fill (a task's rows all
    go into one shard, so every clip's rows commit together); returns the clips cached. Failures go into
    ``failures`` and ``out/failures.parquet``."""
    ray = init_ray(ray_address, workers)
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    n = workers or (gpus or max(1, int(resources.get("CPU", 1))))
    options = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": 1}
    pool = ActorPool(ray, CacheWorker, {"max_restarts": 0, **options},
                     (spec.model_dump_json(), str(src), "cuda" if gpus else "cpu"))
    for _ in range(min(n, len(units))):
        pool.add()
    rows_of = {(name, g): (name, g, ids) for name, g, ids in units}
    queue = list(rows_of)
    attempts: dict = {}
    writer = cache_writer(out, spec.rows_per_group)
    limit = spec.shard_size_mb * 1e6
    cached = 0
    bar = Progress(CACHE_JOB, "clip", total, done, progress)
    try:
        while queue or any(t != READY for t in pool.tasks()):
            for w in pool.idle():
                if queue:
                    key = queue.pop(0)
                    attempts[key] = attempts.get(key, 0) + 1
                    pool.submit(w, "cache_group", *rows_of[key], task=key)
            f = pool.wait()
            if f is None or (f.task == READY and f.died is None):
                continue
            if f.died is not None or f.error is not None:
                if f.died is not None:
                    pool.replace(f.actor)
                if f.task == READY:
                    continue
                if attempts[f.task] < MAX_ATTEMPTS and f.died is not None:
                    queue.append(f.task)
                else:
                    why = f.died if f.died is not None else f.error
                    _record(failures, src, rows_of[f.task], dict.fromkeys(rows_of[f.task][2],
                                                                           f"{type(why).__name__}: {why}"))
            else:
                rows, failed = f.value
                for row in rows:
                    writer.add(row)
                cached += len({row["clip_id"] for row in rows})
                _record(failures, src, rows_of[f.task], failed)
                if writer.nbytes >= limit:
                    writer.commit(next_shard_number(out))
                    writer = cache_writer(out, spec.rows_per_group)
            bar.update_to(done + cached, len(failures))
    finally:
        bar.close()
        pool.kill_all()
        if writer.num_rows:
            writer.commit(next_shard_number(out))  # the rows already cached are complete: keep them
        else:
            writer.abort()
    return cached


def _record(failures: dict, src: Path, unit: tuple, failed: dict[str, str]) -> None:
    """Add failure rows (``dataset.runtime.failures``) for the clips ``failed`` of a unit of ``src``."""
    if not failed:
        return
    name, group, _ = unit
    for row in pq.ParquetFile(src / "shards" / name).read_row_group(group, columns=_LIGHT).to_pylist():
        if row["clip_id"] in failed:
            failures[row["clip_id"]] = _failure(row, failed[row["clip_id"]])


def _failure(row: dict, error: str) -> dict:
    """The ``failures.parquet`` row of a clip (a ``_LIGHT`` row of the source) that could not be cached."""
    return {**{k: row[k] for k in ("clip_id", "scene", "scene_id", "trajectory_id")}, "attempts": 1, "error": error}


__all__ = ["CACHE_SCHEMA", "CacheError", "CacheSpec", "CacheWorker", "cache_clip", "run_cache", "size_problem"]
