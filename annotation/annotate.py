"""``matrix-pano annotate IN --out OUT``: re-score, caption and re-judge every clip of a dataset into a new one.

Each committed input shard becomes the output shard with the same number and the same rows in the same
order; only ``caption``, ``scores``, ``status`` and ``reject_reasons`` change, every other column is
copied as is (byte-identical). Input shards are only read. Shards are committed like the build's
(temporary file, fsync, rename, marker), so a rerun skips the shards already done.

Work is spread over Ray actors (``AnnotateWorker``), each holding one captioning model: one actor per
GPU when the cluster has GPUs and a model is asked for, else one per CPU.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from annotation.filters import clip_scores, verdict
from dataset.codecs import decode_depth, decode_mp4
from dataset.jobspec import AnnotationSpec, JobError, StrictModel
from dataset.shards import (
    SCHEMA,
    SCORES,
    SHARD_RE,
    commit_table,
    committed_shards,
    is_inside,
    read_manifest,
    remove_debris,
    rows_per_group,
    write_atomic,
)


class CaptionerSpec(StrictModel):
    """The captioning and scoring model (VideoLLaMA3 through ``transformers``)."""

    model: str
    """Local folder or hub id of a VideoLLaMA3 checkpoint."""
    allow_download: bool = False
    """Fetch a hub id that is not in the local cache (off: nothing is downloaded unless asked)."""
    device: str = "auto"
    """``auto`` (CUDA when present), ``cuda``, ``cuda:N`` or ``cpu``."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights dtype: ``auto`` is bfloat16 on GPU, float32 on CPU."""
    view: Literal["panorama", "crops"] = "panorama"
    """What the model sees: the equirect frames, or 4 horizontal perspective crops tiled 2 x 2."""
    num_frames: int = Field(8, ge=1)
    """Frames sampled evenly from each clip."""
    frame_size: int = Field(448, ge=28)
    """Longest side of the frames given to the model, pixels."""
    batch_size: int = Field(4, ge=1)
    """Clips per generate call."""
    max_new_tokens: int = Field(160, ge=8)
    """Answer length limit."""
    max_attempts: int = Field(2, ge=1)
    """Generations per clip before a malformed answer is recorded as such."""
    min_vlm_detail: float = Field(2.0, ge=0, le=5)
    """Clips the model rates below this for detail quality (1-5) are rejected."""
    min_vlm_semantic: float = Field(2.0, ge=0, le=5)
    """Clips the model rates below this for semantic information (1-5) are rejected."""
    min_vlm_motion: float = Field(1.0, ge=0, le=5)
    """Clips the model rates below this for motion richness (1-5) are rejected."""


class AnnotateSpec(StrictModel):
    """What ``annotate`` does; every key is optional."""

    annotation: AnnotationSpec | None = None
    """Filter thresholds; default: the input dataset's own (from its manifest)."""
    rescore: bool = True
    """Recompute the model-free scores from the stored frames (off: keep the build's scores)."""
    captioner: CaptionerSpec | None = None
    """Caption and rate clips with a model (``--model`` sets ``captioner.model``)."""


class AnnotateError(JobError):
    """The annotation cannot start or continue (bad input or output folder, changed spec)."""


def _thresholds(src: Path, spec: AnnotateSpec) -> AnnotationSpec:
    if spec.annotation is not None:
        return spec.annotation
    built = read_manifest(src).get("spec", {}).get("annotation")
    return AnnotationSpec() if built is None else AnnotationSpec.model_validate(built)


def annotate_table(table: pa.Table, thresholds: AnnotationSpec, rescore: bool, captioner=None,
                   captioner_spec: CaptionerSpec | None = None) -> pa.Table:
    """The same rows with new scores, captions, statuses and reasons; other columns untouched."""
    rows = table.select(["clip_id", "num_frames", "height", "width", "fps", "c2w", "scores", "caption"]).to_pylist()
    scores, captions, statuses, reasons = [], [], [], []
    videos: list[np.ndarray | None] = []
    for i, row in enumerate(rows):
        s = dict(row["scores"])
        why: list[str] = []
        frames = None
        try:
            if rescore or captioner is not None:
                frames = decode_mp4(table["rgb_mp4"][i].as_py())
            if rescore:
                shape = (row["num_frames"], row["height"], row["width"])
                depth = decode_depth(table["depth"][i].as_py(), shape)
                s.update(clip_scores(frames, depth, np.asarray(row["c2w"]).reshape(-1, 4, 4),
                                     thresholds.near_limit_m))
        except Exception as exc:  # a broken clip is recorded, the shard goes on
            why.append(f"annotation failed: {type(exc).__name__}: {exc}")
            frames = None
        videos.append(frames)
        scores.append(s)
        captions.append(row["caption"])
        reasons.append(why)
    if captioner is not None:
        todo = [i for i, v in enumerate(videos) if v is not None]
        results = captioner.annotate([videos[i] for i in todo], [rows[i]["fps"] for i in todo])
        for i, result in zip(todo, results, strict=True):
            captions[i] = result.caption
            scores[i].update(result.scores())
            if result.error:
                reasons[i].append(f"captioner: {result.error}")
            reasons[i] += result.reject_reasons(captioner_spec)
    for i, s in enumerate(scores):
        if not reasons[i] or not reasons[i][0].startswith("annotation failed"):
            status, why = verdict(s, thresholds)
            reasons[i] = why + reasons[i]
        statuses.append("rejected" if reasons[i] else "accepted")
    names = table.column_names
    table = table.set_column(names.index("scores"), "scores", pa.array(scores, SCORES))
    table = table.set_column(names.index("caption"), "caption", pa.array(captions, pa.string()))
    table = table.set_column(names.index("status"), "status", pa.array(statuses, pa.string()))
    return table.set_column(names.index("reject_reasons"), "reject_reasons",
                            pa.array(reasons, pa.list_(pa.string())))


class AnnotateWorker:
    """Annotates whole shards (wrapped as a Ray actor); holds its captioning model between shards."""

    def __init__(self, spec_json: str, thresholds_json: str, src: str, out: str) -> None:
        self.spec = AnnotateSpec.model_validate_json(spec_json)
        self.thresholds = AnnotationSpec.model_validate_json(thresholds_json)
        self.src, self.out = Path(src), Path(out)
        self.captioner = None
        if self.spec.captioner is not None:
            from annotation.captioner import VideoLlama3Captioner

            self.captioner = VideoLlama3Captioner(self.spec.captioner)

    def ready(self) -> bool:
        return True

    def annotate_shard(self, name: str) -> dict:
        """Annotate input shard ``name`` into the output shard of the same number; returns its marker."""
        table = pq.read_table(self.src / "shards" / name)
        table = annotate_table(table, self.thresholds, self.spec.rescore, self.captioner, self.spec.captioner)
        number = int(SHARD_RE.match(name).group(1))
        group = rows_per_group(self.src / "shards" / name)
        return commit_table(self.out / "shards", number, table.cast(SCHEMA), group)


def _prepare_output(src: Path, out: Path, spec: AnnotateSpec, overwrite: bool) -> None:
    if not committed_shards(src):
        raise AnnotateError(f"{src}: no committed shards to annotate (is it a dataset built by matrix-pano?)")
    if is_inside(src, out):
        raise AnnotateError(f"--out {out} must be outside the input dataset {src} (input shards are never modified)")
    manifest = out / "manifest.json"
    if manifest.exists() and not overwrite:
        old = json.loads(manifest.read_text()).get("annotate_spec")
        if old != spec.model_dump(mode="json"):
            raise AnnotateError(f"{out} was annotated with different settings: use another --out or pass "
                                f"--overwrite to start over")
    elif overwrite and out.exists():
        shutil.rmtree(out / "shards", ignore_errors=True)
        (out / "manifest.json").unlink(missing_ok=True)
    try:
        (out / "shards").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AnnotateError(f"output folder {out} is not writable: {exc}") from None


def run_annotate(src: str | Path, out: str | Path, spec: AnnotateSpec, ray_address: str | None = None,
                 workers: int | None = None, overwrite: bool = False, progress: bool = True) -> dict:
    """Annotate every committed shard of ``src`` into ``out`` (resumable); returns the counts."""
    from tqdm import tqdm

    from dataset.build import init_ray

    src, out = Path(src), Path(out)
    _prepare_output(src, out, spec, overwrite)
    remove_debris(out)
    thresholds = _thresholds(src, spec)
    done = {p.name for p, _ in committed_shards(out)}
    todo = [p.name for p, _ in committed_shards(src) if p.name not in done]
    start = time.time()
    if todo:
        ray = init_ray(ray_address, workers)
        gpus = int(ray.cluster_resources().get("GPU", 0))
        use_gpu = spec.captioner is not None and spec.captioner.device != "cpu" and gpus > 0
        n = workers or (gpus if use_gpu else max(1, int(ray.cluster_resources().get("CPU", 1))))
        options = {"num_gpus": 1, "num_cpus": 1} if use_gpu else {"num_cpus": 1}
        cls = ray.remote(AnnotateWorker).options(max_restarts=0, **options)
        args = (spec.model_dump_json(), thresholds.model_dump_json(), str(src), str(out))
        pool = [cls.remote(*args) for _ in range(min(n, len(todo)))]
        bar = tqdm(total=len(todo) + len(done), initial=len(done), unit="shard", desc="annotate",
                   disable=not progress, file=sys.stderr)
        queue = list(todo)
        attempts: dict[str, int] = {}
        busy = {}
        failures = []
        try:
            while queue or busy:
                idle = [w for w in pool if w not in {b[0] for b in busy.values()}]
                for w in idle:
                    if queue:
                        name = queue.pop(0)
                        attempts[name] = attempts.get(name, 0) + 1
                        busy[w.annotate_shard.remote(name)] = (w, name)
                ready, _ = ray.wait(list(busy), num_returns=1)
                w, name = busy.pop(ready[0])
                try:
                    ray.get(ready[0])
                    bar.update(1)
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
                    pool.remove(w)
                    pool.append(cls.remote(*args))
                    _retry(name, exc, attempts, queue, failures)
                except ray.exceptions.RayTaskError as exc:
                    if isinstance(exc.cause, OSError):
                        raise AnnotateError(f"cannot write to {out}: {exc.cause}; committed shards are intact, "
                                            f"rerun to continue") from None
                    _retry(name, exc.cause, attempts, queue, failures)
        finally:
            bar.close()
            for w in pool:
                ray.kill(w)
        if failures:
            raise AnnotateError(f"{len(failures)} shards could not be annotated ({failures[0]}); the others are "
                                f"committed: rerun to retry")
    shards = committed_shards(out)
    counts = {"shards": len(shards), "clips": sum(m["rows"] for _, m in shards),
              "accepted": sum(m["accepted"] for _, m in shards), "rejected": sum(m["rejected"] for _, m in shards),
              "seconds": round(time.time() - start, 1)}
    source_manifest = read_manifest(src)
    manifest = {**source_manifest, "source": str(src.resolve()), "annotate_spec": spec.model_dump(mode="json"),
                "thresholds": thresholds.model_dump(mode="json"), "counts": {**source_manifest.get("counts", {}),
                                                                               "annotated": counts}}
    write_atomic(out / "manifest.json", json.dumps(manifest, indent=1).encode())
    return counts


def _retry(name: str, exc: BaseException, attempts: dict, queue: list, failures: list, max_attempts: int = 2) -> None:
    if attempts[name] < max_attempts:
        queue.append(name)
    else:
        failures.append(f"{name}: {type(exc).__name__}: {exc}")
