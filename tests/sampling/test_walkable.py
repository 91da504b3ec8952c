"""Walkable floor extraction: headroom, obstacles, erosion, storeys joined by stairs, navmeshes."""

from __future__ import annotations

import numpy as np
from sampling_scenes import room_with_table, two_storey_scene
from scene_helpers import make_scene

from dataset.core.scene import Scene
from sampling.walkable import WalkableConfig, extract_walkable

CFG = WalkableConfig(cell_size=0.1, camera_radius=0.3)


def test_open_room_is_walkable_except_a_camera_radius_from_the_walls():
    scene = make_scene([((-5, -4, 0), (5, 4, 3), True, (0.7, 0.7, 0.7), "room")])
    walk = extract_walkable(scene, CFG)
    assert walk.num_regions == 1
    expected = (10 - 2 * 0.3) * (8 - 2 * 0.3)
    assert abs(walk.area() - expected) / expected < 0.05
    z, region = walk.floor_at(np.array([[0.0, 0.0, 0.05], [4.9, 0.0, 0.0], [0.0, 0.0, 2.0]]))
    assert abs(z[0]) < 1e-4 and region[0] == 0
    assert np.isnan(z[1]), "within the camera radius of a wall"
    assert np.isnan(z[2]), "a point 2 m up is not on this floor"


def test_floor_under_tables_and_pillars_is_not_walkable():
    walk = extract_walkable(room_with_table(), CFG)
    probe = np.array([[1.6, 1.4, 0.0], [1.6, 1.4, 0.75], [-2.0, 0.0, 0.0], [1.6, 2.05, 0.0], [3.5, -2.0, 0.0]])
    z, _ = walk.floor_at(probe)
    assert np.isnan(z[0]), "no headroom under the table"
    assert np.isnan(z[1]), "a table top is too small to walk on"
    assert np.isnan(z[2]), "inside the pillar"
    assert np.isnan(z[3]), "closer to the table than the camera radius"
    assert abs(z[4]) < 1e-4


def test_low_ceiling_or_wrong_up_axis_gives_no_floor_and_a_note():
    low = make_scene([((-5, -4, 0), (5, 4, 1.8), True, (0.7, 0.7, 0.7), "crawlspace")])
    walk = extract_walkable(low, CFG)
    assert walk.num_cells == 0 and "no walkable surface" in walk.notes[0]
    tilted = Scene(vertices=np.array([[0, 0, 0], [10, 0, 0], [0, 0, 10.0]]), faces=np.array([[0, 1, 2]]),
                   face_material=np.zeros(1), materials=low.materials[:1], face_object=np.zeros(1),
                   objects=low.objects[:1])
    walk = extract_walkable(tilted, CFG)
    assert walk.num_cells == 0 and "up axis" in walk.notes[-1]


def test_stairs_join_two_storeys_into_one_region():
    walk = extract_walkable(two_storey_scene(), CFG)
    z, region = walk.floor_at(np.array([[-3.0, 0.0, 0.0], [8.0, 0.0, 3.0], [8.0, 0.0, 0.0], [3.0, -3.25, 2.0]]))
    np.testing.assert_allclose(z[:3], [0.0, 3.0, 0.0], atol=1e-4)
    assert region[0] == region[1] == region[2], "ground floor, mezzanine and the floor under it connect"
    assert 1.5 < z[3] < 2.5, "a point half-way up the stairs is on a tread"
    levels = walk.levels(region[0])
    assert len(levels) == 2 and abs(levels[0][0]) < 1e-3 and abs(levels[1][1] - 3.0) < 1e-3
    polys = walk.polygons()
    assert {round(p["z_max"]) for p in polys} == {0, 3}
    upper = next(p for p in polys if round(p["z_max"]) == 3)["geometry"]
    assert 30 < upper.area < 40  # 5 x 8 m slab (+ the top of the stairs), less the eroded margin
    assert walk.walk(np.array([[-3.0, -3.25, 0.0]]), np.array([[7.0, -3.25, 3.0]])).all(), "up the stairs"
    assert not walk.walk(np.array([[4.0, 0.0, 0.0]]), np.array([[8.0, 0.0, 3.0]])).any(), "no climbing walls"


def test_navigation_mesh_replaces_the_floor_test():
    scene = make_scene([((-5, -4, 0), (5, 4, 3), True, (0.7, 0.7, 0.7), "room")])
    nav_v = np.array([[-4, -3, 0], [0, -3, 0], [0, 3, 0], [-4, 3, 0]], float)
    nav_f = np.array([[0, 1, 2], [0, 2, 3]])
    walk = extract_walkable(scene, CFG, navmesh=(nav_v, nav_f))
    z, _ = walk.floor_at(np.array([[-2.0, 0.0, 0.0], [2.0, 0.0, 0.0]]))
    assert abs(z[0]) < 1e-4 and np.isnan(z[1])
    assert abs(walk.area() - (4 - 0.6) * (6 - 0.6)) < 2.0


def test_ramps_join_levels_and_steep_slopes_do_not():
    from scene_helpers import box_faces

    from dataset.core.scene import Material, SceneObject

    def scene_with_ramp(rise: float) -> Scene:
        room_v, room_f = box_faces((-2, -2, 0), (14, 3, 10), inward=True)
        deck_v, deck_f = box_faces((8, -2, 0), (14, 3, rise))  # a platform at the top of the ramp
        ramp_v = np.array([[0, -2, 0], [8, -2, rise], [8, 1, rise], [0, 1, 0]], float)
        ramp_f = np.array([[0, 1, 2], [0, 2, 3]])
        v = np.concatenate([room_v, deck_v, ramp_v])
        f = np.concatenate([room_f, deck_f + 8, ramp_f + 16])
        return Scene(vertices=v, faces=f, face_material=np.zeros(len(f)), materials=[Material("m")],
                     face_object=np.zeros(len(f)), objects=[SceneObject("hall", "structure")])

    gentle = extract_walkable(scene_with_ramp(1.2), CFG)  # 8.5 degrees
    z, region = gentle.floor_at(np.array([[-1.0, 2.0, 0.0], [4.0, -0.5, 0.6], [11.0, 0.0, 1.2]]))
    assert np.isfinite(z).all() and region[0] == region[1] == region[2]
    steep = extract_walkable(scene_with_ramp(7.0), CFG)  # 41 degrees: not a floor
    z, _ = steep.floor_at(np.array([[4.0, -0.5, 3.5]]), tolerance=1.0)
    assert np.isnan(z[0])
