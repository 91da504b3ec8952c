"""Properties of the fixed conventions of DESIGN.md section 1, as implemented in dataset.conventions."""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from dataset.core.conventions import (
    CROP12_LAYOUT,
    CUBE_LAYOUT,
    GLTF_TO_WORLD,
    UP_AXIS_TO_WORLD,
    as_c2w_array,
    c2w_to_ue_pose,
    c2w_to_w2c,
    check_equirect_size,
    crop_rotation,
    direction_to_lonlat,
    direction_to_pixel,
    equirect_directions,
    equirect_to_crops,
    equirect_to_perspective,
    gltf_to_world,
    heading_of,
    intrinsics,
    load_matrix3d_cameras,
    lonlat_to_direction,
    lonlat_to_pixel,
    look_at,
    perspective_to_equirect,
    pixel_to_lonlat,
    planar_to_range,
    pose_from_heading,
    range_to_planar,
    save_matrix3d_cameras,
    ue_pose_to_c2w,
    ue_to_world,
    w2c_to_c2w,
    world_to_gltf,
    world_to_ue,
)

FEW = settings(max_examples=30, deadline=None)

angles = st.floats(-math.pi, math.pi, allow_nan=False)
coords = st.floats(-100.0, 100.0, allow_nan=False)
points = st.tuples(coords, coords, coords).map(np.array)
widths = st.integers(2, 512).map(lambda n: 2 * n)


@st.composite
def rigid_poses(draw) -> np.ndarray:
    """Random proper rigid c2w (4, 4)."""
    quat = np.array(draw(st.tuples(*[st.floats(-1.0, 1.0, allow_nan=False)] * 4)))
    assume(np.linalg.norm(quat) > 0.1)
    c2w = np.eye(4)
    c2w[:3, :3] = Rotation.from_quat(quat).as_matrix()
    c2w[:3, 3] = draw(points)
    return c2w


def wrap(angle):
    """Angle difference folded into (-pi, pi]."""
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


def assert_proper_rotation(r: np.ndarray) -> None:
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-9)
    assert np.linalg.det(r) == pytest.approx(1.0)


# --------------------------------------------------------------------------- equirect


@FEW
@given(widths, st.floats(0.0, 1.0, exclude_max=True), st.floats(0.001, 0.999))
def test_pixel_lonlat_direction_round_trip(width: int, fu: float, fv: float) -> None:
    height = width // 2
    u, v = fu * width, fv * height
    lon, lat = pixel_to_lonlat(u, v, width, height)
    assert -math.pi <= lon < math.pi and -math.pi / 2 < lat < math.pi / 2
    np.testing.assert_allclose(lonlat_to_pixel(lon, lat, width, height), (u, v), atol=1e-9)
    d = lonlat_to_direction(lon, lat)
    assert np.linalg.norm(d) == pytest.approx(1.0)
    np.testing.assert_allclose(direction_to_lonlat(d), (lon, lat), atol=1e-9)
    du, dv = direction_to_pixel(3.7 * d, width, height)  # any length
    assert wrap((du - u) * 2 * math.pi / width) == pytest.approx(0.0, abs=1e-9)
    assert dv == pytest.approx(v, abs=1e-9)


def test_pixel_centre_formula_of_design() -> None:
    width, height = 16, 8
    lon, lat = pixel_to_lonlat(np.arange(width) + 0.5, np.arange(height) + 0.5, width, height)
    np.testing.assert_allclose(lon, [2 * math.pi * ((u + 0.5) / width - 0.5) for u in range(width)])
    np.testing.assert_allclose(lat, [math.pi * (0.5 - (v + 0.5) / height) for v in range(height)])
    d = lonlat_to_direction(0.3, 0.2)
    np.testing.assert_allclose(d, [math.cos(0.2) * math.sin(0.3), -math.sin(0.2), math.cos(0.2) * math.cos(0.3)])


def test_equirect_directions_look_where_design_says() -> None:
    width, height = 64, 32
    d32 = equirect_directions(width)
    assert d32.shape == (height, width, 3) and d32.dtype == np.float32
    d = d32.astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(d, axis=-1), 1.0, atol=1e-6)
    step = 2 * math.pi / width  # one pixel in angle: the sample sits half a pixel off the exact direction
    mid = height // 2
    for column, expected in ((width // 2, (0, 0, 1)), (3 * width // 4, (1, 0, 0)), (width // 4, (-1, 0, 0)),
                             (0, (0, 0, -1)), (width - 1, (0, 0, -1))):
        assert np.linalg.norm(d[mid, column] - expected) < step, f"column {column}"
    assert (d[0, :, 1] < -math.cos(step)).all()  # top row looks up (-y)
    assert (d[-1, :, 1] > math.cos(step)).all()  # bottom row looks down
    assert (d[mid, width // 2 :, 0] > 0).all() and (d[mid, : width // 2, 0] < 0).all()  # right half is +x


@FEW
@given(widths)
def test_direction_to_pixel_inverts_equirect_directions(width: int) -> None:
    height = width // 2
    d = equirect_directions(width, dtype=np.float64)
    u, v = direction_to_pixel(d, width, height)
    np.testing.assert_allclose(u, np.broadcast_to(np.arange(width) + 0.5, (height, width)), atol=1e-7)
    np.testing.assert_allclose(v, np.broadcast_to(np.arange(height)[:, None] + 0.5, (height, width)), atol=1e-7)


@pytest.mark.parametrize(("width", "height"), [(64, 31), (63, None), (0, None), (-8, -4), (32, 32)])
def test_check_equirect_size_rejects_width_not_twice_height(width, height) -> None:
    with pytest.raises(ValueError, match="2 x height"):
        check_equirect_size(width, height)


def test_check_equirect_size_accepts_valid_sizes() -> None:
    assert check_equirect_size(960) == (960, 480)
    assert check_equirect_size(64, 32) == (64, 32)


# --------------------------------------------------------------------------- poses


@FEW
@given(st.lists(rigid_poses(), min_size=1, max_size=4))
def test_c2w_and_w2c_are_inverse(poses: list[np.ndarray]) -> None:
    c2w = np.stack(poses)
    w2c = c2w_to_w2c(c2w)
    np.testing.assert_allclose(w2c @ c2w, np.broadcast_to(np.eye(4), c2w.shape), atol=1e-9)
    np.testing.assert_allclose(c2w @ w2c, np.broadcast_to(np.eye(4), c2w.shape), atol=1e-9)
    np.testing.assert_allclose(w2c_to_c2w(w2c), c2w, atol=1e-9)
    np.testing.assert_allclose(c2w_to_w2c(c2w[0]), np.linalg.inv(c2w[0]), atol=1e-9)


@FEW
@given(angles, points)
def test_pose_from_heading_matches_design(heading: float, position: np.ndarray) -> None:
    c2w = pose_from_heading(position, heading)
    c, s = math.cos(heading), math.sin(heading)
    np.testing.assert_allclose(c2w[:3, 2], [c, s, 0], atol=1e-12)  # z_cam forward
    np.testing.assert_allclose(c2w[:3, 0], [s, -c, 0], atol=1e-12)  # x_cam right
    np.testing.assert_allclose(c2w[:3, 1], [0, 0, -1], atol=1e-12)  # y_cam down
    np.testing.assert_allclose(c2w[:3, 3], position)
    np.testing.assert_allclose(c2w[3], [0, 0, 0, 1])
    assert c2w.dtype == np.float64
    assert_proper_rotation(c2w[:3, :3])
    assert wrap(heading_of(c2w) - heading) == pytest.approx(0.0, abs=1e-12)


@FEW
@given(angles, st.floats(-1.5, 1.5), angles)
def test_pitch_looks_up_and_roll_keeps_forward(heading: float, pitch: float, roll: float) -> None:
    c2w = pose_from_heading((0, 0, 0), heading, pitch, roll)
    assert_proper_rotation(c2w[:3, :3])
    assert c2w[2, 2] == pytest.approx(math.sin(pitch))  # forward's z: positive pitch looks up
    assert wrap(heading_of(c2w) - heading) == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(c2w[:3, 2], pose_from_heading((0, 0, 0), heading, pitch)[:3, 2], atol=1e-12)


@FEW
@given(points, points)
def test_look_at_points_forward_at_target_and_stays_upright(position: np.ndarray, target: np.ndarray) -> None:
    d = target - position
    assume(np.hypot(d[0], d[1]) > 1e-3)
    c2w = look_at(position, target)
    assert_proper_rotation(c2w[:3, :3])
    np.testing.assert_allclose(c2w[:3, 2], d / np.linalg.norm(d), atol=1e-9)
    np.testing.assert_allclose(c2w[:3, 3], position)
    assert c2w[2, 0] == pytest.approx(0.0, abs=1e-12)  # no roll: x_cam horizontal
    assert c2w[2, 1] < 0  # y_cam (image down) points downwards in the world


# --------------------------------------------------------------------------- frames of other tools


@FEW
@given(points)
def test_gltf_world_round_trip(p: np.ndarray) -> None:
    np.testing.assert_allclose(world_to_gltf(gltf_to_world(p)), p)
    np.testing.assert_allclose(gltf_to_world(world_to_gltf(p)), p)
    np.testing.assert_allclose(gltf_to_world(p), GLTF_TO_WORLD @ p)


def test_gltf_to_world_is_x_minus_z_y() -> None:
    np.testing.assert_array_equal(gltf_to_world(np.array([1.0, 2.0, 3.0])), [1.0, -3.0, 2.0])
    np.testing.assert_array_equal(gltf_to_world(np.array([[0.0, 1.0, 0.0]] * 2)), [[0.0, 0.0, 1.0]] * 2)  # up


@pytest.mark.parametrize("axis", ["x", "y", "z"])
def test_up_axis_rotations_are_proper_and_send_up_to_world_z(axis: str) -> None:
    r = UP_AXIS_TO_WORLD[axis]
    assert_proper_rotation(r)
    np.testing.assert_array_equal(r @ np.eye(3)["xyz".index(axis)], [0.0, 0.0, 1.0])


def test_up_axis_y_is_the_gltf_convention() -> None:
    p = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(UP_AXIS_TO_WORLD["y"] @ p, gltf_to_world(p))
    np.testing.assert_array_equal(UP_AXIS_TO_WORLD["x"] @ p, [2.0, 3.0, 1.0])  # cyclic: x up, y -> x, z -> y


@FEW
@given(points)
def test_ue_world_round_trip(p: np.ndarray) -> None:
    np.testing.assert_allclose(world_to_ue(ue_to_world(p)), p, atol=1e-9)
    np.testing.assert_allclose(ue_to_world(p), [p[0] / 100, -p[1] / 100, p[2] / 100])


@FEW
@given(st.floats(-89.0, 89.0), st.floats(-179.0, 179.0), st.floats(-179.0, 179.0), points)
def test_ue_pose_round_trip(pitch: float, yaw: float, roll: float, location: np.ndarray) -> None:
    c2w = ue_pose_to_c2w(location, (pitch, yaw, roll))
    as_c2w_array(c2w)  # rigid and proper
    np.testing.assert_allclose(c2w[:3, 3], ue_to_world(location))
    loc, (p, y, r) = c2w_to_ue_pose(c2w)
    np.testing.assert_allclose(loc, location, atol=1e-9)
    assert p == pytest.approx(pitch, abs=1e-7)
    assert wrap(math.radians(y - yaw)) == pytest.approx(0.0, abs=1e-7)
    assert wrap(math.radians(r - roll)) == pytest.approx(0.0, abs=1e-7)


def test_ue_rotations_look_where_unreal_looks() -> None:
    c2w = ue_pose_to_c2w((100.0, 200.0, 300.0), (0.0, 0.0, 0.0))
    np.testing.assert_allclose(c2w[:3, 3], [1.0, -2.0, 3.0])
    np.testing.assert_allclose(c2w[:3, :3], pose_from_heading((0, 0, 0), 0.0)[:3, :3], atol=1e-12)  # along +X
    forward = ue_pose_to_c2w((0, 0, 0), (0.0, 90.0, 0.0))[:3, 2]
    np.testing.assert_allclose(forward, [0.0, -1.0, 0.0], atol=1e-12)  # UE +Y is world -Y
    np.testing.assert_allclose(ue_pose_to_c2w((0, 0, 0), (90.0, 0.0, 0.0))[:3, 2], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(ue_pose_to_c2w((0, 0, 0), (0.0, -90.0, 0.0))[:3, :3],
                               pose_from_heading((0, 0, 0), math.pi / 2)[:3, :3], atol=1e-12)


# --------------------------------------------------------------------------- perspective cameras


@FEW
@given(st.floats(20.0, 150.0), st.integers(1, 4), st.integers(1, 4))
def test_planar_range_round_trip_and_scale(fov: float, half_w: int, half_h: int) -> None:
    w, h = 2 * half_w + 1, 2 * half_h + 1  # odd: one pixel sits on the optical axis
    planar = np.random.default_rng(w * h).uniform(0.5, 50.0, (h, w))
    rng = planar_to_range(planar, fov)
    np.testing.assert_allclose(range_to_planar(rng, fov), planar)
    assert rng[half_h, half_w] == pytest.approx(planar[half_h, half_w])
    f = 0.5 * w / math.tan(math.radians(fov) / 2)
    xn, yn = (0.5 - w / 2) / f, (0.5 - h / 2) / f
    for row, col in ((0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)):
        assert rng[row, col] == pytest.approx(planar[row, col] * math.sqrt(1 + xn * xn + yn * yn))
    np.testing.assert_allclose(intrinsics(w, h, fov), [[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])


def test_crop_rotation_directions() -> None:
    width, height = 64, 32
    u, v = direction_to_pixel(crop_rotation(90.0, 0.0)[:, 2], width, height)
    assert (u, v) == pytest.approx((3 * width / 4, height / 2))
    lon, lat = direction_to_lonlat(crop_rotation(0.0, 45.0)[:, 2])
    assert (lon, lat) == pytest.approx((0.0, math.pi / 4))  # pitch 45 looks up 45 degrees
    lon, lat = direction_to_lonlat(crop_rotation(-90.0, -30.0)[:, 2])
    assert (lon, lat) == pytest.approx((-math.pi / 2, -math.pi / 6))


@FEW
@given(st.floats(-180.0, 180.0), st.floats(-89.0, 89.0))
def test_crop_rotation_is_proper_and_level(yaw: float, pitch: float) -> None:
    r = crop_rotation(yaw, pitch)
    assert_proper_rotation(r)
    assert r[1, 0] == pytest.approx(0.0, abs=1e-12)  # crop x axis stays horizontal: no roll
    lon, lat = direction_to_lonlat(r[:, 2])
    assert wrap(lon - math.radians(yaw)) == pytest.approx(0.0, abs=1e-9)
    assert lat == pytest.approx(math.radians(pitch))


@lru_cache(maxsize=1)
def lonlat_panorama(width: int = 256) -> np.ndarray:
    """An equirect whose pixels hold their own longitude and latitude."""
    height = width // 2
    lon, lat = pixel_to_lonlat(np.arange(width)[None, :] + 0.5, np.arange(height)[:, None] + 0.5, width, height)
    return np.stack(np.broadcast_arrays(lon, lat), axis=-1)


@FEW
@given(st.floats(-150.0, 150.0), st.floats(-60.0, 60.0), st.sampled_from([60.0, 90.0, 120.0]))
def test_equirect_to_perspective_centre_sees_the_crop_direction(yaw: float, pitch: float, fov: float) -> None:
    rot = crop_rotation(yaw, pitch)
    crop = equirect_to_perspective(lonlat_panorama(), rot, 9, 7, fov)
    assert crop.shape == (7, 9, 2)
    np.testing.assert_allclose(crop[3, 4], direction_to_lonlat(rot[:, 2]), atol=1e-9)


def test_crop_layouts() -> None:
    assert len(CROP12_LAYOUT) == 12 and len(set(CROP12_LAYOUT)) == 12
    assert {y for y, _ in CROP12_LAYOUT} == {0.0, 90.0, 180.0, 270.0}
    assert {p for _, p in CROP12_LAYOUT} == {0.0, 45.0, -45.0}
    crops, rots = equirect_to_crops(lonlat_panorama(), size=5, layout=CROP12_LAYOUT)
    assert crops.shape == (12, 5, 5, 2) and rots.shape == (12, 3, 3)


def test_cube_faces_round_trip() -> None:
    width = 128
    smooth = (0.5 + 0.5 * equirect_directions(width)).astype(np.float32)  # colour = ray direction
    crops, rots = equirect_to_crops(smooth, size=64, layout=CUBE_LAYOUT)
    # front, right, back, left, up, down: the centre of each face looks along its axis
    axes = [(0, 0, 1), (1, 0, 0), (0, 0, -1), (-1, 0, 0), (0, -1, 0), (0, 1, 0)]
    centres = crops[:, 31:33, 31:33].mean(axis=(1, 2))
    np.testing.assert_allclose(centres, 0.5 + 0.5 * np.array(axes), atol=0.02)
    back = perspective_to_equirect(crops, rots, width)
    assert back.shape == smooth.shape and back.dtype == np.float32
    assert np.abs(back - smooth).max() < 0.01
    crops, rots = equirect_to_crops(smooth, size=64, layout=CUBE_LAYOUT, mode="nearest")
    back = perspective_to_equirect(crops, rots, width, mode="nearest")
    assert np.abs(back - smooth).max() < 0.03 and np.abs(back - smooth).mean() < 0.002


# --------------------------------------------------------------------------- Matrix-3D interop and validation


def test_matrix3d_cameras_round_trip_and_store_w2c(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    c2w = np.stack([np.eye(4)] * 5)
    c2w[:, :3, :3] = Rotation.random(5, random_state=rng).as_matrix()
    c2w[:, :3, 3] = rng.uniform(-10, 10, (5, 3))
    path = tmp_path / "cameras.json"
    save_matrix3d_cameras(path, c2w)
    stored = np.array(json.loads(path.read_text()))
    assert stored.shape == (5, 4, 4)
    np.testing.assert_allclose(stored @ c2w, np.broadcast_to(np.eye(4), c2w.shape), atol=1e-12)  # w2c
    np.testing.assert_allclose(load_matrix3d_cameras(path), c2w, atol=1e-12)


def test_matrix3d_cameras_reject_bad_files(tmp_path: Path) -> None:
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("[[1, 2")
    with pytest.raises(ValueError, match="bad.json"):
        load_matrix3d_cameras(bad_json)
    scaled = tmp_path / "scaled.json"
    scaled.write_text(json.dumps([(2 * np.eye(4)).tolist()]))
    with pytest.raises(ValueError, match="scaled.json"):
        load_matrix3d_cameras(scaled)


def test_as_c2w_array_accepts_the_documented_shapes() -> None:
    pose = pose_from_heading((1, 2, 3), 0.7)
    for given_poses, n in ((pose, 1), (np.stack([pose] * 3), 3), (pose.reshape(1, 16), 1),
                           (np.stack([pose] * 2).reshape(2, 16), 2), (pose.reshape(16).tolist(), 1)):
        out = as_c2w_array(given_poses)
        assert out.shape == (n, 4, 4) and out.dtype == np.float64
        np.testing.assert_array_equal(out[0], pose)


def _with(pose: np.ndarray, index: tuple, value: float) -> np.ndarray:
    out = pose.copy()
    out[index] = value
    return out


@pytest.mark.parametrize(("poses", "match"), [
    (np.eye(3), "4x4"),
    (np.zeros((2, 15)), "4x4"),
    (_with(np.eye(4), (0, 3), np.nan), "non-finite"),
    (_with(np.eye(4), (1, 1), 2.0), "not a rigid"),
    (_with(np.eye(4), (3, 0), 0.5), "not a rigid"),
    (np.diag([1.0, 1.0, -1.0, 1.0]), "reflection"),
])
def test_as_c2w_array_rejects_bad_poses(poses: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        as_c2w_array(poses)
