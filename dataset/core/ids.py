"""Deterministic ids (DESIGN.md: derived from the job's inputs, never from time or randomness).

Every id recipe of the project is here, so that the same inputs give the same ids in every job.
"""

from __future__ import annotations

import hashlib
import json


def stable_id(*parts: object, length: int = 16) -> str:
    """Hex id of ``length`` characters hashed from JSON-encodable parts (order matters)."""
    payload = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


def scene_id(source: str, content_hash: str) -> str:
    """Id of a scene: its source string and the hash of its content."""
    return stable_id("scene", source, content_hash)


def trajectory_id(scene_id: str, seed: int, index: int) -> str:
    """Id of the ``index``-th candidate path sampled on a scene with ``seed``."""
    return stable_id("trajectory", scene_id, seed, index)


def rng_seed(scene_id: str, seed: int) -> int:
    """Seed of a scene's sampling random generator."""
    return int(stable_id("rng", scene_id, seed), 16)


def clip_id(config_hash: str, scene_id: str, trajectory_id: str) -> str:
    """Id of a built clip: the job's config hash, its scene and its trajectory."""
    return stable_id("clip", config_hash, scene_id, trajectory_id)


def plan_id(source: str) -> str:
    """Name of a scene's cached plan file in a build folder."""
    return stable_id("plan", source)


def mrq_clip_id(scene: str, trajectory_id: str) -> str:
    """Id of a clip rendered by Movie Render Queue and ingested (``matrix-pano unreal ingest``)."""
    return stable_id("clip", "unreal-mrq", scene, trajectory_id)


def mrq_config_hash(color_pass: str, depth_pass: str) -> str:
    """Config hash of an ingested Movie Render Queue clip: the passes it was read from."""
    return stable_id("mrq", color_pass, depth_pass)
