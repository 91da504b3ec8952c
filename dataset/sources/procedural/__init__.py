"""Procedural scenes, deterministic per argument: ``procedural:NAME:ARG``.

- ``room:WxDxH``: a closed, textured box room of exact size (x in ±W/2, y in ±D/2, z in [0, H]);
- ``indoor:SEED``: a furnished building of 2-3 storeys joined by stairs, rooms joined by doors;
- ``outdoor:SEED``: a town of city blocks (streets, sidewalks, buildings, street furniture, parked cars) in
  countryside to the horizon (fields, roads, houses, apartment rows, hills: ``scenery`` objects).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dataset.core.scene import Scene, SceneError
from dataset.sources.procedural.builder import MeshBuilder
from dataset.sources.procedural.indoor import build_indoor
from dataset.sources.procedural.outdoor import build_outdoor


def _seed(arg: str, name: str) -> int:
    try:
        seed = int(arg)
    except ValueError:
        raise SceneError(f"procedural:{name}:{arg}: the seed must be a non-negative integer, "
                         f"e.g. procedural:{name}:0") from None
    if seed < 0:
        raise SceneError(f"procedural:{name}:{arg}: the seed must be a non-negative integer")
    return seed


def build_room(arg: str) -> Scene:
    """Closed box room ``WxDxH`` metres, textured floor, walls and ceiling, one spawn point in the middle."""
    try:
        w, d, h = (float(v) for v in arg.lower().split("x"))
    except ValueError:
        raise SceneError(f"procedural:room:{arg}: give the size as WxDxH in metres, e.g. procedural:room:4x6x3") \
            from None
    if min(w, d, h) <= 0 or not np.isfinite([w, d, h]).all():
        raise SceneError(f"procedural:room:{arg}: sizes must be positive, e.g. procedural:room:4x6x3")
    b = MeshBuilder(seed=0)
    room = b.object("room", "structure")
    lo, hi = (-w / 2, -d / 2, 0.0), (w / 2, d / 2, h)
    b.box(lo, hi, b.material("plaster", 2.0), room, skip=("-z", "+z"), inward=True)
    b.box(lo, hi, b.material("wood_floor", 1.5), room, skip=("-x", "+x", "-y", "+y", "+z"), inward=True)
    b.box(lo, hi, b.material("ceiling", 2.0), room, skip=("-x", "+x", "-y", "+y", "-z"), inward=True)
    return b.build(f"procedural:room:{arg}", np.array([[0.0, 0.0, 0.0, 0.0]]),
                   {"loader": "procedural", "generator": "room", "size": [w, d, h]})


GENERATORS: dict[str, tuple[str, str, Callable[[str], Scene]]] = {
    "indoor": ("0", "furnished building: rooms with doors, 2-3 storeys joined by stairs",
               lambda a: build_indoor(_seed(a, "indoor"))),
    "outdoor": ("0", "a town of city blocks in countryside that reaches the horizon",
                lambda a: build_outdoor(_seed(a, "outdoor"))),
    "room": ("4x6x3", "closed box room of W x D x H metres (exact-depth checks)", build_room),
}
"""name -> (example argument, description, builder taking the argument string)."""


def load_procedural(source: str) -> Scene:
    """Build the scene ``procedural:NAME:ARG`` names; SceneError for unknown names or bad arguments."""
    parts = source.split(":", 2)
    names = ", ".join(f"procedural:{n}:{ex}" for n, (ex, _, _) in GENERATORS.items())
    if len(parts) != 3 or parts[1] not in GENERATORS:
        raise SceneError(f"{source!r} is not a procedural scene: use one of {names}")
    return GENERATORS[parts[1]][2](parts[2])
