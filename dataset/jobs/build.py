"""``matrix-pano build``: scenes to Parquet shards, distributed over Ray, resumable, exactly once.

Roles:

- the **driver** (this module's ``run_build``) reads the spec, checks the output folder, plans and
  dispatches work, tracks every clip's state, replaces dead workers and writes ``manifest.json`` and
  ``failures.parquet``. It never holds frames: at most one task per worker is in flight.
- **workers** (``worker.Worker`` actors, one CPU each) own a renderer and the scene it was built for; a
  worker that planned a scene gets that scene's clips first, so scenes are loaded once per worker.
  They sample trajectories (plan tasks), render clips, and write and commit their own shards.
- a **shard counter** actor hands out unique shard numbers.

Exactly once: a clip counts as done only when the marker of the shard holding it exists (see
``store.shards``). When a worker dies, the driver re-reads the markers on disk and queues again every
clip of that worker that no marker names. A rerun of the same spec over the same folder first moves
damaged and duplicate shards into ``quarantine/`` (size checks; checksums too with ``checksums``), then
skips committed clips (and whole scenes whose plan shows them all committed) and does the rest. The
driver holds ``.lock`` in the folder, so a second build on it stops at once.

Before Ray starts: the output folder is prepared (a file in the way, a different job spec, an unwritable disk
are refused at once), a launch-mode game binary must exist, and every scene string is checked cheaply
(``plan.scene_problem``); a scene that fails the check is recorded in ``failures.parquet`` like one that fails
to load. Ray is started only when there is work: a finished build's rerun, or one whose every scene fails the
check, ends without it.

``limit`` builds only the first N clips in plan order (scenes in spec order, each scene's trajectories in plan
order) and plans only the scenes it needs; it changes no clip id and no config hash, so a rerun without it
builds the rest into the same folder.

``max_failures`` stops the build once more than N clips and scenes have failed: nothing more is dispatched,
work in flight finishes and open shards are committed, then failures and the manifest are written as usual
(``counts["stopped"]`` says so). By default failures never stop a build.

``DIR/log.jsonl`` gets one JSON object per line as things happen (appended, so a resumed build adds to it):
``{"t": unix time, "event": ..., "clip_id": ..., "scene": ..., "worker": ..., "seconds": ..., "error": ...}``
where ``event`` is ``start`` (a clip is sent to a worker), ``done`` (its shard is committed; ``seconds`` from
start until rendered), ``retry`` (it failed or its worker died and it is queued again, with the ``error``),
``failed`` (it has used its attempts) or ``scene_failed`` (a scene could not be checked, loaded or sampled; no
``clip_id``); ``start``, ``retry`` and ``failed`` also give the clip's ``attempt``. ``worker`` names the
worker (its UnrealCV endpoint, or ``w1``, ``w2``, ... in start order).
The end of a build with ``progress`` prints one line per scene (clips committed / planned / failed) and the
first failure reasons on stderr.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from dataset.core.ids import plan_id
from dataset.core.jobspec import JobError, JobSpec
from dataset.jobs.plan import scene_problem
from dataset.jobs.tasks import FlushTask, PlanFailure, PlannedClip, PlanTask, RenderResult, RenderTask, ScenePlan
from dataset.jobs.worker import ShardCounter, Worker
from dataset.runtime.failures import scene_failure, write_failures
from dataset.runtime.pool import READY, ActorPool, Finished
from dataset.runtime.progress import Progress
from dataset.runtime.ray import init_ray
from dataset.store.output import output_lock, prepare_output
from dataset.store.rows import package_version
from dataset.store.shards import (
    QUARANTINE,
    committed_clip_ids,
    committed_shards,
    next_shard_number,
    remove_debris,
    repair_shards,
    write_atomic,
)

CLIPS_PER_TASK = 1
"""Clips rendered per worker call: small, so progress and retries are fine-grained."""

WORKER_WAIT_S = 600.0
"""How long work may wait with no worker alive to do it before the build gives up."""

ENDPOINT_RETRY_S = 10.0
"""A worker whose UnrealCV instance stopped answering gets work again after this many seconds."""

LOG_FILE = "log.jsonl"
"""One JSON event per line in the output folder (see the module docstring)."""

SUMMARY_SCENES = 50
"""Scenes listed one per line at the end of a build; the rest are counted in one line."""

SUMMARY_REASONS = 3
"""Failure reasons shown at the end of a build (all of them are in ``failures.parquet``)."""


class BuildError(JobError):
    """The build cannot start or continue (bad output folder, changed config, unwritable disk)."""


@dataclass
class _ClipState:
    source: str
    scene_id: str
    clip: PlannedClip
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    started: float | None = None
    """When its latest attempt was sent to a worker."""
    seconds: float | None = None
    """Start to rendered of its latest attempt."""


def _plan_path(out: Path, source: str) -> Path:
    return out / "plans" / f"{plan_id(source)}.json"


def run_build(spec: JobSpec, out_dir: str | Path, ray_address: str | None = None, workers: int | None = None,
              overwrite: bool = False, progress: bool = True, checksums: bool = False,
              limit: int | None = None, max_failures: int | None = None) -> dict:
    """Build (or resume) the dataset, or with ``limit`` only its first ``limit`` planned clips; returns the
    manifest's counts (``clips_planned`` counts the clips of this run: at most ``limit``). With ``max_failures``
    the build stops early once more than that many clips and scenes failed (``counts["stopped"]``).

    A write failure (disk full, permissions) stops the build with a BuildError; shards committed
    before it stay valid, and a rerun continues from them. ``checksums`` makes the resume check every
    committed shard's SHA-256 (reads them all), not only its size.
    """
    out = Path(out_dir)
    if workers is not None and workers < 1:
        raise BuildError(f"--workers must be at least 1, got {workers}")
    if limit is not None and limit < 1:
        raise BuildError(f"--limit must be at least 1, got {limit}")
    if max_failures is not None and max_failures < 0:
        raise BuildError(f"--max-failures must be at least 0, got {max_failures}")
    _check_renderer(spec, local=ray_address is None)
    try:
        with output_lock(out, "build", error=BuildError):
            return _run_build(spec, out, ray_address, workers, overwrite, progress, checksums, limit,
                              max_failures)
    except OSError as exc:
        raise BuildError(f"cannot write to {out}: {exc.strerror or exc}; committed shards are intact: free space "
                         f"or fix permissions and rerun to continue") from None


def _check_renderer(spec: JobSpec, local: bool) -> None:
    """A launch-mode game binary that does not exist here is refused before Ray starts (on a cluster it may
    exist only on the worker nodes, so it is not checked there)."""
    binary = getattr(spec.renderer, "binary", None)
    if local and binary and not Path(binary).expanduser().is_file():
        raise BuildError(f"renderer.binary {binary} does not exist: give the path of the packaged game's "
                         f"executable")


def _run_build(spec: JobSpec, out: Path, ray_address: str | None, workers: int | None, overwrite: bool,
               progress: bool, checksums: bool, limit: int | None, max_failures: int | None) -> dict:
    prepare_output(out, "build", settings=("config_hash", spec.config_hash()), overwrite=overwrite,
                   outputs=("shards", "plans", "previews", QUARANTINE, "manifest.json", "failures.parquet",
                            LOG_FILE),
                   folders=("shards", "plans"), error=BuildError)
    quarantined = repair_shards(out, checksums)
    if quarantined and progress:
        print(f"build: moved {len(quarantined)} damaged or duplicate shards into {out / QUARANTINE} (their clips "
              f"are rendered again): {'; '.join(quarantined)}", file=sys.stderr)
    removed = remove_debris(out)
    bad = {f"scene:{s}": scene_failure(s, e) for s in spec.scenes
           if (e := scene_problem(s, files=ray_address is None)) is not None}
    driver = _Driver(spec, out, progress, bad, limit, max_failures)
    if driver.queue:  # something to plan or render: only now is Ray worth its start-up
        ray = init_ray(ray_address, workers)
        driver.launch(ray, workers or max(1, int(ray.cluster_resources().get("CPU", 1))))
        try:
            driver.run()
        finally:
            driver.stop()
    write_failures(out, driver.failures)
    remove_debris(out)
    shards = committed_shards(out)
    counts = {"scenes": len(spec.scenes), "clips_planned": len(driver.states),
              "clips_committed": len(driver.committed),
              "clips_failed": sum(not k.startswith("scene:") for k in driver.failures),
              "scenes_failed": sum(k.startswith("scene:") for k in driver.failures), "shards": len(shards),
              "accepted": sum(m.get("accepted", 0) for _, m in shards),
              "rejected": sum(m.get("rejected", 0) for _, m in shards),
              "worker_restarts": driver.restarts, "endpoint_failures": driver.endpoint_failures,
              "debris_removed": len(removed), "quarantined": len(quarantined), "limit": limit,
              "max_failures": max_failures, "stopped": driver.halted,
              "seconds": round(time.time() - driver.start, 1)}
    manifest = {"spec": spec.model_dump(mode="json"), "config_hash": spec.config_hash(),
                "versions": _versions(), "counts": counts, "notes": driver.scene_notes}
    if quarantined:
        manifest["quarantined"] = quarantined
    if spec.renderer.kind == "unreal":
        manifest["depth_precision"] = ("UnrealCV depth passes through a float16 planar render target: about 0.05 % "
                                       "relative precision (8 cm steps at 100 m), nothing beyond about 600 m")
    write_atomic(out / "manifest.json", json.dumps(manifest, indent=1).encode())
    if progress:
        print("\n".join(driver.summary()), file=sys.stderr)
    return counts


class _Driver:
    """Dispatches plan, render and flush tasks to workers and tracks every clip until it is committed.

    Made without Ray (saved plans read, work queued), so the build can tell whether there is any work; ``launch``
    then makes the shard counter and the workers."""

    def __init__(self, spec: JobSpec, out: Path, progress: bool, failures: dict[str, dict],
                 limit: int | None = None, max_failures: int | None = None) -> None:
        self.spec, self.out, self.progress, self.limit = spec, out, progress, limit
        self.max_failures = max_failures
        self.halted = False
        """More than ``max_failures`` failed: nothing more is dispatched."""
        self.names: dict = {}  # worker -> its name in log.jsonl
        self.started_workers = 0
        self.committed = committed_clip_ids(out)
        self.states: dict[str, _ClipState] = {}
        self.failures: dict[str, dict] = dict(failures)
        """Scenes that failed the check before Ray (``scene:SOURCE``), then every failure of this run."""
        self.scene_notes: dict[str, list[str]] = {}
        self.queue: deque = deque()
        self.plans: dict[str, ScenePlan | None] = {k.removeprefix("scene:"): None for k in failures}
        """Scene -> its plan, None for a scene that failed; scenes not planned yet are not in it."""
        self.asked: set[str] = set()
        """Scenes whose plan task was queued."""
        self.done = 0
        self.pending: dict = {}  # worker -> clip ids rendered into its open shard, not yet committed
        self.loaded: dict = {}  # worker -> the scene it holds
        self.down: dict = {}  # worker -> time its endpoint stopped answering
        self.restarts = 0
        self.endpoint_failures = 0
        self.last_error = ""
        self.start = time.time()
        self.bar: Progress | None = None
        for source in spec.scenes:
            if source not in self.plans and (plan := _read_plan(_plan_path(out, source), source)) is not None:
                self.plans[source] = plan
        for f in failures.values():
            self.log("scene_failed", scene=f["scene"], error=f["error"])
        self._release()
        self._check_failures()

    def launch(self, ray, n_workers: int) -> None:
        """Make the shard counter and the workers (Ray is running)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.ray, spec, out = ray, self.spec, self.out
        # The counter lives on the driver's node: if that node dies the build is gone anyway.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.counter = ray.remote(ShardCounter).options(num_cpus=0, scheduling_strategy=here).remote(
            next_shard_number(out))
        r = spec.renderer
        endpoints = r.endpoints if r.kind == "unreal" else []
        options = {"num_cpus": 1, "max_restarts": 0}
        if r.kind == "unreal":
            if r.binary:  # launch mode: each worker owns one game instance
                gpus = int(ray.cluster_resources().get("GPU", 0))
                n_workers = r.instances or (gpus * r.instances_per_gpu if gpus else n_workers)
                if gpus and not r.instances:
                    options["num_gpus"] = 1 / r.instances_per_gpu
            if r.resources:
                options["resources"] = dict(r.resources)
        self.pool = ActorPool(ray, Worker, options, (spec.model_dump_json(), str(out), self.counter))
        for i in range(len(endpoints) or n_workers):
            self._add_worker(self.pool.add(endpoints[i] if endpoints else None))
        self.bar = Progress("build", "clip", self.total(), self.done, self.progress)

    def _add_worker(self, w) -> None:
        self.pending[w] = set()
        self.started_workers += 1
        self.names[w] = self.pool.key.get(w) or f"w{self.started_workers}"

    def log(self, event: str, **fields) -> None:
        """Append one event to ``log.jsonl`` (flushed at once: the log is current while the build runs)."""
        with open(self.out / LOG_FILE, "a") as f:
            f.write(json.dumps({"t": round(time.time(), 3), "event": event, **fields}) + "\n")

    def _log_clip(self, event: str, cid: str, **fields) -> None:
        st = self.states[cid]
        self.log(event, clip_id=cid, scene=st.source, **fields)

    def _check_failures(self) -> None:
        """Stop dispatching once more than ``max_failures`` clips and scenes failed (in-flight work finishes)."""
        if self.max_failures is not None and len(self.failures) > self.max_failures:
            self.halted = True
            self.queue.clear()

    def _show(self) -> None:
        """Progress in clips: committed ones plus those rendered into open shards."""
        rendered = sum(len(p) for w, p in self.pending.items() if w in self.pool.ready)
        self.bar.update_to(self.done + rendered, len(self.failures), self.total())

    def summary(self) -> list[str]:
        """One line per scene (clips committed / planned / failed of this run) and the first failure reasons."""
        per: dict[str, list[int]] = {s: [0, 0, 0] for s in self.spec.scenes}
        for cid, st in self.states.items():
            per[st.source][0] += cid in self.committed
            per[st.source][1] += 1
            per[st.source][2] += cid in self.failures
        lines = []
        for source, (committed, planned, failed) in list(per.items())[:SUMMARY_SCENES]:
            if f"scene:{source}" in self.failures:
                state = "scene failed"
            elif source not in self.plans:
                state = "not planned"
            else:
                state = f"{committed}/{planned} clips committed, {failed} failed"
            lines.append(f"build: {source}: {state}")
        if len(per) > SUMMARY_SCENES:
            lines.append(f"build: ... and {len(per) - SUMMARY_SCENES} more scenes")
        for f in list(self.failures.values())[:SUMMARY_REASONS]:
            where = f"scene {f['scene']}" if f["clip_id"] is None else f"clip {f['clip_id']} of {f['scene']}"
            lines.append(f"build: failed: {where}: {' '.join(str(f['error']).split())[:300]}")
        if self.halted:
            lines.append(f"build: stopped early: {len(self.failures)} failures exceed --max-failures "
                         f"{self.max_failures}")
        return lines

    def total(self) -> int:
        """Planned clips plus the clips expected from scenes still being planned (at most the limit)."""
        unplanned = sum(s not in self.plans for s in self.asked)
        total = len(self.states) + unplanned * self.spec.trajectories_per_scene
        return total if self.limit is None else min(total, self.limit)

    def _release(self) -> None:
        """Queue the plan tasks and clips this run needs: every scene and clip, or with a limit the first
        ``limit`` clips in plan order, planning scenes (in spec order) only while more clips are needed."""
        position, known = 0, True  # clips before this scene; whether every scene before it is planned
        for source in self.spec.scenes:
            if self.limit is not None and position >= self.limit:
                return
            if source not in self.plans:
                if source not in self.asked:
                    self.asked.add(source)
                    self.queue.append(PlanTask(source))
                position += self.spec.trajectories_per_scene  # expected; the plan may have fewer
                known = False
                continue
            plan = self.plans[source]
            if plan is None:
                continue
            if self.limit is None:
                self._enqueue(plan)
            elif known:  # the clips' positions in plan order are known
                self._enqueue(plan, self.limit - position)
            position += len(plan.clips)

    def dispatch(self) -> None:
        """Give every idle worker a task, preferring clips of the scene it already holds; flush at the end."""
        for w in self.pool.idle():
            if w in self.down and time.time() - self.down[w] < ENDPOINT_RETRY_S:
                continue  # its instance stopped answering: others take the work; retried later
            if not self.queue:
                if not self._real_work_in_flight() and self.pending[w]:
                    self.pool.submit(w, "flush", task=FlushTask())
                continue
            task = next((t for t in self.queue if isinstance(t, RenderTask) and t.source == self.loaded.get(w)),
                        self.queue[0])
            self.queue.remove(task)
            if isinstance(task, PlanTask):
                self.pool.submit(w, "plan", task.source, task=task)
            else:
                for c in task.clip_ids:
                    st = self.states[c]
                    st.attempts += 1
                    st.started, st.seconds = time.time(), None
                    self._log_clip("start", c, worker=self.names.get(w), attempt=st.attempts)
                self.pool.submit(w, "render", task.source, task.scene_id,
                                 [self.states[c].clip for c in task.clip_ids], task=task)
            self.loaded[w] = task.source

    def _real_work_in_flight(self) -> bool:
        return any(isinstance(t, PlanTask | RenderTask) for t in self.pool.tasks())

    def _unfinished(self) -> bool:
        """Work queued or running, or clips in open shards of live workers."""
        return bool(self.queue) or any(t != READY for t in self.pool.tasks()) or any(
            self.pending[w] for w in self.pool.ready)

    def commit(self, markers: list[dict], w) -> None:
        for m in markers:
            for c in m["clip_ids"]:
                self.pending.get(w, set()).discard(c)
                if c not in self.committed:
                    self.committed.add(c)
                    self.done += 1
                    self.failures.pop(c, None)
                    if c in self.states:
                        st = self.states[c]
                        seconds = st.seconds if st.seconds is not None else time.time() - (st.started or self.start)
                        self._log_clip("done", c, worker=self.names.get(w), seconds=round(seconds, 3))
        self._show()

    def _requeue(self, cid: str, front: bool = False, why: str | None = None, worker: str | None = None) -> None:
        """Queue a clip again (logged as a retry when ``why`` is given); nothing once the build is stopping."""
        if self.halted:
            return
        st = self.states[cid]
        if why is not None:
            self._log_clip("retry", cid, worker=worker, attempt=st.attempts, error=why)
        task = RenderTask(st.source, st.scene_id, (cid,))
        self.queue.appendleft(task) if front else self.queue.append(task)

    def fail_or_retry(self, cid: str, error: str, worker: str | None = None) -> None:
        st = self.states[cid]
        st.errors.append(error)
        if st.attempts >= self.spec.max_attempts:
            self.failures[cid] = {"clip_id": cid, "scene": st.source, "scene_id": st.scene_id,
                                  "trajectory_id": st.clip.trajectory_id, "attempts": st.attempts, "error": error}
            self._log_clip("failed", cid, worker=worker, attempt=st.attempts, error=error)
            self._check_failures()
        else:
            self._requeue(cid, why=error, worker=worker)

    def worker_died(self, w, task, exc: BaseException) -> None:
        """Replace the worker; clips it held that no marker on disk names are queued again."""
        self.restarts += 1
        lost = self.pending.pop(w, set())
        in_flight = set(task.clip_ids) if isinstance(task, RenderTask) else set()
        on_disk = committed_clip_ids(self.out)  # it may have committed a shard it could not report
        self.commit([{"clip_ids": sorted((lost | in_flight) & on_disk)}], w)
        self.loaded.pop(w, None)
        self.down.pop(w, None)
        name = self.names.pop(w, None)
        self._add_worker(self.pool.replace(w))
        if isinstance(task, PlanTask) and not self.halted:
            self.queue.append(task)
        for cid in sorted(in_flight - on_disk):
            self.fail_or_retry(cid, f"worker died: {type(exc).__name__}", name)
        for cid in sorted(lost - in_flight - on_disk):
            self._requeue(cid, why=f"worker died before committing its shard: {type(exc).__name__}", worker=name)

    def planned(self, result: ScenePlan | PlanFailure) -> None:
        if isinstance(result, PlanFailure):
            self.failures[f"scene:{result.scene}"] = scene_failure(result.scene, result.error)
            self.plans[result.scene] = None
            self.log("scene_failed", scene=result.scene, error=result.error)
            self._check_failures()
        else:
            write_atomic(_plan_path(self.out, result.scene), json.dumps(result.to_json()).encode())
            self.scene_notes[result.scene] = result.notes
            self.plans[result.scene] = result
        if not self.halted:
            self._release()
        self._show()

    def rendered(self, w, task: RenderTask, result: RenderResult) -> None:
        self.pending[w].update(result.done)
        for cid in result.done:
            st = self.states[cid]
            st.seconds = time.time() - (st.started or self.start)
        for cid, error in result.failed:
            self.fail_or_retry(cid, error, self.names.get(w))
        self.commit(result.markers, w)
        if result.endpoint_down is None:
            self.down.pop(w, None)
            return
        # The worker's UnrealCV instance died or hung: its unrendered clips go back to the queue without
        # costing an attempt, its open shard is committed, and it gets no work for ENDPOINT_RETRY_S.
        self.down[w] = time.time()
        self.endpoint_failures += 1
        self.last_error = f"{self.pool.key.get(w)}: {result.endpoint_down}"
        handled = set(result.done) | {cid for cid, _ in result.failed}
        for cid in task.clip_ids:
            if cid not in handled:
                self.states[cid].attempts -= 1
                self._requeue(cid, front=True, why=f"endpoint down: {result.endpoint_down}",
                              worker=self.names.get(w))
        if self.pending[w]:
            self.pool.submit(w, "flush", task=FlushTask())
        if result.restarted:
            self.down.pop(w, None)  # launch mode: the instance was restarted, use it again now

    def run(self) -> None:
        progress_at = time.time()
        while self._unfinished():
            self.dispatch()
            finished = self.pool.wait(timeout=5.0)
            if time.time() - progress_at > WORKER_WAIT_S and self.queue and not self._real_work_in_flight():
                if self.down:
                    raise BuildError(f"no progress for {WORKER_WAIT_S:.0f} s: no UnrealCV endpoint answers "
                                     f"(last: {self.last_error}); committed shards are intact, rerun to continue")
                raise BuildError(f"no worker could start for {WORKER_WAIT_S:.0f} s: the cluster has no free CPU "
                                 f"for a render worker (check `ray status`, or lower --workers)")
            if finished is not None and self._handle(finished):
                progress_at = time.time()

    def _handle(self, f: Finished) -> bool:
        """Account for one finished call; whether it was progress."""
        w, task = f.actor, f.task
        if f.died is not None:
            self.worker_died(w, task, f.died)
            return False
        if f.error is not None:
            if isinstance(f.error, OSError):
                raise f.error from None  # disk full or unwritable: stop, committed shards stay valid
            if not isinstance(task, RenderTask):
                raise f.error
            for cid in task.clip_ids:
                self.fail_or_retry(cid, f"{type(f.error).__name__}: {f.error}", self.names.get(w))
            return False
        if isinstance(task, PlanTask):
            self.planned(f.value)
        elif isinstance(task, FlushTask):
            self.commit(f.value, w)
        elif isinstance(task, RenderTask):
            self.rendered(w, task, f.value)
            return bool(f.value.done)
        return task != READY

    def stop(self) -> None:
        """Close the progress bar and end the workers (their open shards are debris for the next run)."""
        self.bar.close()
        self.pool.kill_all()
        self.ray.kill(self.counter)

    def _enqueue(self, plan: ScenePlan, most: int | None = None) -> None:
        """Register a scene's clips (its first ``most``) not registered yet and queue the uncommitted ones in
        small render tasks."""
        todo = []
        for clip in plan.clips[:most]:
            if clip.clip_id in self.states:
                continue
            self.states[clip.clip_id] = _ClipState(plan.scene, plan.scene_id, clip)
            if clip.clip_id in self.committed:
                self.done += 1
            else:
                todo.append(clip.clip_id)
        for i in range(0, len(todo), CLIPS_PER_TASK):
            self.queue.append(RenderTask(plan.scene, plan.scene_id, tuple(todo[i : i + CLIPS_PER_TASK])))


def _read_plan(path: Path, source: str) -> ScenePlan | None:
    """The saved plan of scene ``source``; None when it has none or it is damaged (plans are deterministic:
    the scene is planned again)."""
    try:
        plan = ScenePlan.from_json(json.loads(path.read_text()))
        if plan.scene != source:
            raise ValueError(f"it names scene {plan.scene!r}")
        return plan
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        print(f"build: plan {path.name} is damaged ({type(exc).__name__}: {exc}); planning the scene again",
              file=sys.stderr)
        return None


def _versions() -> dict:
    import ray

    from dataset.render.embedded import RENDERER_VERSION

    return {"matrix_pano": package_version(), "embedded_renderer": RENDERER_VERSION, "ray": ray.__version__,
            "pyarrow": pa.__version__, "python": sys.version.split()[0]}
