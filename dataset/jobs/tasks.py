"""The typed messages between the build's driver and its workers, and the plan file of a scene.

The driver sends ``PlanTask``, ``RenderTask`` and ``FlushTask``; workers answer with a ``ScenePlan`` (or
a ``PlanFailure``), a ``RenderResult``, or the markers of the shards they committed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dataset.core.conventions import poses_to_rows, rows_to_poses


@dataclass(frozen=True)
class PlanTask:
    """Load a scene and sample its trajectories."""

    source: str


@dataclass(frozen=True)
class RenderTask:
    """Render these planned clips of one scene into the worker's open shard."""

    source: str
    scene_id: str
    clip_ids: tuple[str, ...]


@dataclass(frozen=True)
class FlushTask:
    """Commit the worker's open shard."""


@dataclass
class PlannedClip:
    """One clip to render: its id, its trajectory's id and the camera path."""

    clip_id: str
    trajectory_id: str
    c2w: np.ndarray
    """(frames, 4, 4) camera-to-world poses."""

    def to_json(self) -> dict:
        return {"clip_id": self.clip_id, "trajectory_id": self.trajectory_id, "c2w": poses_to_rows(self.c2w)}

    @classmethod
    def from_json(cls, data: dict) -> PlannedClip:
        return cls(data["clip_id"], data["trajectory_id"], rows_to_poses(data["c2w"]))


@dataclass
class ScenePlan:
    """A scene's sampled clips; cached as ``plans/<plan id>.json`` in the dataset folder."""

    scene: str
    scene_id: str
    clips: list[PlannedClip]
    notes: list[str] = field(default_factory=list)
    discarded: int = 0

    def to_json(self) -> dict:
        return {"scene": self.scene, "scene_id": self.scene_id, "clips": [c.to_json() for c in self.clips],
                "notes": self.notes, "discarded": self.discarded}

    @classmethod
    def from_json(cls, data: dict) -> ScenePlan:
        return cls(data["scene"], data["scene_id"], [PlannedClip.from_json(c) for c in data["clips"]],
                   list(data.get("notes", [])), int(data.get("discarded", 0)))


@dataclass(frozen=True)
class PlanFailure:
    """A scene that could not be loaded or sampled."""

    scene: str
    error: str


@dataclass
class RenderResult:
    """What a render task did: clips rendered into the open shard, clips that failed, shards committed."""

    done: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(clip id, error) of clips that failed."""
    markers: list[dict] = field(default_factory=list)
    """Markers of the shards committed during the task."""
    endpoint_down: str | None = None
    """Set when the worker's UnrealCV instance died or hung (not the clips' fault)."""
    restarted: bool = False
    """The worker restarted its own instance (launch mode): it can take work again at once."""
