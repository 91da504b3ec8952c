"""``matrix-pano build``: scenes to Parquet shards, distributed over Ray, resumable, exactly once.

Roles:

- the **driver** (this module's ``run_build``) reads the spec, checks the output folder, plans and
  dispatches work, tracks every clip's state, replaces dead workers and writes ``manifest.json`` and
  ``failures.parquet``. It never holds frames: at most one task per worker is in flight.
- **workers** (``BuildWorker`` actors, one CPU each) own a renderer and the scene it was built for; a
  worker that planned a scene gets that scene's clips first, so scenes are loaded once per worker.
  They sample trajectories (plan tasks), render clips, and write and commit their own shards.
- a **shard counter** actor hands out unique shard numbers.

Exactly once: a clip counts as done only when the marker of the shard holding it exists (see
``shards``). When a worker dies, the driver re-reads the markers on disk and queues again every clip
of that worker that no marker names. A rerun of the same spec over the same folder skips committed
clips (and whole scenes whose plan shows them all committed) and does the rest.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .ids import scene_id as make_scene_id
from .ids import stable_id
from .jobspec import JobError, JobSpec
from .shards import committed_clip_ids, committed_shards, next_shard_number, remove_debris, write_atomic

CLIPS_PER_TASK = 1
"""Clips rendered per worker call: small, so progress and retries are fine-grained."""

WORKER_WAIT_S = 600.0
"""How long work may wait with no worker alive to do it before the build gives up."""

ENDPOINT_RETRY_S = 10.0
"""A worker whose UnrealCV instance stopped answering gets work again after this many seconds."""

FAILURE_SCHEMA = pa.schema([("clip_id", pa.string()), ("scene", pa.string()), ("scene_id", pa.string()),
                            ("trajectory_id", pa.string()), ("attempts", pa.int32()), ("error", pa.string())])


class BuildError(JobError):
    """The build cannot start or continue (bad output folder, changed config, unwritable disk)."""


def package_version() -> str:
    try:
        return version("matrix-pano")
    except PackageNotFoundError:
        return "0+unknown"


def clip_id(config_hash: str, scene_id: str, trajectory_id: str) -> str:
    return stable_id("clip", config_hash, scene_id, trajectory_id)


# ---------------------------------------------------------------------------------------------- worker


def plan_scene(spec: JobSpec, source: str):
    """Load a scene and sample its trajectories: (scene, plan dict)."""
    from sampling.paths import PathConfig
    from sampling.sampler import SamplingConfig, sample_trajectories
    from sampling.walkable import WalkableConfig

    from .sources import load_scene

    scene = load_scene(source)
    s = spec.sampling
    cfg = SamplingConfig(walkable=WalkableConfig(camera_radius=s.camera_radius),
                         path=PathConfig(frames=spec.frames_per_clip, step=s.step, fps=spec.fps,
                                         eye_height=s.eye_height, heading=s.heading))
    result = sample_trajectories(scene, spec.trajectories_per_scene, seed=spec.seed, config=cfg)
    sid = make_scene_id(source, scene.content_hash())
    cfg_hash = spec.config_hash()
    clips = [{"clip_id": clip_id(cfg_hash, sid, t.id), "trajectory_id": t.id,
              "c2w": [m.reshape(-1).tolist() for m in t.c2w]} for t in result.trajectories]
    return scene, {"scene": source, "scene_id": sid, "clips": clips, "notes": result.notes,
                   "discarded": len(result.discarded)}


class Worker:
    """Plans scenes and renders clips into its own shards (wrapped as a Ray actor by ``run_build``)."""

    def __init__(self, spec_json: str, out_dir: str, counter, endpoint: str | None = None) -> None:
        self.spec = JobSpec.model_validate_json(spec_json)
        self.out_dir = Path(out_dir)
        self.counter = counter
        self.endpoint = endpoint
        """The UnrealCV server this worker drives (unreal renderer, attach mode)."""
        self.instance = None
        """The game instance this worker launched and owns (unreal renderer, launch mode)."""
        self.source: str | None = None
        self.scene = None
        self.renderer = None
        self.writer = None

    def _use_scene(self, source: str, scene=None) -> None:
        if self.source == source and self.renderer is not None:
            return
        from .render.embedded import EmbeddedRenderer, RenderSettings
        from .sources import load_scene

        self.scene = scene if scene is not None else load_scene(source)
        self.source = source
        r = self.spec.renderer
        if r.kind == "unreal":  # the instance renders its own level; the scene is for sampling only
            if self.renderer is None:
                from ue_plugin.backend import UnrealCVRenderer

                if r.binary and self.instance is None:
                    self.instance = _launch_instance(r, self.spec.resolution)
                endpoint = self.instance.endpoint if self.instance else self.endpoint
                self.renderer = UnrealCVRenderer(endpoint, timeout=r.timeout_s)
            return
        if self.renderer is not None:
            self.renderer.close()
        self.renderer = EmbeddedRenderer(self.scene, RenderSettings(supersample=r.supersample, shadows=r.shadows,
                                                                    threads=1))

    def plan(self, source: str) -> dict:
        """Sample a scene's trajectories (and keep the scene loaded for its clips)."""
        try:
            scene, plan = plan_scene(self.spec, source)
        except Exception as exc:  # one bad scene must not stop the build
            return {"scene": source, "error": f"{type(exc).__name__}: {exc}"}
        try:
            self._use_scene(source, scene)
        except Exception:  # e.g. a game instance that will not start: render tasks report it per clip
            self.renderer = None
        return plan

    def render(self, source: str, scene_id: str, clips: list[dict]) -> dict:
        """Render clips into the open shard; commit it when it is big enough. Per-clip errors are returned."""
        from ue_plugin.protocol import ConnectionLost, ProtocolError

        from .clips import render_clip
        from .shards import ShardWriter

        done, failed, markers = [], [], []
        lost = (ConnectionLost, ProtocolError)
        try:
            self._use_scene(source)
        except lost as exc:
            return {"done": [], "failed": [], "markers": [], "endpoint_down": f"{type(exc).__name__}: {exc}"}
        except Exception as exc:
            return {"done": [], "failed": [(c["clip_id"], f"{type(exc).__name__}: {exc}") for c in clips],
                    "markers": []}
        spec = self.spec
        for clip in clips:
            try:
                payload = render_clip(self.renderer, spec, np.asarray(clip["c2w"]).reshape(-1, 4, 4))
            except lost as exc:  # the instance died or hung: not the clip's fault
                self.renderer.close()
                self.renderer = None
                result = {"done": done, "failed": failed, "markers": markers,
                          "endpoint_down": f"{type(exc).__name__}: {exc}"}
                if self.instance is not None:  # launch mode: start it again, the work is retried at once
                    self.instance.restart()
                    result["restarted"] = True
                return result
            except Exception as exc:
                failed.append((clip["clip_id"], f"{type(exc).__name__}: {exc} "
                                                f"[{traceback.format_exc(limit=-1).splitlines()[-2].strip()}]"))
                continue
            if self.writer is None:
                self.writer = ShardWriter(self.out_dir / "shards", spec.output.rows_per_group)
            w, h = spec.resolution
            self.writer.add({"clip_id": clip["clip_id"], "scene_id": scene_id, "trajectory_id": clip["trajectory_id"],
                             "scene": source, "width": w, "height": h, "num_frames": spec.frames_per_clip,
                             "fps": spec.fps, "caption": None, "renderer": self.renderer.kind,
                             "renderer_version": self.renderer.version, "package_version": package_version(),
                             "config_hash": spec.config_hash(), "seed": spec.seed, **payload})
            done.append(clip["clip_id"])
            if self.writer.nbytes >= spec.output.shard_size_mb * 1e6:
                markers.append(self._commit())
        return {"done": done, "failed": failed, "markers": markers}

    def _commit(self) -> dict:
        import ray

        number = ray.get(self.counter.next.remote())
        marker = self.writer.commit(number)
        self.writer = None
        return marker

    def ready(self) -> bool:
        """Answers once the actor is placed and running."""
        return True

    def flush(self) -> list[dict]:
        """Commit the open shard, if any."""
        return [self._commit()] if self.writer is not None and self.writer.num_rows else []


def _launch_instance(r, resolution: tuple[int, int]):
    """Start this worker's own game instance on the GPU Ray gave it (launch mode)."""
    import tempfile

    import ray

    from ue_plugin.launcher import InstanceConfig, UEInstance

    gpus = ray.get_gpu_ids()
    face = max(16, resolution[0] // 4)
    instance = UEInstance(InstanceConfig(binary=r.binary, map=r.map, gpu=int(gpus[0]) if gpus else None,
                                         resolution=(face, face), startup_timeout_s=r.startup_timeout_s,
                                         workdir=str(Path(tempfile.gettempdir()) / "matrix-pano-ue")))
    instance.start()
    return instance


class ShardCounter:
    """Unique, increasing shard numbers for all workers (wrapped as a Ray actor)."""

    def __init__(self, start: int) -> None:
        self.value = start

    def next(self) -> int:
        self.value += 1
        return self.value - 1


# ---------------------------------------------------------------------------------------------- driver


@dataclass
class _ClipState:
    source: str
    scene_id: str
    clip: dict
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


def _check_output(out: Path, spec: JobSpec, overwrite: bool) -> None:
    """Refuse a different spec over an existing output (unless overwriting); make the folders."""
    manifest = out / "manifest.json"
    if manifest.exists() and not overwrite:
        try:
            old = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BuildError(f"{manifest} is unreadable ({exc}): use --overwrite to start over") from None
        if old.get("config_hash") != spec.config_hash():
            raise BuildError(f"{out} was built with a different job spec (config hash {old.get('config_hash')} != "
                             f"{spec.config_hash()}): use another --out, restore the spec, or pass --overwrite "
                             f"to delete the old shards and start over")
    elif overwrite and out.exists():
        for name in ("shards", "plans", "previews"):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in ("manifest.json", "failures.parquet"):
            (out / name).unlink(missing_ok=True)
    try:
        (out / "shards").mkdir(parents=True, exist_ok=True)
        (out / "plans").mkdir(exist_ok=True)
        probe = out / "shards" / ".tmp-write-probe"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise BuildError(f"output folder {out} is not writable: {exc}") from None


def _plan_path(out: Path, source: str) -> Path:
    return out / "plans" / f"{stable_id('plan', source)}.json"


def _write_failures(out: Path, failures: dict[str, dict]) -> None:
    """Merge this run's failures with earlier ones still not committed; write failures.parquet atomically."""
    path = out / "failures.parquet"
    rows = {}
    if path.exists():
        for r in pq.read_table(path).to_pylist():
            rows[r["clip_id"] or f"scene:{r['scene']}"] = r
    rows.update(failures)
    done = committed_clip_ids(out)
    rows = [r for r in rows.values() if r["clip_id"] not in done]
    if not rows and not path.exists():
        return
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows, schema=FAILURE_SCHEMA), sink)
    write_atomic(path, sink.getvalue().to_pybytes())


def _probe_address(address: str, timeout: float = 10.0) -> None:
    """Fail fast with a clear error when a host:port cluster address does not accept connections
    (Ray itself retries for minutes)."""
    import socket

    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise BuildError(f"cannot join the Ray cluster at {address!r}: nothing answers there ({exc.strerror or exc}); "
                         f"use the address `ray status` prints on the head node, or 'auto' on a cluster node") from None


def init_ray(address: str | None, workers: int | None):
    """Ray, joined at ``address`` or started here with ``workers`` CPUs (all when None); already running: as is."""
    import ray

    if address:
        _probe_address(address)  # even when Ray runs already: a wrong address is an error, not ignored
    if ray.is_initialized():
        return ray
    if address:
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise BuildError(f"cannot join the Ray cluster at {address!r}: {' '.join(str(exc).split())} (use the "
                             f"address `ray status` prints on the head node, 'auto' on a cluster node, or "
                             f"ray://HOST:10001 for Ray Client)") from None
    else:
        ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    return ray


def run_build(spec: JobSpec, out_dir: str | Path, ray_address: str | None = None, workers: int | None = None,
              overwrite: bool = False, progress: bool = True) -> dict:
    """Build (or resume) the dataset; returns the manifest's counts.

    A write failure (disk full, permissions) stops the build with a BuildError; shards committed
    before it stay valid, and a rerun continues from them.
    """
    out = Path(out_dir)
    if workers is not None and workers < 1:
        raise BuildError(f"--workers must be at least 1, got {workers}")
    ray = init_ray(ray_address, workers)
    try:
        return _run_build(ray, spec, out, workers, overwrite, progress)
    except OSError as exc:
        raise BuildError(f"cannot write to {out}: {exc.strerror or exc}; committed shards are intact: free space "
                         f"or fix permissions and rerun to continue") from None


def _run_build(ray, spec: JobSpec, out: Path, workers: int | None, overwrite: bool, progress: bool) -> dict:
    _check_output(out, spec, overwrite)
    removed = remove_debris(out)
    driver = _Driver(ray, spec, out, workers or max(1, int(ray.cluster_resources().get("CPU", 1))), progress)
    try:
        driver.run()
    finally:
        driver.stop()
    _write_failures(out, driver.failures)
    remove_debris(out)
    shards = committed_shards(out)
    counts = {"scenes": len(spec.scenes), "clips_planned": len(driver.states),
              "clips_committed": len(driver.committed), "clips_failed": len(driver.failures), "shards": len(shards),
              "accepted": sum(m.get("accepted", 0) for _, m in shards),
              "rejected": sum(m.get("rejected", 0) for _, m in shards),
              "worker_restarts": driver.restarts, "endpoint_failures": driver.endpoint_failures,
              "debris_removed": len(removed),
              "seconds": round(time.time() - driver.start, 1)}
    manifest = {"spec": spec.model_dump(mode="json"), "config_hash": spec.config_hash(),
                "versions": _versions(), "counts": counts, "notes": driver.scene_notes}
    if spec.renderer.kind == "unreal":
        manifest["depth_precision"] = ("UnrealCV depth passes through a float16 planar render target: about 0.05 % "
                                       "relative precision (8 cm steps at 100 m), nothing beyond about 600 m")
    write_atomic(out / "manifest.json", json.dumps(manifest, indent=1).encode())
    return counts


class _Driver:
    """Dispatches plan, render and flush tasks to workers and tracks every clip until it is committed.

    A new worker is only given work once it answers ``ready`` (an actor the cluster has no room for
    stays pending and is simply not used). Tasks: ("plan", source), ("render", source, scene_id,
    [clip ids]), ("flush",) and ("ready",).
    """

    def __init__(self, ray, spec: JobSpec, out: Path, n_workers: int, progress: bool) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.ray, self.spec, self.out = ray, spec, out
        self.spec_json = spec.model_dump_json()
        # The counter lives on the driver's node: if that node dies the build is gone anyway.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.counter = ray.remote(ShardCounter).options(num_cpus=0, scheduling_strategy=here).remote(
            next_shard_number(out))
        self.committed = committed_clip_ids(out)
        self.states: dict[str, _ClipState] = {}
        self.failures: dict[str, dict] = {}
        self.scene_notes: dict[str, list[str]] = {}
        self.queue: deque = deque()
        self.busy: dict = {}  # object ref -> (worker, task)
        self.ready: set = set()  # workers that answered and are alive
        self.pending: dict = {}  # worker -> clip ids rendered into its open shard, not yet committed
        self.loaded: dict = {}  # worker -> the scene it holds
        self.restarts = 0
        self.endpoint_failures = 0
        self.start = time.time()
        for source in spec.scenes:
            plan_file = _plan_path(out, source)
            if plan_file.exists():
                _enqueue_plan(json.loads(plan_file.read_text()), self.states, self.queue, self.committed)
            else:
                self.queue.append(("plan", source))
        self.pool: list = []
        self.endpoint_of: dict = {}  # worker -> its UnrealCV endpoint (unreal renderer)
        self.down: dict = {}  # worker -> time its endpoint stopped answering
        r = spec.renderer
        endpoints = r.endpoints if r.kind == "unreal" else []
        options = {"num_cpus": 1, "max_restarts": 0}
        if r.kind == "unreal" and r.binary:  # launch mode: each worker owns one game instance
            gpus = int(ray.cluster_resources().get("GPU", 0))
            n_workers = r.instances or (gpus * r.instances_per_gpu if gpus else n_workers)
            if gpus and not r.instances:
                options["num_gpus"] = 1 / r.instances_per_gpu
        if r.resources:
            options["resources"] = dict(r.resources)
        self.worker_cls = ray.remote(Worker).options(**options)
        for i in range(len(endpoints) or n_workers):
            self._new_worker(endpoints[i] if endpoints else None)
        self.done = len([c for c in self.states if c in self.committed])
        self.bar = _Progress(progress, self.total(), self.done)

    def _new_worker(self, endpoint: str | None = None) -> None:
        w = self.worker_cls.remote(self.spec_json, str(self.out), self.counter, endpoint)
        self.endpoint_of[w] = endpoint
        self.pool.append(w)
        self.pending[w] = set()
        self.busy[w.ready.remote()] = (w, ("ready",))

    def total(self) -> int:
        """Planned clips plus the clips expected from scenes still being planned."""
        unplanned = sum(1 for t in self.queue if t[0] == "plan") + sum(
            1 for _, t in self.busy.values() if t[0] == "plan")
        return len(self.states) + unplanned * self.spec.trajectories_per_scene

    def dispatch(self) -> None:
        """Give every idle worker a task, preferring clips of the scene it already holds; flush at the end."""
        working = {w for w, _ in self.busy.values()}
        for w in self.pool:
            if w in working or w not in self.ready:
                continue
            if w in self.down and time.time() - self.down[w] < ENDPOINT_RETRY_S:
                continue  # its instance stopped answering: others take the work; retried later
            if not self.queue:
                if not self._real_work_in_flight() and self.pending[w]:
                    self.busy[w.flush.remote()] = (w, ("flush",))
                continue
            task = next((t for t in self.queue if t[0] == "render" and t[1] == self.loaded.get(w)), self.queue[0])
            self.queue.remove(task)
            if task[0] == "plan":
                ref = w.plan.remote(task[1])
            else:
                for c in task[3]:
                    self.states[c].attempts += 1
                ref = w.render.remote(task[1], task[2], [self.states[c].clip for c in task[3]])
            self.loaded[w] = task[1]
            self.busy[ref] = (w, task)

    def _real_work_in_flight(self) -> bool:
        return any(t[0] in ("plan", "render") for _, t in self.busy.values())

    def _unfinished(self) -> bool:
        """Work queued or running, or clips in open shards of live workers."""
        return bool(self.queue) or any(t[0] != "ready" for _, t in self.busy.values()) or any(
            self.pending[w] for w in self.ready)

    def commit(self, markers: list[dict], w) -> None:
        for m in markers:
            for c in m["clip_ids"]:
                self.pending.get(w, set()).discard(c)
                if c not in self.committed:
                    self.committed.add(c)
                    self.done += 1
                    self.failures.pop(c, None)
        self.bar.update_to(self.done, len(self.failures), self.total())

    def fail_or_retry(self, cid: str, error: str) -> None:
        st = self.states[cid]
        st.errors.append(error)
        if st.attempts >= self.spec.max_attempts:
            self.failures[cid] = {"clip_id": cid, "scene": st.source, "scene_id": st.scene_id,
                                  "trajectory_id": st.clip["trajectory_id"], "attempts": st.attempts, "error": error}
        else:
            self.queue.append(("render", st.source, st.scene_id, [cid]))

    def worker_died(self, w, task: tuple, exc: Exception) -> None:
        """Replace the worker; clips it held that no marker on disk names are queued again."""
        self.restarts += 1
        lost = self.pending.pop(w, set())
        in_flight = set(task[3]) if task[0] == "render" else set()
        on_disk = committed_clip_ids(self.out)  # it may have committed a shard it could not report
        self.commit([{"clip_ids": sorted((lost | in_flight) & on_disk)}], w)
        self.pool.remove(w)
        self.ready.discard(w)
        self.loaded.pop(w, None)
        self.down.pop(w, None)
        for ref in [r for r, (other, _) in self.busy.items() if other is w]:
            del self.busy[ref]
        self._new_worker(self.endpoint_of.pop(w, None))
        if task[0] == "plan":
            self.queue.append(task)
        for cid in sorted(in_flight - on_disk):
            self.fail_or_retry(cid, f"worker died: {type(exc).__name__}")
        for cid in sorted(lost - in_flight - on_disk):
            st = self.states[cid]
            self.queue.append(("render", st.source, st.scene_id, [cid]))

    def planned(self, source: str, result: dict) -> None:
        if "error" in result:
            self.failures[f"scene:{source}"] = {"clip_id": None, "scene": source, "scene_id": None,
                                                "trajectory_id": None, "attempts": 1, "error": result["error"]}
        else:
            write_atomic(_plan_path(self.out, source), json.dumps(result).encode())
            self.scene_notes[source] = result["notes"]
            _enqueue_plan(result, self.states, self.queue, self.committed)
        self.bar.update_to(self.done, len(self.failures), self.total())

    def endpoint_down(self, w, task: tuple, done: list, failed: list, error: str) -> None:
        """The worker's UnrealCV instance died or hung: its unrendered clips go back to the queue without
        costing an attempt, its open shard is committed, and it gets no work for ENDPOINT_RETRY_S."""
        self.down[w] = time.time()
        self.endpoint_failures += 1
        self.last_error = f"{self.endpoint_of.get(w)}: {error}"
        handled = set(done) | {cid for cid, _ in failed}
        for cid in task[3]:
            if cid not in handled:
                st = self.states[cid]
                st.attempts -= 1
                self.queue.appendleft(("render", st.source, st.scene_id, [cid]))
        if self.pending[w]:
            self.busy[w.flush.remote()] = (w, ("flush",))

    def run(self) -> None:
        ray = self.ray
        progress_at = time.time()
        self.last_error = ""
        while self._unfinished():
            self.dispatch()
            ready, _ = ray.wait(list(self.busy), num_returns=1, timeout=5.0)
            if time.time() - progress_at > WORKER_WAIT_S and self.queue and not self._real_work_in_flight():
                if self.down:
                    raise BuildError(f"no progress for {WORKER_WAIT_S:.0f} s: no UnrealCV endpoint answers "
                                     f"(last: {self.last_error}); committed shards are intact, rerun to continue")
                raise BuildError(f"no worker could start for {WORKER_WAIT_S:.0f} s: the cluster has no free CPU "
                                 f"for a render worker (check `ray status`, or lower --workers)")
            if not ready:
                continue
            w, task = self.busy.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
                self.worker_died(w, task, exc)
                continue
            except ray.exceptions.RayTaskError as exc:
                if isinstance(exc.cause, OSError):
                    raise exc.cause from None  # disk full or unwritable: stop, committed shards stay valid
                if task[0] != "render":
                    raise
                for cid in task[3]:
                    self.fail_or_retry(cid, f"{type(exc.cause).__name__}: {exc.cause}")
                continue
            if task[0] == "ready":
                self.ready.add(w)
            elif task[0] == "plan":
                self.planned(task[1], result)
            elif task[0] == "flush":
                self.commit(result, w)
            else:
                self.pending[w].update(result["done"])
                for cid, error in result["failed"]:
                    self.fail_or_retry(cid, error)
                self.commit(result["markers"], w)
                if "endpoint_down" in result:
                    self.endpoint_down(w, task, result["done"], result["failed"], result["endpoint_down"])
                    if result.get("restarted"):
                        self.down.pop(w, None)  # launch mode: the instance was restarted, use it again now
                else:
                    self.down.pop(w, None)
            if task[0] in ("plan", "flush") or (task[0] == "render" and result.get("done")):
                progress_at = time.time()

    def stop(self) -> None:
        """Close the progress bar and end the workers (their open shards are debris for the next run)."""
        self.bar.close()
        for w in self.pool:
            self.ray.kill(w)
        self.ray.kill(self.counter)


def _enqueue_plan(plan: dict, states: dict, queue: deque, committed: set) -> None:
    """Register a scene's clips and queue the uncommitted ones in small render tasks."""
    todo = []
    for clip in plan["clips"]:
        states[clip["clip_id"]] = _ClipState(plan["scene"], plan["scene_id"], clip)
        if clip["clip_id"] not in committed:
            todo.append(clip["clip_id"])
    for i in range(0, len(todo), CLIPS_PER_TASK):
        queue.append(("render", plan["scene"], plan["scene_id"], todo[i : i + CLIPS_PER_TASK]))


def _versions() -> dict:
    import ray

    from .render.embedded import RENDERER_VERSION

    return {"matrix_pano": package_version(), "embedded_renderer": RENDERER_VERSION, "ray": ray.__version__,
            "pyarrow": pa.__version__, "python": sys.version.split()[0]}


class _Progress:
    """tqdm bar of committed clips with failures, clips per minute and ETA."""

    def __init__(self, enabled: bool, total: int, done: int) -> None:
        from tqdm import tqdm

        self.start = time.time()
        self.first = done
        self.bar = tqdm(total=total, initial=done, unit="clip", desc="build", disable=not enabled, file=sys.stderr,
                        bar_format="{desc}: {n}/{total} clips |{bar}|{postfix}")

    def update_to(self, done: int, failed: int, total: int) -> None:
        self.bar.total = total
        self.bar.n = done
        rate = (done - self.first) / max(time.time() - self.start, 1e-6) * 60
        left = max(total - done - failed, 0)
        eta = f"{left / rate:.1f} min" if rate > 0 else "?"
        self.bar.set_postfix_str(f"failed {failed}, {rate:.1f} clips/min, ETA {eta}")

    def close(self) -> None:
        self.bar.close()

