"""Deterministic ids (DESIGN.md: derived from the job's inputs, never from time or randomness)."""

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
