"""The fixed conventions of DESIGN.md section 1, implemented once.

World: right-handed, Z up, metres. Camera: OpenCV (x right, y down, z forward).
Poses are camera-to-world 4x4 float64 matrices (``c2w``). Equirect panoramas
have W = 2H; pixel (u, v) has its centre at (u + 0.5, v + 0.5); longitude
λ = 2π((u + 0.5)/W − 0.5), latitude φ = π(0.5 − (v + 0.5)/H), and the camera
ray is d = (cos φ sin λ, −sin φ, cos φ cos λ). Depth is range (Euclidean
distance along the ray) in metres, 0 = no surface.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

EYE_HEIGHT = 1.6
"""Default camera height above the walkable surface, metres."""

# --------------------------------------------------------------------------- equirect


def check_equirect_size(width: int, height: int | None = None) -> tuple[int, int]:
    """Return (W, H) for an equirect of the given width, raising on sizes that break W = 2H."""
    if height is None:
        height = width // 2
    if width <= 0 or height <= 0 or width != 2 * height:
        raise ValueError(f"equirect size {width}x{height} is invalid: width must be a positive even "
                         f"number and equal 2 x height (e.g. 960x480)")
    return int(width), int(height)


def pixel_to_lonlat(u: np.ndarray, v: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Continuous pixel coordinates (pixel centres at integer + 0.5) to (longitude, latitude) in radians."""
    lon = 2.0 * np.pi * (np.asarray(u, np.float64) / width - 0.5)
    lat = np.pi * (0.5 - np.asarray(v, np.float64) / height)
    return lon, lat


def lonlat_to_pixel(lon: np.ndarray, lat: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(longitude, latitude) in radians to continuous pixel coordinates (centres at integer + 0.5)."""
    u = (np.asarray(lon, np.float64) / (2.0 * np.pi) + 0.5) * width
    v = (0.5 - np.asarray(lat, np.float64) / np.pi) * height
    return u, v


def lonlat_to_direction(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Unit ray directions (..., 3) in the camera frame for longitude/latitude in radians."""
    cl = np.cos(lat)
    return np.stack([cl * np.sin(lon), -np.sin(lat), cl * np.cos(lon)], axis=-1)


def direction_to_lonlat(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame directions (..., 3), any length, to (longitude, latitude) in radians."""
    d = np.asarray(d, np.float64)
    lon = np.arctan2(d[..., 0], d[..., 2])
    lat = np.arctan2(-d[..., 1], np.hypot(d[..., 0], d[..., 2]))
    return lon, lat


def equirect_directions(width: int, height: int | None = None, dtype=np.float32) -> np.ndarray:
    """(H, W, 3) unit camera-frame ray direction of every equirect pixel centre."""
    width, height = check_equirect_size(width, height)
    u = np.arange(width) + 0.5
    v = np.arange(height) + 0.5
    lon, lat = pixel_to_lonlat(u[None, :], v[:, None], width, height)
    lon, lat = np.broadcast_arrays(lon, lat)
    return lonlat_to_direction(lon, lat).astype(dtype)


def direction_to_pixel(d: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame directions to continuous equirect pixel coordinates (u in [0, W), v in [0, H])."""
    lon, lat = direction_to_lonlat(d)
    u, v = lonlat_to_pixel(lon, lat, width, height)
    return np.mod(u, width), v


# --------------------------------------------------------------------------- poses


def c2w_to_w2c(c2w: np.ndarray) -> np.ndarray:
    """Invert rigid camera-to-world poses (..., 4, 4) exactly (rotation transposed)."""
    c2w = np.asarray(c2w, np.float64)
    r = c2w[..., :3, :3]
    t = c2w[..., :3, 3]
    out = np.zeros_like(c2w)
    rt = np.swapaxes(r, -1, -2)
    out[..., :3, :3] = rt
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", rt, t)
    out[..., 3, 3] = 1.0
    return out


w2c_to_c2w = c2w_to_w2c
"""World-to-camera to camera-to-world: the same rigid inverse."""


def rotation_from_heading(heading: float, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """3x3 camera-to-world rotation for a heading (rad, CCW from +X), pitch (rad, up positive) and roll.

    With pitch = roll = 0: z_cam = (cos ψ, sin ψ, 0), x_cam = (sin ψ, −cos ψ, 0), y_cam = (0, 0, −1).
    """
    cp, sp = math.cos(pitch), math.sin(pitch)
    ch, sh = math.cos(heading), math.sin(heading)
    z = np.array([cp * ch, cp * sh, sp])
    x = np.array([sh, -ch, 0.0])
    y = np.cross(z, x)
    if roll:
        cr, sr = math.cos(roll), math.sin(roll)
        x, y = cr * x + sr * y, -sr * x + cr * y
    return np.stack([x, y, z], axis=1)


def pose_from_heading(position: Sequence[float], heading: float, pitch: float = 0.0,
                      roll: float = 0.0) -> np.ndarray:
    """4x4 c2w for a camera at ``position`` looking along heading/pitch (radians)."""
    c2w = np.eye(4)
    c2w[:3, :3] = rotation_from_heading(heading, pitch, roll)
    c2w[:3, 3] = np.asarray(position, np.float64)
    return c2w


def heading_of(c2w: np.ndarray) -> np.ndarray:
    """Heading (rad, CCW from +X) of the camera's forward axis projected on the XY plane."""
    c2w = np.asarray(c2w, np.float64)
    return np.arctan2(c2w[..., 1, 2], c2w[..., 0, 2])


def look_at(position: Sequence[float], target: Sequence[float]) -> np.ndarray:
    """4x4 c2w for a level-rolled camera at ``position`` looking at ``target``."""
    d = np.asarray(target, np.float64) - np.asarray(position, np.float64)
    heading = math.atan2(d[1], d[0])
    pitch = math.atan2(d[2], math.hypot(d[0], d[1]))
    return pose_from_heading(position, heading, pitch)


def as_c2w_array(poses) -> np.ndarray:
    """Validate and return poses as (N, 4, 4) float64; accepts (4, 4), (N, 4, 4), 16-lists or (N, 16)."""
    arr = np.asarray(poses, dtype=np.float64)
    if arr.shape == (16,) or arr.shape == (4, 4):
        arr = arr.reshape(1, 4, 4)
    elif arr.ndim == 2 and arr.shape[1] == 16:
        arr = arr.reshape(-1, 4, 4)
    if arr.ndim != 3 or arr.shape[1:] != (4, 4):
        raise ValueError(f"poses must be 4x4 matrices or lists of 16 numbers (row-major), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("poses contain non-finite numbers")
    r = arr[:, :3, :3]
    err = np.abs(np.einsum("nij,nkj->nik", r, r) - np.eye(3)).max(axis=(1, 2))
    bad = np.flatnonzero((err > 1e-4) | (np.abs(arr[:, 3] - [0, 0, 0, 1]).max(1) > 1e-9))
    if len(bad):
        raise ValueError(f"pose {int(bad[0])} is not a rigid camera-to-world matrix: its 3x3 block must be a "
                         f"rotation and its last row 0 0 0 1 (row-major 16 numbers)")
    if (np.linalg.det(r) < 0).any():
        raise ValueError("poses contain a reflection (determinant -1): c2w must be a proper rotation")
    return arr


def poses_to_rows(c2w) -> list[list[float]]:
    """Validated poses (N, 4, 4) as stored rows: one list of 16 numbers (row-major c2w) per frame."""
    return [m.reshape(-1).tolist() for m in as_c2w_array(c2w)]


def rows_to_poses(rows) -> np.ndarray:
    """Stored rows (lists of 16 numbers, row-major c2w) back to validated poses (N, 4, 4) float64."""
    arr = np.asarray(rows, np.float64)
    if arr.ndim != 2 or arr.shape[1] != 16:
        raise ValueError(f"stored poses must be lists of 16 numbers (row-major c2w), got shape {arr.shape}")
    return as_c2w_array(arr)


# --------------------------------------------------------------------------- frames of other tools

GLTF_TO_WORLD = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
"""Rotation taking Y-up right-handed (glTF/OBJ/PLY) coordinates to world: (x, y, z) -> (x, -z, y)."""

UP_AXIS_TO_WORLD = {
    "y": GLTF_TO_WORLD,
    "z": np.eye(3),
    "x": np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]),
}
"""Rotation to world for a right-handed source whose up axis is the key."""


def gltf_to_world(points: np.ndarray) -> np.ndarray:
    """Y-up right-handed points (..., 3) to world Z-up: (x, y, z) -> (x, -z, y)."""
    p = np.asarray(points)
    return np.stack([p[..., 0], -p[..., 2], p[..., 1]], axis=-1)


def world_to_gltf(points: np.ndarray) -> np.ndarray:
    """World Z-up points (..., 3) to Y-up right-handed: (x, y, z) -> (x, z, -y)."""
    p = np.asarray(points)
    return np.stack([p[..., 0], p[..., 2], -p[..., 1]], axis=-1)


def ue_to_world(points_cm: np.ndarray) -> np.ndarray:
    """Unreal (left-handed, Z up, centimetres) points to world metres: (X, -Y, Z) / 100."""
    p = np.asarray(points_cm, np.float64)
    return np.stack([p[..., 0], -p[..., 1], p[..., 2]], axis=-1) / 100.0


def world_to_ue(points_m: np.ndarray) -> np.ndarray:
    """World metres to Unreal centimetres: (x, -y, z) * 100."""
    p = np.asarray(points_m, np.float64)
    return np.stack([p[..., 0], -p[..., 1], p[..., 2]], axis=-1) * 100.0


QUAKE_UNIT = 0.0254
"""Metres per Quake 3 unit (one inch)."""


def quake_to_world(points: np.ndarray) -> np.ndarray:
    """Quake 3 BSP points (Z up, right-handed, inches) to world metres: (x, y, z) * 0.0254."""
    return np.asarray(points, np.float64) * QUAKE_UNIT


def _ue_axes(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """Rows: UE forward (X), right (Y), up (Z) axes of a UE rotator (degrees), in UE coordinates."""
    p, y, r = (math.radians(a) for a in (pitch, yaw, roll))
    sp, cp, sy, cy, sr, cr = math.sin(p), math.cos(p), math.sin(y), math.cos(y), math.sin(r), math.cos(r)
    return np.array([
        [cp * cy, cp * sy, sp],
        [sr * sp * cy - cr * sy, sr * sp * sy + cr * cy, -sr * cp],
        [-(cr * sp * cy + sr * sy), cy * sr - cr * sp * sy, cr * cp],
    ])


def ue_pose_to_c2w(location_cm: Sequence[float], rotation_deg: Sequence[float]) -> np.ndarray:
    """UE camera location (cm) and rotator (pitch, yaw, roll in degrees) to an OpenCV c2w in world metres."""
    fwd, right, up = _ue_axes(*rotation_deg)
    flip = np.array([1.0, -1.0, 1.0])
    c2w = np.eye(4)
    c2w[:3, 0] = right * flip
    c2w[:3, 1] = -up * flip
    c2w[:3, 2] = fwd * flip
    c2w[:3, 3] = ue_to_world(location_cm)
    return c2w


def c2w_to_ue_pose(c2w: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
    """OpenCV c2w (world metres) to UE location (cm) and rotator (pitch, yaw, roll) in degrees."""
    c2w = np.asarray(c2w, np.float64)
    flip = np.array([1.0, -1.0, 1.0])
    fwd = c2w[:3, 2] * flip
    right = c2w[:3, 0] * flip
    pitch = math.degrees(math.atan2(fwd[2], math.hypot(fwd[0], fwd[1])))
    yaw = math.degrees(math.atan2(fwd[1], fwd[0]))
    _, right0, up0 = _ue_axes(pitch, yaw, 0.0)
    roll = math.degrees(math.atan2(-float(right @ up0), float(right @ right0)))
    return world_to_ue(c2w[:3, 3]), (pitch, yaw, roll)


# --------------------------------------------------------------------------- perspective cameras


def intrinsics(width: int, height: int, fov_deg: float = 90.0) -> np.ndarray:
    """3x3 pinhole K with horizontal field of view ``fov_deg``, square pixels, centred principal point."""
    if not 0.0 < fov_deg < 180.0:
        raise ValueError(f"field of view {fov_deg} must be between 0 and 180 degrees")
    f = 0.5 * width / math.tan(math.radians(fov_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def perspective_directions(width: int, height: int, fov_deg: float = 90.0, normalize: bool = True,
                           dtype=np.float32) -> np.ndarray:
    """(H, W, 3) camera-frame ray directions of a pinhole camera's pixel centres (z = 1 unless normalised)."""
    k = intrinsics(width, height, fov_deg)
    xs = (np.arange(width) + 0.5 - k[0, 2]) / k[0, 0]
    ys = (np.arange(height) + 0.5 - k[1, 2]) / k[1, 1]
    x, y = np.meshgrid(xs, ys)
    d = np.stack([x, y, np.ones_like(x)], axis=-1)
    if normalize:
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
    return d.astype(dtype)


@functools.lru_cache(maxsize=16)
def _range_scale(width: int, height: int, fov_deg: float) -> np.ndarray:
    """sqrt(1 + x_n² + y_n²) per pixel (computed once per image size: conversions run per frame)."""
    scale = np.linalg.norm(perspective_directions(width, height, fov_deg, normalize=False, dtype=np.float64), axis=-1)
    scale.flags.writeable = False
    return scale


def planar_to_range(planar: np.ndarray, fov_deg: float = 90.0) -> np.ndarray:
    """Planar z-depth image (H, W) of a pinhole camera to range: z · sqrt(1 + x_n² + y_n²)."""
    h, w = planar.shape[-2:]
    return (planar * _range_scale(w, h, float(fov_deg))).astype(np.result_type(planar, np.float32))


def range_to_planar(rng: np.ndarray, fov_deg: float = 90.0) -> np.ndarray:
    """Range image (H, W) of a pinhole camera to planar z-depth (inverse of ``planar_to_range``)."""
    h, w = rng.shape[-2:]
    return (rng / _range_scale(w, h, float(fov_deg))).astype(np.result_type(rng, np.float32))


def crop_rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """3x3 rotation of a crop camera in its panorama camera's frame.

    Yaw turns right (yaw 90 looks at equirect column 3W/4), pitch turns up; both in degrees.
    """
    y, p = math.radians(yaw_deg), math.radians(pitch_deg)
    ry = np.array([[math.cos(y), 0.0, math.sin(y)], [0.0, 1.0, 0.0], [-math.sin(y), 0.0, math.cos(y)]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(p), -math.sin(p)], [0.0, math.sin(p), math.cos(p)]])
    return ry @ rx


CROP12_LAYOUT: tuple[tuple[float, float], ...] = tuple(
    (yaw, pitch) for pitch in (0.0, 45.0, -45.0) for yaw in (0.0, 90.0, 180.0, 270.0))
"""The 12-crop layout for 3DGS supervision: yaw 0/90/180/270 x pitch 0/+45/-45 (degrees)."""

CUBE_LAYOUT: tuple[tuple[float, float], ...] = (
    (0.0, 0.0), (90.0, 0.0), (180.0, 0.0), (270.0, 0.0), (0.0, 90.0), (0.0, -90.0))
"""Cube faces as (yaw, pitch): front, right, back, left, up, down; FOV 90 each."""


def sample_equirect(image: np.ndarray, u: np.ndarray, v: np.ndarray, mode: str = "linear") -> np.ndarray:
    """Sample an equirect image at continuous pixel coordinates, wrapping horizontally, clamping vertically.

    ``mode`` is ``"linear"`` (bilinear, for colour) or ``"nearest"`` (for depth and ids).
    """
    h, w = image.shape[:2]
    if mode == "nearest":
        iu = np.mod(np.floor(u).astype(np.int64), w)
        iv = np.clip(np.floor(v).astype(np.int64), 0, h - 1)
        return image[iv, iu]
    if mode != "linear":
        raise ValueError(f"sampling mode {mode!r} is not one of 'linear', 'nearest'")
    x = u - 0.5
    y = np.clip(v - 0.5, 0, h - 1)
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    fx = (x - x0)[..., None] if image.ndim == 3 else x - x0
    fy = (y - y0)[..., None] if image.ndim == 3 else y - y0
    x0w, x1w = np.mod(x0, w), np.mod(x0 + 1, w)
    y1 = np.minimum(y0 + 1, h - 1)
    img = image.astype(np.float32)
    top = img[y0, x0w] * (1 - fx) + img[y0, x1w] * fx
    bot = img[y1, x0w] * (1 - fx) + img[y1, x1w] * fx
    out = top * (1 - fy) + bot * fy
    return _cast_like(out, image)


def _cast_like(values: np.ndarray, like: np.ndarray) -> np.ndarray:
    if np.issubdtype(like.dtype, np.integer):
        info = np.iinfo(like.dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(like.dtype)
    return values.astype(like.dtype)


def equirect_to_perspective(image: np.ndarray, rotation: np.ndarray, width: int, height: int,
                            fov_deg: float = 90.0, mode: str = "linear") -> np.ndarray:
    """Render a pinhole view (rotation = crop camera in the panorama camera frame) from an equirect image.

    For range depth use ``mode="nearest"``; the result stays range (see ``range_to_planar``).
    """
    d = perspective_directions(width, height, fov_deg, dtype=np.float64) @ np.asarray(rotation).T
    u, v = direction_to_pixel(d, image.shape[1], image.shape[0])
    return sample_equirect(image, u, v, mode)


def equirect_to_crops(image: np.ndarray, size: int = 512, fov_deg: float = 90.0,
                      layout: Sequence[tuple[float, float]] = CROP12_LAYOUT,
                      mode: str = "linear") -> tuple[np.ndarray, np.ndarray]:
    """Perspective crops of an equirect image: returns (crops (N, size, size, ...), rotations (N, 3, 3))."""
    rots = np.stack([crop_rotation(y, p) for y, p in layout])
    crops = np.stack([equirect_to_perspective(image, r, size, size, fov_deg, mode) for r in rots])
    return crops, rots


def perspective_to_equirect(images: Sequence[np.ndarray], rotations: Sequence[np.ndarray], width: int,
                            fov_deg: float = 90.0, mode: str = "linear") -> np.ndarray:
    """Stitch pinhole views (square or not, same size) into an equirect of the given width.

    Each equirect pixel takes the view whose optical axis is closest to its ray among the views that
    see it; pixels no view sees stay 0. Cube faces (``CUBE_LAYOUT``, FOV 90) cover the sphere.
    """
    width, height = check_equirect_size(width)
    imgs = [np.asarray(i) for i in images]
    rots = np.asarray(rotations, np.float64)
    if len(imgs) != len(rots) or not imgs:
        raise ValueError(f"got {len(imgs)} images for {len(rots)} rotations: give one rotation per view")
    ih, iw = imgs[0].shape[:2]
    k = intrinsics(iw, ih, fov_deg)
    d = equirect_directions(width, height, dtype=np.float64).reshape(-1, 3)
    local = np.einsum("nji,pj->npi", rots, d)  # each view's frame: R^T d
    z = local[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        px = k[0, 0] * local[..., 0] / z + k[0, 2]
        py = k[1, 1] * local[..., 1] / z + k[1, 2]
    inside = (z > 1e-9) & (px >= 0) & (px <= iw) & (py >= 0) & (py <= ih)
    score = np.where(inside, z, -np.inf)
    best = np.argmax(score, axis=0)
    seen = np.isfinite(score.max(axis=0))
    out = np.zeros((height * width,) + imgs[0].shape[2:], dtype=imgs[0].dtype)
    for i, img in enumerate(imgs):
        sel = np.flatnonzero(seen & (best == i))
        if len(sel):
            out[sel] = _sample_clamped(img, px[i, sel], py[i, sel], mode)
    return out.reshape((height, width) + imgs[0].shape[2:])


def _sample_clamped(image: np.ndarray, x: np.ndarray, y: np.ndarray, mode: str) -> np.ndarray:
    """Sample a perspective image at continuous pixel coordinates with edge clamping."""
    h, w = image.shape[:2]
    if mode == "nearest":
        return image[np.clip(np.floor(y).astype(np.int64), 0, h - 1), np.clip(np.floor(x).astype(np.int64), 0, w - 1)]
    if mode != "linear":
        raise ValueError(f"sampling mode {mode!r} is not one of 'linear', 'nearest'")
    xs = np.clip(x - 0.5, 0, w - 1)
    ys = np.clip(y - 0.5, 0, h - 1)
    x0 = np.minimum(np.floor(xs).astype(np.int64), w - 1)
    y0 = np.minimum(np.floor(ys).astype(np.int64), h - 1)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = xs - x0, ys - y0
    if image.ndim == 3:
        fx, fy = fx[:, None], fy[:, None]
    img = image.astype(np.float32)
    out = (img[y0, x0] * (1 - fx) + img[y0, x1] * fx) * (1 - fy) + (img[y1, x0] * (1 - fx) + img[y1, x1] * fx) * fy
    return _cast_like(out, image)


# --------------------------------------------------------------------------- Matrix-3D interop


def save_matrix3d_cameras(path: str | Path, c2w: np.ndarray) -> None:
    """Write poses as Matrix-3D's camera file: a JSON list of world-to-camera OpenCV 4x4 matrices."""
    w2c = c2w_to_w2c(as_c2w_array(c2w))
    Path(path).write_text(json.dumps([m.tolist() for m in w2c]))


def load_matrix3d_cameras(path: str | Path) -> np.ndarray:
    """Read a Matrix-3D camera file (JSON list of w2c 4x4) and return c2w poses (N, 4, 4)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read Matrix-3D camera file {path}: {exc}") from exc
    try:
        w2c = as_c2w_array(data)  # w2c of a rigid pose is rigid too
    except ValueError as exc:
        raise ValueError(f"{path} is not a Matrix-3D camera file (a JSON list of 4x4 w2c matrices): {exc}") from exc
    return c2w_to_w2c(w2c)
