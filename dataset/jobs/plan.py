"""``matrix-pano plan``: what a build of a job spec would make and what it would cost, found without Ray and
without writing anything.

Per scene: the cheap source check the build does before Ray starts (``scene_problem``), the build's own planning
(``worker.plan_scene``: load + sample, so the counts and clip ids are the build's), and a calibration:
``CALIBRATION_FRAMES`` frames of its first clip rendered, scored and encoded through ``clips.render_clip`` on one
thread, as a build worker does. The estimate scales these to every clip, spread over the workers, plus the
start-up of Ray and its workers (``STARTUP_S``).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from dataset.core.jobspec import JobSpec
from dataset.core.scene import SceneError
from dataset.jobs.clips import render_clip
from dataset.jobs.renderers import make_renderer
from dataset.jobs.worker import plan_scene

CALIBRATION_FRAMES = 4
"""Frames of a scene's first clip rendered to measure seconds and bytes per frame (at least 3: bytes are
extrapolated from the encoded sizes of the first 2 and of all of them, so the key frame is counted once)."""

STARTUP_S = 8.0
"""Seconds a local build spends on other things than its clips: Ray start-up, the worker processes' imports, the
manifest (a one-clip 64x32 build took 5.1 s on a shared 2-core machine; rounded up for a busier one)."""


@dataclass
class ScenePlanSummary:
    """One scene of a plan: its counts, the seconds its planning took and its calibration."""

    scene: str
    clips: int = 0
    """Clips planned (one per sampled trajectory)."""
    frames: int = 0
    discarded: int = 0
    """Trajectories sampled but dropped (collisions, too short)."""
    plan_s: float = 0.0
    """Seconds to load the scene and sample its trajectories (the build does this too)."""
    setup_s: float = 0.0
    """Seconds to make its renderer (each worker that renders the scene does this)."""
    seconds_per_frame: float | None = None
    """Render + score + encode seconds per frame on one thread; None without calibration."""
    bytes_per_clip: float | None = None
    """Stored bytes (H.264 RGB + zstd depth) of one clip, extrapolated from the calibration."""
    error: str | None = None
    """Why the scene cannot be built (the build records it in failures.parquet); None when it plans."""


@dataclass
class JobPlan:
    """What a build of a job spec would make, and its estimated bytes and wall time on ``workers`` workers."""

    scenes: list[ScenePlanSummary]
    workers: int
    clips: int = 0
    frames: int = 0
    estimated_bytes: float | None = None
    estimated_seconds: float | None = None
    plan_seconds: float = 0.0
    """Seconds this plan took."""
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def scene_problem(source: str, files: bool = True) -> str | None:
    """Why the build could not load scene ``source`` (``SceneError: ...``), found cheaply: the prefix, procedural
    generator, OpenArena map name, file and options are checked, nothing is loaded. None when it may load.
    ``files=False`` skips the file checks (for a cluster whose workers may see files this machine does not)."""
    try:
        _check_source(source.strip() if isinstance(source, str) else "", files)
    except SceneError as exc:
        return f"SceneError: {exc}"
    return None


def _check_source(source: str, files: bool) -> None:
    from dataset.sources import _loader_for, load_scene
    from dataset.sources.meshfile import _parse_source as parse_mesh_source
    from dataset.sources.meshfile import load_mesh_file
    from dataset.sources.procedural import GENERATORS, load_procedural
    from dataset.sources.quake3 import find_openarena_maps
    from dataset.sources.quake3.loader import _parse_source as parse_quake3_source
    from dataset.sources.quake3.loader import load_quake3

    if not source:
        load_scene(source)  # raises its message for an empty scene string
    loader = _loader_for(source)  # raises for an unknown prefix
    if loader is load_procedural:
        parts = source.split(":", 2)
        if len(parts) != 3 or parts[1] not in GENERATORS:
            load_procedural(source)  # raises its message naming the generators (before building anything)
    elif loader is load_mesh_file:
        if files:
            parse_mesh_source(source)
    elif loader is load_quake3:
        kind, path, map_name, _ = parse_quake3_source(source)
        if kind == "openarena":
            maps = {name.lower() for name, _ in find_openarena_maps()}
            if map_name.lower() not in maps:
                load_quake3(source)  # raises its message listing the maps found (or how to install them)
        elif files and not os.path.isfile(os.path.expanduser(path)):
            raise SceneError(f"scene {source!r}: {path} does not exist: check the path")


def plan_job(spec: JobSpec, calibrate: bool = True, workers: int | None = None) -> JobPlan:
    """Plan every scene of ``spec`` as the build does and (``calibrate``) estimate bytes and seconds on ``workers``
    workers (default: this machine's CPUs). Pure: no Ray, nothing written. A scene that fails to load or plan is
    reported with its reason."""
    start = time.perf_counter()
    workers = workers or os.cpu_count() or 1
    summaries = [_plan_scene(spec, source, calibrate) for source in spec.scenes]
    plan = JobPlan(summaries, workers, clips=sum(s.clips for s in summaries),
                   frames=sum(s.frames for s in summaries))
    if spec.renderer.kind != "embedded" and calibrate:
        plan.notes.append(f"no estimate: the calibration renders with the embedded renderer only, this spec uses "
                          f"{spec.renderer.kind}")
    elif calibrate:
        plan.estimated_bytes, plan.estimated_seconds = _estimate(spec, summaries, workers)
    plan.plan_seconds = round(time.perf_counter() - start, 2)
    return plan


def _plan_scene(spec: JobSpec, source: str, calibrate: bool) -> ScenePlanSummary:
    summary = ScenePlanSummary(source)
    summary.error = scene_problem(source)
    if summary.error:
        return summary
    t = time.perf_counter()
    try:
        scene, plan = plan_scene(spec, source)
    except Exception as exc:  # reported per scene, as the build records it
        summary.error = f"{type(exc).__name__}: {exc}"
        return summary
    summary.plan_s = time.perf_counter() - t
    summary.clips, summary.discarded = len(plan.clips), plan.discarded
    summary.frames = sum(len(c.c2w) for c in plan.clips)
    if calibrate and plan.clips and spec.renderer.kind == "embedded":
        _calibrate(spec, scene, plan.clips[0].c2w, summary)
    return summary


def _calibrate(spec: JobSpec, scene, c2w: np.ndarray, summary: ScenePlanSummary) -> None:
    """Render, score and encode the first frames of a clip as a build worker does (one thread); sets the
    renderer's set-up time, seconds per frame and the extrapolated bytes of a whole clip."""
    n = min(CALIBRATION_FRAMES, len(c2w))
    t = time.perf_counter()
    renderer = _Memo(make_renderer(spec.renderer, scene, threads=1))
    try:
        summary.setup_s = time.perf_counter() - t
        t = time.perf_counter()
        full = render_clip(renderer, spec, c2w[:n])
        summary.seconds_per_frame = (time.perf_counter() - t) / n
        head = render_clip(renderer, spec, c2w[:2])  # the same frames again, from the memo: sizes only
    finally:
        renderer.close()
    size = {k: len(full[k]) for k in ("rgb_mp4", "depth")}
    first = {k: len(head[k]) for k in ("rgb_mp4", "depth")}
    per_frame = {k: (size[k] - first[k]) / max(1, n - 2) for k in size}
    summary.bytes_per_clip = sum(first[k] + per_frame[k] * (spec.frames_per_clip - 2) for k in size)


class _Memo:
    """A renderer that keeps what it rendered, so frames asked for again cost nothing (the calibration encodes
    the same frames at two lengths)."""

    def __init__(self, inner) -> None:
        self.inner, self.kind, self.version = inner, inner.kind, inner.version
        self.frames: dict[bytes, object] = {}

    def render(self, c2w: np.ndarray, width: int):
        key = np.ascontiguousarray(c2w).tobytes() + width.to_bytes(4, "little")
        if key not in self.frames:
            self.frames[key] = self.inner.render(c2w, width)
        return self.frames[key]

    def close(self) -> None:
        self.inner.close()


def _estimate(spec: JobSpec, scenes: list[ScenePlanSummary], workers: int) -> tuple[float, float]:
    """(bytes, wall seconds) of the build: every scene planned once, each clip rendered, and each worker loading
    and setting up the scenes it renders; the work spread over the workers, no faster than the longest scene
    task chain on one worker."""
    good = [s for s in scenes if s.seconds_per_frame is not None]
    if not good:
        return 0.0, STARTUP_S
    nbytes = sum(s.clips * s.bytes_per_clip for s in good)
    used = max(1, min(workers, sum(s.clips for s in good)))
    load = float(np.mean([s.plan_s + s.setup_s for s in good]))
    work = sum(s.plan_s + s.setup_s + s.frames * s.seconds_per_frame for s in good) + max(0, used - 1) * load
    longest = max(s.plan_s + s.setup_s + spec.frames_per_clip * s.seconds_per_frame for s in good)
    return nbytes, STARTUP_S + max(work / used, longest)


def format_plan(plan: JobPlan) -> str:
    """The plan as a table, one row per scene, and the totals."""
    rows = [f"{'scene':<40} {'clips':>5} {'frames':>6} {'dropped':>7} {'plan s':>7} {'s/frame':>8} {'MB/clip':>8}"]
    for s in plan.scenes:
        if s.error:
            rows.append(f"{s.scene:<40} failed: {s.error}")
            continue
        spf = f"{s.seconds_per_frame:8.3f}" if s.seconds_per_frame is not None else f"{'-':>8}"
        mb = f"{s.bytes_per_clip / 1e6:8.3f}" if s.bytes_per_clip is not None else f"{'-':>8}"
        rows.append(f"{s.scene:<40} {s.clips:>5} {s.frames:>6} {s.discarded:>7} {s.plan_s:7.2f} {spf} {mb}")
    failed = sum(s.error is not None for s in plan.scenes)
    total = (f"total: {len(plan.scenes)} scenes ({failed} failed), {plan.clips} clips, {plan.frames} frames")
    if plan.estimated_seconds is not None:
        total += (f"; estimated {plan.estimated_bytes / 1e6:.1f} MB and {plan.estimated_seconds:.0f} s on "
                  f"{plan.workers} workers")
    return "\n".join([*rows, total, *plan.notes])
