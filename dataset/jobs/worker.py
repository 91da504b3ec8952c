"""The build's workers: each plans scenes and renders clips into its own shards (a Ray actor per worker),
and the shard counter that hands out unique shard numbers."""

from __future__ import annotations

import traceback
from pathlib import Path

from dataset.core.ids import clip_id, scene_id
from dataset.core.jobspec import JobSpec
from dataset.jobs.clips import clip_row
from dataset.jobs.renderers import launch_instance, make_renderer
from dataset.jobs.tasks import PlanFailure, PlannedClip, RenderResult, ScenePlan
from dataset.sources import load_scene
from dataset.store.shards import ShardWriter
from sampling.paths import PathConfig
from sampling.sampler import SamplingConfig, sample_trajectories
from sampling.walkable import WalkableConfig
from ue_plugin.protocol import ConnectionLost, ProtocolError


def plan_scene(spec: JobSpec, source: str):
    """Load a scene and sample its trajectories: (scene, ScenePlan)."""
    scene = load_scene(source)
    s = spec.sampling
    cfg = SamplingConfig(walkable=WalkableConfig(camera_radius=s.camera_radius, regions=s.regions),
                         path=PathConfig(frames=spec.frames_per_clip, step=s.step, fps=spec.fps,
                                         eye_height=s.eye_height, heading=s.heading))
    result = sample_trajectories(scene, spec.trajectories_per_scene, seed=spec.seed, config=cfg)
    sid = scene_id(source, scene.content_hash())
    cfg_hash = spec.config_hash()
    clips = [PlannedClip(clip_id(cfg_hash, sid, t.id), t.id, t.c2w) for t in result.trajectories]
    return scene, ScenePlan(source, sid, clips, result.notes, len(result.discarded))


class Worker:
    """Plans scenes and renders clips into its own shards (wrapped as a Ray actor by the build's driver)."""

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
        self.scene = scene if scene is not None else load_scene(source)
        self.source = source
        r = self.spec.renderer
        if r.kind == "unreal":  # the instance renders its own level; the scene is for sampling only
            if self.renderer is None:
                if r.binary and self.instance is None:
                    import ray

                    gpus = ray.get_gpu_ids()
                    self.instance = launch_instance(r, self.spec.resolution, int(gpus[0]) if gpus else None)
                endpoint = self.instance.endpoint if self.instance else self.endpoint
                self.renderer = make_renderer(r, endpoint=endpoint)
            return
        if self.renderer is not None:
            self.renderer.close()
        self.renderer = make_renderer(r, self.scene, threads=1)

    def plan(self, source: str) -> ScenePlan | PlanFailure:
        """Sample a scene's trajectories (and keep the scene loaded for its clips)."""
        try:
            scene, plan = plan_scene(self.spec, source)
        except Exception as exc:  # one bad scene must not stop the build
            return PlanFailure(source, f"{type(exc).__name__}: {exc}")
        try:
            self._use_scene(source, scene)
        except Exception:  # e.g. a game instance that will not start: render tasks report it per clip
            self.renderer = None
        return plan

    def render(self, source: str, scene_id: str, clips: list[PlannedClip]) -> RenderResult:
        """Render clips into the open shard; commit it when it is big enough. Per-clip errors are returned."""
        result = RenderResult()
        lost = (ConnectionLost, ProtocolError)
        try:
            self._use_scene(source)
        except lost as exc:
            result.endpoint_down = f"{type(exc).__name__}: {exc}"
            return result
        except Exception as exc:
            result.failed = [(c.clip_id, f"{type(exc).__name__}: {exc}") for c in clips]
            return result
        spec = self.spec
        for clip in clips:
            try:
                row = clip_row(self.renderer, spec, source, scene_id, clip.clip_id, clip.trajectory_id, clip.c2w)
            except lost as exc:  # the instance died or hung: not the clip's fault
                self.renderer.close()
                self.renderer = None
                result.endpoint_down = f"{type(exc).__name__}: {exc}"
                if self.instance is not None:  # launch mode: start it again, the work is retried at once
                    self.instance.restart()
                    result.restarted = True
                return result
            except Exception as exc:
                result.failed.append((clip.clip_id, f"{type(exc).__name__}: {exc} "
                                                    f"[{traceback.format_exc(limit=-1).splitlines()[-2].strip()}]"))
                continue
            if self.writer is None:
                self.writer = ShardWriter(self.out_dir / "shards", spec.output.rows_per_group)
            self.writer.add(row)
            result.done.append(clip.clip_id)
            if self.writer.nbytes >= spec.output.shard_size_mb * 1e6:
                result.markers.append(self._commit())
        return result

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


class ShardCounter:
    """Unique, increasing shard numbers for all workers (wrapped as a Ray actor)."""

    def __init__(self, start: int) -> None:
        self.value = start

    def next(self) -> int:
        self.value += 1
        return self.value - 1
