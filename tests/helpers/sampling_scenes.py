"""Scenes with known walkable layouts for the sampling tests."""

from __future__ import annotations

from scene_helpers import make_scene

from dataset.core.scene import Scene

GREY = (0.7, 0.7, 0.7)


def two_storey_scene() -> Scene:
    """A 15 x 8 x 6 m hall; a mezzanine slab (top z = 3) over x in [5, 10]; 18 solid steps of 1/6 m rise
    and 0.28 m run along y in [-4, -2.5] lead from x = -0.04 up to the slab at x = 5."""
    boxes = [((-5, -4, 0), (10, 4, 6), True, GREY, "hall"),
             ((5, -4, 2.8), (10, 4, 3.0), False, GREY, "mezzanine", "structure")]
    rise, run = 3.0 / 18, 0.28
    for i in range(18):
        x1 = 5.0 - (17 - i) * run
        boxes.append(((x1 - run, -4, 0), (x1, -2.5, (i + 1) * rise), False, GREY, f"step_{i}", "structure"))
    return make_scene(boxes, name="two_storey")


def room_with_table() -> Scene:
    """A 10 x 8 x 3 m room with a 1.2 x 0.8 m table (top at 0.75 m) and a 0.6 m square pillar to the ceiling."""
    return make_scene([((-5, -4, 0), (5, 4, 3), True, GREY, "room"),
                       ((1.0, 1.0, 0.0), (2.2, 1.8, 0.75), False, GREY, "table"),
                       ((-2.3, -0.3, 0.0), (-1.7, 0.3, 3.0), False, GREY, "pillar")], name="room_with_table")


def plaza_with_building(stairs: bool = False) -> Scene:
    """A 24 x 24 m plaza (a 0.5 m slab, top at z = 0) around a closed 8 x 8 x 6 m building (flat roof at 6 m,
    no door), no spawn points. With ``stairs``: 24 solid steps of 0.25 m rise and 0.3 m run climb along
    the building's south side (y in [-5.5, -4], x from -7.6 to -0.4), then a 4 m landing at roof height
    meets the roof."""
    boxes = [((-12, -12, -0.5), (12, 12, 0), False, GREY, "plaza", "structure"),
             ((-4, -4, 0), (4, 4, 6), False, GREY, "building", "structure")]
    if stairs:
        for i in range(24):
            x0 = -7.6 + i * 0.3
            boxes.append(((x0, -5.5, 0), (x0 + 0.3, -4, (i + 1) * 0.25), False, GREY, f"step_{i}", "structure"))
        boxes.append(((-0.4, -5.5, 0), (3.6, -4, 6), False, GREY, "landing", "structure"))
    return make_scene(boxes, name="plaza_stairs" if stairs else "plaza")
