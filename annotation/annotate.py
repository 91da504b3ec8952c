"""``matrix-pano annotate IN --out OUT``: re-score, caption and re-judge every clip of a dataset into a new one.

Each committed input shard becomes the output shard with the same number and the same rows in the same
order; only ``caption``, ``scores``, ``status`` and ``reject_reasons`` change, every other column is
copied as is (byte-identical). Input shards are only read. Shards are committed like the build's
(temporary file, fsync, rename, marker), so a rerun skips the shards already done; a damaged output shard
is moved into ``OUT/quarantine/`` and done again. Each input shard is checked against its marker's SHA-256
as it is read, and the output folder is locked while the job runs.

Work is spread over Ray actors (``AnnotateWorker``), each holding one captioning model: one actor per
GPU when the cluster has GPUs and a model is asked for, else one per CPU.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from annotation.captioner import VideoLlama3Captioner, check_weights
from annotation.filters import clip_scores, verdict
from dataset.core.jobspec import AnnotateSpec, AnnotationSpec, CaptionerSpec, JobError
from dataset.runtime.pool import READY, ActorPool
from dataset.runtime.progress import Progress
from dataset.runtime.ray import init_ray
from dataset.store.output import output_lock, prepare_output
from dataset.store.reader import Clip
from dataset.store.shards import (
    QUARANTINE,
    SCHEMA,
    SCORES,
    SHARD_RE,
    commit_table,
    committed_shards,
    read_committed_table,
    read_manifest,
    remove_debris,
    repair_shards,
    rows_per_group,
    write_atomic,
)


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
        clip = Clip({**row, "rgb_mp4": table["rgb_mp4"][i].as_py(), "depth": table["depth"][i].as_py()})
        try:
            if rescore or captioner is not None:
                frames = clip.frames()
            if rescore:
                s.update(clip_scores(frames, clip.depth(), clip.c2w, thresholds.near_limit_m))
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
            self.captioner = VideoLlama3Captioner(self.spec.captioner)

    def ready(self) -> bool:
        return True

    def annotate_shard(self, name: str, marker: dict) -> dict:
        """Annotate input shard ``name`` (committed with ``marker``) into the output shard of the same number;
        returns the new marker."""
        table = read_committed_table(self.src / "shards" / name, marker)
        table = annotate_table(table, self.thresholds, self.spec.rescore, self.captioner, self.spec.captioner)
        number = int(SHARD_RE.match(name).group(1))
        group = rows_per_group(self.src / "shards" / name)
        return commit_table(self.out / "shards", number, table.cast(SCHEMA), group)


def run_annotate(src: str | Path, out: str | Path, spec: AnnotateSpec, ray_address: str | None = None,
                 workers: int | None = None, overwrite: bool = False, progress: bool = True) -> dict:
    """Annotate every committed shard of ``src`` into ``out`` (resumable); returns the counts."""
    src, out = Path(src), Path(out)
    if spec.captioner is not None:
        check_weights(spec.captioner)  # here, not inside a Ray actor after start-up
    with output_lock(out, "annotate", error=AnnotateError):
        return _annotate(src, out, spec, ray_address, workers, overwrite, progress)


def _annotate(src: Path, out: Path, spec: AnnotateSpec, ray_address: str | None, workers: int | None,
              overwrite: bool, progress: bool) -> dict:
    prepare_output(out, "annotate", settings=("annotate_spec", spec.model_dump(mode="json")), overwrite=overwrite,
                   src=src, outputs=("shards", QUARANTINE, "manifest.json"), error=AnnotateError)
    quarantined = repair_shards(out)
    remove_debris(out)
    thresholds = _thresholds(src, spec)
    done = {p.name for p, _ in committed_shards(out)}
    markers = {p.name: m for p, m in committed_shards(src)}
    todo = [name for name in markers if name not in done]
    start = time.time()
    if todo:
        ray = init_ray(ray_address, workers)
        gpus = int(ray.cluster_resources().get("GPU", 0))
        use_gpu = spec.captioner is not None and spec.captioner.device != "cpu" and gpus > 0
        n = workers or (gpus if use_gpu else max(1, int(ray.cluster_resources().get("CPU", 1))))
        options = {"num_gpus": 1, "num_cpus": 1} if use_gpu else {"num_cpus": 1}
        pool = ActorPool(ray, AnnotateWorker, {"max_restarts": 0, **options},
                         (spec.model_dump_json(), thresholds.model_dump_json(), str(src), str(out)))
        for _ in range(min(n, len(todo))):
            pool.add()
        bar = Progress("annotate", "shard", len(todo) + len(done), len(done), progress)
        queue = list(todo)
        attempts: dict[str, int] = {}
        failures: list[str] = []
        finished = len(done)
        try:
            while queue or any(t != READY for t in pool.tasks()):
                for w in pool.idle():
                    if queue:
                        name = queue.pop(0)
                        attempts[name] = attempts.get(name, 0) + 1
                        pool.submit(w, "annotate_shard", name, markers[name], task=name)
                f = pool.wait()
                if f is None or (f.task == READY and f.died is None):
                    continue
                if f.died is not None:
                    pool.replace(f.actor)
                    if f.task != READY:
                        _retry(f.task, f.died, attempts, queue, failures)
                elif f.error is not None:
                    if isinstance(f.error, OSError):
                        raise AnnotateError(f"cannot write to {out}: {f.error}; committed shards are intact, "
                                            f"rerun to continue") from None
                    _retry(f.task, f.error, attempts, queue, failures)
                else:
                    finished += 1
                bar.update_to(finished, len(failures))
        finally:
            bar.close()
            pool.kill_all()
        if failures:
            raise AnnotateError(f"{len(failures)} shards could not be annotated ({failures[0]}); the others are "
                                f"committed: rerun to retry")
    shards = committed_shards(out)
    counts = {"shards": len(shards), "clips": sum(m["rows"] for _, m in shards),
              "accepted": sum(m["accepted"] for _, m in shards), "rejected": sum(m["rejected"] for _, m in shards),
              "quarantined": len(quarantined), "seconds": round(time.time() - start, 1)}
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
