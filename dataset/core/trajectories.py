"""Trajectory files: the one reader every command and the editor scripts use.

Three layouts are read:

- ours: a JSON object ``{"c2w": [[16 numbers], ...]}`` (row-major camera-to-world, or 4x4 lists);
- a ``matrix-pano sample`` output: ``{"scene": ..., "scene_id": ..., "trajectories": [{"id", "c2w"}, ...],
  "config": {"path": {"fps": ...}}}``, from which one trajectory is taken by index;
- Matrix-3D's camera files: a JSON list of world-to-camera OpenCV 4x4 matrices.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataset.core.conventions import as_c2w_array, load_matrix3d_cameras


class TrajectoryFileError(ValueError):
    """A trajectory file is missing, unreadable or not in one of the known layouts; the message says which."""


@dataclass
class TrajectoryFile:
    """Poses read from a trajectory file, with what the file says about them."""

    c2w: np.ndarray
    """(N, 4, 4) float64 camera-to-world poses."""
    trajectory_id: str | None = None
    """The trajectory's id (``matrix-pano sample`` output)."""
    scene: str | None = None
    """The scene string it was sampled on (``matrix-pano sample`` output)."""
    scene_id: str | None = None
    """That scene's id, source and content hash (``matrix-pano sample`` output)."""
    fps: float | None = None
    """The frame rate it was sampled for (``matrix-pano sample`` output)."""


def read_trajectory_file(path: str | Path, index: int = 0) -> TrajectoryFile:
    """Read trajectory ``index`` (for files holding several) of a trajectory file in any known layout."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise TrajectoryFileError(f"trajectory file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrajectoryFileError(f"cannot read trajectory file {path}: {exc}") from None
    found = TrajectoryFile(np.zeros((0, 4, 4)))
    if isinstance(data, list):
        try:
            found.c2w = load_matrix3d_cameras(path) if data else found.c2w
        except ValueError as exc:
            raise TrajectoryFileError(str(exc)) from None
    elif isinstance(data, dict) and "trajectories" in data:
        items = data["trajectories"]
        if not isinstance(items, list) or not -len(items) <= index < len(items) or not isinstance(items[index], dict):
            raise TrajectoryFileError(f"{path} has no trajectory {index} (it holds "
                                      f"{len(items) if isinstance(items, list) else 0})")
        item = items[index]
        fps = (data.get("config") or {}).get("path", {}).get("fps") if isinstance(data.get("config"), dict) else None
        found = TrajectoryFile(_poses(item.get("c2w"), path, "a matrix-pano sample output"),
                               item.get("id"), data.get("scene"), data.get("scene_id"),
                               float(fps) if isinstance(fps, int | float) else None)
    elif isinstance(data, dict) and "c2w" in data:
        found.c2w = _poses(data["c2w"], path, "{'c2w': [[16 numbers], ...]}")
    else:
        raise TrajectoryFileError(f"{path}: not a trajectory (give {{'c2w': [[16 numbers], ...]}}, a matrix-pano "
                                  f"sample output or a Matrix-3D camera list)")
    if len(found.c2w) == 0:
        raise TrajectoryFileError(f"trajectory file {path} has no poses")
    return found


def _poses(value, path: Path, layout: str) -> np.ndarray:
    if isinstance(value, list) and not value:
        return np.zeros((0, 4, 4))
    try:
        return as_c2w_array(value)
    except (ValueError, TypeError) as exc:
        raise TrajectoryFileError(f"trajectory file {path} ({layout}): {exc}") from None
