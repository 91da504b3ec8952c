"""Trajectory guidance: a panorama and its depth become a coloured mesh, rendered along a camera path into
equirect RGB frames plus a validity mask (Matrix-3D's conditioning for its video model).

Mesh: every equirect pixel's depth gives a world-space vertex (DESIGN.md section 1 rays, times range,
through the panorama's c2w) coloured with the pixel; neighbouring pixels make two triangles per quad,
wrapping across the 360° seam, and each pole row is closed by a fan around one vertex at the row's mean
position. Each vertex is lifted along a ray ``VERTEX_OFFSET`` off its pixel's centre, diagonally,
so that no pixel-centre ray from the panorama's own pose (or one yawed by whole pixels) passes through a
vertex or along an edge: Embree's triangle test is not watertight there, and rays through shared vertices
fall between the triangles (0.02-0.15% of them on OpenArena levels, more at higher resolution, and up to
15% depending on how the rays' directions were rounded).

Invisible edges: a pixel whose depth varies over its 1-ring by more than ``threshold`` relative to its
own depth ((max - min) / depth), or has no depth, is invisible (``invisible_pixels``); pixels without depth
(sky) make no faces at all. Every triangle is split between its corners' classes along the lines joining
its edges' midpoints (a face with a visible corner lies inside that pixel's 1-ring, so never spans a depth
edge), so each pixel owns the part of the surface nearest to it, as its own footprint on the panorama:
a visible pixel is surrounded by visible surface and an invisible one by the "invisible" object. Renders
show black holes where the mesh has no information (instead of rubber faces stretched across depth
edges), and the mask is exactly the pixels whose first hit is a visible face.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataset.core.conventions import (
    as_c2w_array,
    c2w_to_w2c,
    crop_rotation,
    equirect_directions,
    lonlat_to_direction,
    pixel_to_lonlat,
)
from dataset.core.scene import Material, Scene, SceneObject
from dataset.core.trajectories import read_trajectory_file

DEFAULT_THRESHOLD = 0.05
"""Relative 1-ring depth variation above which a pixel is invisible."""

VERTEX_OFFSET = 2e-5
"""Radians (in longitude and in latitude) between a pixel's centre and the direction its mesh vertex is
lifted along, so pixel-centre rays pass this far inside a triangle. Rays miss from float32 rounding, an
angle: on OpenArena levels some still miss at 4e-7 rad and none from 1.6e-6 rad up, at any width. At the
panorama's pose a pixel shows its own colour up to 2 x (this angle / its pixel's angle) of its difference
to its upper and left neighbours: under 1 level of 8 bits up to 2048 px wide, so nearly always exact."""


def invisible_pixels(depth: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """(H, W) bool: pixels on depth discontinuities (or without depth) by the 1-ring relative variation."""
    d = np.asarray(depth, np.float64)
    padded = np.pad(d, ((1, 1), (0, 0)), mode="edge")
    padded = np.concatenate([padded[:, -1:], padded, padded[:, :1]], axis=1)  # wrap the 360° seam
    h, w = d.shape
    ring = np.stack([padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    with np.errstate(divide="ignore", invalid="ignore"):
        variation = (ring.max(0) - ring.min(0)) / d
    return ~(d > 0) | ~np.isfinite(variation) | (variation > threshold)


@dataclass
class PanoramaMesh:
    """A panorama as a renderable scene: object 0 holds the visible faces, object 1 the invisible ones."""

    scene: Scene
    invisible: np.ndarray
    """(H, W) bool invisible pixels."""


def split_by_class(vertices: np.ndarray, colours: np.ndarray, faces: np.ndarray, visible: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split every triangle whose corners differ in ``visible`` along the segment joining the midpoints of its
    two mixed edges: the corner on its own keeps a triangle, the other two a quad (two triangles), each of its
    corners' class. Midpoints are shared by the faces of an edge (no cracks) and lie on the face (same surface,
    linearly interpolated colour). Returns vertices, colours, faces and per-face visibility."""
    cls = visible[faces]
    mixed = cls.any(1) & ~cls.all(1)
    keep, split = faces[~mixed], faces[mixed]
    c = cls[mixed]
    # Roll each mixed face so that its lone corner comes first; the winding stays the same.
    lone = np.where(c[:, 0] != c[:, 1], np.where(c[:, 0] != c[:, 2], 0, 1), 2)
    rolled = split[np.arange(len(split))[:, None], (lone[:, None] + np.arange(3)) % 3]
    o, p, q = rolled.T
    ends = np.sort(np.stack([np.stack([o, p], 1), np.stack([o, q], 1)]), axis=2).reshape(-1, 2)
    edges, inverse = np.unique(ends, axis=0, return_inverse=True)
    mid = len(vertices) + inverse.reshape(2, -1)
    m_op, m_oq = mid
    new_faces = np.concatenate([keep, np.stack([o, m_op, m_oq], 1), np.stack([m_op, p, q], 1),
                                np.stack([m_op, q, m_oq], 1)])
    lone_vis = visible[o]
    face_visible = np.concatenate([cls[~mixed].all(1), lone_vis, ~lone_vis, ~lone_vis])
    vertices = np.concatenate([vertices, 0.5 * (vertices[edges[:, 0]] + vertices[edges[:, 1]])])
    colours = np.concatenate([colours, 0.5 * (colours[edges[:, 0]] + colours[edges[:, 1]])])
    return vertices, colours, new_faces, face_visible


def panorama_mesh(rgb: np.ndarray, depth: np.ndarray, c2w: np.ndarray,
                  threshold: float = DEFAULT_THRESHOLD) -> PanoramaMesh:
    """Mesh of an equirect panorama (H, W, 3) uint8 with range depth (H, W) metres seen from ``c2w``."""
    h, w = depth.shape
    if rgb.shape[:2] != (h, w):
        raise ValueError(f"panorama {rgb.shape[:2]} and depth {(h, w)} sizes differ")
    c2w = as_c2w_array(c2w)[0]
    invisible = invisible_pixels(depth, threshold)
    lon, lat = pixel_to_lonlat(np.arange(w)[None] + 0.5, np.arange(h)[:, None] + 0.5, w, h)
    dirs = lonlat_to_direction(*np.broadcast_arrays(lon + VERTEX_OFFSET, lat - VERTEX_OFFSET))  # right and down
    d = np.where(depth > 0, depth, 0.0)
    cam = dirs * d[..., None]
    verts = (cam.reshape(-1, 3) @ c2w[:3, :3].T + c2w[:3, 3])
    # Poles: one vertex per pole at the mean of its row (only over pixels with depth).
    top = verts[:w][depth[0] > 0].mean(0) if (depth[0] > 0).any() else c2w[:3, 3]
    bottom = verts[-w:][depth[-1] > 0].mean(0) if (depth[-1] > 0).any() else c2w[:3, 3]
    verts = np.concatenate([verts, top[None], bottom[None]])
    top_i, bottom_i = h * w, h * w + 1
    idx = np.arange(h * w).reshape(h, w)
    right = np.roll(idx, -1, axis=1)
    a, b, c, e = idx[:-1], right[:-1], idx[1:], right[1:]
    faces = np.concatenate([np.stack([a, c, b], -1).reshape(-1, 3), np.stack([b, c, e], -1).reshape(-1, 3),
                            np.stack([np.full(w, top_i), idx[0], right[0]], -1),
                            np.stack([np.full(w, bottom_i), right[-1], idx[-1]], -1)])
    colour = rgb.reshape(-1, 3).astype(np.float32) / 255.0
    colour = np.concatenate([colour, [colour[:w].mean(0), colour[-w:].mean(0)]])
    vis = ~invisible.reshape(-1)
    vis = np.concatenate([vis, [vis[:w].all(), vis[-w:].all()]])
    has_depth = np.concatenate([(depth > 0).reshape(-1), [(depth[0] > 0).any(), (depth[-1] > 0).any()]])
    faces = faces[has_depth[faces].all(axis=1)]  # no depth, no surface: those rays see nothing
    verts, colour, faces, face_visible = split_by_class(verts, colour, faces, vis)
    scene = Scene(vertices=verts.astype(np.float32), faces=faces.astype(np.int32),
                  face_material=np.zeros(len(faces), np.int32), materials=[Material("vertex colour", (1, 1, 1))],
                  face_object=np.where(face_visible, 0, 1).astype(np.int32),
                  objects=[SceneObject("visible", "structure"), SceneObject("invisible", "structure")],
                  colors=colour[faces], baked_lighting=True, name="panorama mesh")
    return PanoramaMesh(scene, invisible)


def render_guidance(mesh: PanoramaMesh, c2w: np.ndarray, width: int, threads: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Equirect guidance frames (N, H, W, 3) uint8 and masks (N, H, W) bool along poses (N, 4, 4)."""
    from dataset.render.embedded import EmbeddedRenderer, RenderSettings  # numba: loaded when first rendering

    settings = RenderSettings(auto_gain=False, mipmaps=False)
    if threads:
        settings = RenderSettings(auto_gain=False, mipmaps=False, threads=threads)
    with EmbeddedRenderer(mesh.scene, settings) as renderer:
        frames = renderer.render(c2w, width)
    mask = frames.instance == 0
    rgb = np.where(mask[..., None], frames.rgb, 0).astype(np.uint8)
    return rgb, mask


# ---------------------------------------------------------------------------------------------- trajectories

PRESETS = ("straight", "s_curve", "l_curve", "r_curve")


def depth_ahead(depth: np.ndarray, half_angle_deg: float = 10.0) -> float:
    """Median range in the forward cone (equirect centre) of a panorama; 0 if nothing is there."""
    h, w = depth.shape
    du = max(1, round(w * half_angle_deg / 360))
    dv = max(1, round(h * half_angle_deg / 180))
    patch = depth[h // 2 - dv:h // 2 + dv, w // 2 - du:w // 2 + du]
    hits = patch[patch > 0]
    return float(np.median(hits)) if hits.size else 0.0


def preset_trajectory(name: str, depth: np.ndarray, frames: int = 49, movement: float = 0.5) -> np.ndarray:
    """Poses (frames, 4, 4) in the panorama's camera frame: move ``movement`` x the depth ahead, facing along
    the path. ``straight``; ``s_curve`` (sideways sway); ``l_curve`` / ``r_curve`` (turning 60° left/right)."""
    if name not in PRESETS:
        raise ValueError(f"unknown trajectory preset {name!r}: use one of {', '.join(PRESETS)} or a JSON file")
    ahead = depth_ahead(depth)
    if ahead <= 0:
        raise ValueError("nothing ahead of the panorama's centre to move towards (no depth there)")
    length = movement * ahead
    s = np.linspace(0.0, 1.0, frames)
    if name == "straight":
        x, z = np.zeros_like(s), s * length
        dx, dz = np.zeros_like(s), np.full_like(s, length)
    elif name == "s_curve":  # sideways sway that starts and ends level, so frame 0 is the panorama's view
        a = 0.3 * length
        x, z = a * np.sin(2 * np.pi * s) * np.sin(np.pi * s), s * length
        dx = a * np.pi * (2 * np.cos(2 * np.pi * s) * np.sin(np.pi * s) + np.sin(2 * np.pi * s) * np.cos(np.pi * s))
        dz = np.full_like(s, length)
    else:
        turn = np.radians(60.0) * (1 if name == "r_curve" else -1)  # +x is right in the camera frame
        radius = length / abs(turn)
        angle = s * abs(turn)
        x, z = np.sign(turn) * radius * (1 - np.cos(angle)), radius * np.sin(angle)
        dx, dz = np.sign(turn) * np.sin(angle), np.cos(angle)
    poses = np.repeat(np.eye(4)[None], frames, axis=0)
    yaw = np.degrees(np.arctan2(dx, dz))  # turning right = towards +x
    for i in range(frames):
        poses[i, :3, :3] = crop_rotation(yaw[i], 0.0)
        poses[i, :3, 3] = [x[i], 0.0, z[i]]
    return poses


def safe_rescale(poses: np.ndarray, depth: np.ndarray, fraction: float = 0.5) -> np.ndarray:
    """Shrink the path (about its start) so no camera gets farther from the start than ``fraction`` x the
    panorama's depth in its direction (poses in the panorama camera frame)."""
    from dataset.core.conventions import direction_to_pixel

    pos = poses[:, :3, 3]
    dist = np.linalg.norm(pos, axis=1)
    moving = dist > 1e-9
    if not moving.any():
        return poses
    u, v = direction_to_pixel(pos[moving] / dist[moving, None], depth.shape[1], depth.shape[0])
    d = depth[np.clip(v.astype(int), 0, depth.shape[0] - 1), np.clip(u.astype(int), 0, depth.shape[1] - 1)]
    limits = np.where(d > 0, fraction * d, np.inf)
    scale = min(1.0, float(np.min(limits / dist[moving])))
    out = poses.copy()
    out[:, :3, 3] *= scale
    return out


# ---------------------------------------------------------------------------------------------- inputs


@dataclass
class GuidanceInputs:
    """What guidance is built from: a panorama, its depth and pose, and for a dataset clip its own camera path
    and frame rate."""

    rgb: np.ndarray
    """(H, W, 3) uint8 equirect panorama."""
    depth: np.ndarray
    """(H, W) float32 range depth in metres (0 = no depth)."""
    c2w: np.ndarray
    """(4, 4) world pose of the panorama (identity for a panorama from files)."""
    clip_poses: np.ndarray | None = None
    """(N, 4, 4) world poses of the clip whose first frame the panorama is (None for files)."""
    fps: float | None = None
    """That clip's frame rate (None for files)."""


def inputs_from_files(panorama: str | Path, depth: str | Path) -> GuidanceInputs:
    """A panorama image (PNG/JPG) and its range depth ``.npy`` (H, W) in metres, posed at the origin."""
    from PIL import Image

    rgb = np.asarray(Image.open(panorama).convert("RGB"))
    return GuidanceInputs(rgb, np.load(depth, allow_pickle=False).astype(np.float32), np.eye(4))


def inputs_from_clip(dataset_dir: str | Path, clip_id: str) -> GuidanceInputs:
    """The first frame, depth and pose of a committed dataset clip, with its poses and frame rate."""
    from dataset.store.reader import PanoDataset

    clip = next((c for c in PanoDataset(dataset_dir).clips() if c.clip_id == clip_id), None)
    if clip is None:
        raise ValueError(f"{dataset_dir} has no committed clip {clip_id!r} (see matrix-pano stats {dataset_dir})")
    c2w = clip.c2w
    return GuidanceInputs(clip.frames()[0], clip.depth()[0], c2w[0], c2w, clip.row["fps"])


def guidance_poses(inputs: GuidanceInputs, trajectory: str | None = None, frames: int = 49,
                   movement: float = 0.5, safety: float = 0.0) -> np.ndarray:
    """World poses (N, 4, 4) to render guidance along. ``trajectory`` is a preset (``PRESETS``: ``frames``
    poses moving ``movement`` x the depth ahead, from the panorama's pose) or a trajectory file of world poses
    (``dataset.core.trajectories``); ``safety`` > 0 shrinks it with ``safe_rescale``. Without a trajectory,
    a clip's own poses: guidance to compare with its real frames."""
    if trajectory is None:
        if inputs.clip_poses is None:
            raise ValueError("a panorama from files needs a trajectory: a file or one of the presets "
                             + ", ".join(PRESETS))
        return inputs.clip_poses
    preset = trajectory in PRESETS
    local = (preset_trajectory(trajectory, inputs.depth, frames, movement) if preset
             else read_trajectory_file(trajectory).c2w)
    if safety:
        local = safe_rescale(local, inputs.depth, safety)
    return inputs.c2w[None] @ local if preset else local


def run_guidance(out_dir: str | Path, inputs: GuidanceInputs, trajectory: str | None = None, frames: int = 49,
                 movement: float = 0.5, safety: float = 0.0, fps: float = 12.0,
                 threshold: float = DEFAULT_THRESHOLD) -> dict:
    """Guidance of ``inputs`` along ``guidance_poses(inputs, trajectory, frames, movement, safety)``, written by
    ``write_guidance`` at the clip's own frame rate (``fps`` for a panorama from files); returns its summary."""
    poses = guidance_poses(inputs, trajectory, frames, movement, safety)
    rate = inputs.fps if inputs.fps is not None else fps
    return write_guidance(out_dir, inputs.rgb, inputs.depth, inputs.c2w, poses, rate, threshold)


# ---------------------------------------------------------------------------------------------- outputs


def write_guidance(out_dir: str | Path, rgb: np.ndarray, depth: np.ndarray, c2w0: np.ndarray, poses: np.ndarray,
                   fps: float = 12.0, threshold: float = DEFAULT_THRESHOLD) -> dict:
    """Render guidance for world poses and write rendered_rgb.mp4, rendered_mask.mp4, cameras.json (Matrix-3D
    format, relative to the panorama's camera) and contact_sheet.png into ``out_dir``; returns a summary."""
    from PIL import Image

    from dataset.core.codecs import encode_mp4
    from dataset.core.conventions import save_matrix3d_cameras

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mesh = panorama_mesh(rgb, depth, c2w0, threshold)
    frames, masks = render_guidance(mesh, poses, rgb.shape[1])
    (out / "rendered_rgb.mp4").write_bytes(encode_mp4(frames, fps, crf=12))
    mask_rgb = np.repeat((masks[..., None] * 255).astype(np.uint8), 3, axis=3)
    (out / "rendered_mask.mp4").write_bytes(encode_mp4(mask_rgb, fps, crf=0))
    save_matrix3d_cameras(out / "cameras.json", c2w_to_w2c(c2w0)[None] @ poses)
    picks = sorted({0, len(frames) // 2, len(frames) - 1})
    sheet = np.concatenate([np.concatenate([frames[i], mask_rgb[i]], axis=1) for i in picks], axis=0)
    Image.fromarray(sheet).save(out / "contact_sheet.png")
    return {"frames": len(frames), "mask_fraction": [float(m.mean()) for m in masks],
            "invisible_fraction": float(mesh.invisible.mean())}


# ---------------------------------------------------------------------------------------------- quality


def splat_render(rgb: np.ndarray, depth: np.ndarray, c2w0: np.ndarray, poses: np.ndarray, width: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The point-cloud baseline (Matrix-3D's ablation): every pixel with depth becomes a point, splatted
    into each target equirect as one pixel with a z-buffer. Returns frames and masks like ``render_guidance``."""
    from dataset.core.conventions import direction_to_pixel

    h0, w0 = depth.shape
    c2w0 = as_c2w_array(c2w0)[0]
    valid = (depth > 0).reshape(-1)
    dirs = equirect_directions(w0, h0, dtype=np.float64).reshape(-1, 3)[valid]
    world = (dirs * depth.reshape(-1)[valid, None]) @ c2w0[:3, :3].T + c2w0[:3, 3]
    colour = rgb.reshape(-1, 3)[valid]
    height = width // 2
    frames = np.zeros((len(poses), height, width, 3), np.uint8)
    masks = np.zeros((len(poses), height, width), bool)
    for i, pose in enumerate(as_c2w_array(poses)):
        local = (world - pose[:3, 3]) @ pose[:3, :3]
        rng = np.linalg.norm(local, axis=1)
        u, v = direction_to_pixel(local / np.maximum(rng, 1e-9)[:, None], width, height)
        pix = np.clip(v.astype(np.int64), 0, height - 1) * width + np.clip(u.astype(np.int64), 0, width - 1)
        order = np.lexsort((rng, pix))  # per pixel, nearest point first
        first = np.ones(len(order), bool)
        first[1:] = pix[order][1:] != pix[order][:-1]
        keep = order[first]
        frames[i].reshape(-1, 3)[pix[keep]] = colour[keep]
        masks[i].reshape(-1)[pix[keep]] = True
    return frames, masks


def guidance_quality(real_rgb: np.ndarray, real_depth: np.ndarray, c2w: np.ndarray,
                     threshold: float = DEFAULT_THRESHOLD) -> list[dict]:
    """Per frame of a real clip: distance travelled, mesh guidance PSNR on its mask and mask fraction, and the
    same for the point-cloud splat (built from frame 0 only, compared with the clip's real frames)."""
    from dataset.core.codecs import psnr

    width = real_rgb.shape[2]
    mesh = panorama_mesh(real_rgb[0], real_depth[0], c2w[0], threshold)
    g_rgb, g_mask = render_guidance(mesh, c2w, width)
    s_rgb, s_mask = splat_render(real_rgb[0], real_depth[0], c2w[0], c2w, width)
    rows = []
    for i in range(len(c2w)):
        rows.append({"frame": i, "distance_m": float(np.linalg.norm(c2w[i, :3, 3] - c2w[0, :3, 3])),
                     "mesh_psnr": psnr(g_rgb[i][g_mask[i]], real_rgb[i][g_mask[i]]),
                     "mesh_mask": float(g_mask[i].mean()),
                     "splat_psnr": psnr(s_rgb[i][s_mask[i]], real_rgb[i][s_mask[i]]),
                     "splat_mask": float(s_mask[i].mean())})
    return rows
