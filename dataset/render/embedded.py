"""The embedded CPU renderer: Embree ray casting + a compiled shading kernel, no GPU or Unreal needed.

One ``EmbeddedRenderer`` is built per scene (BVH, texture atlas and per-face tables once) and then
renders any number of equirect or perspective frames. Depth is the range of the hit along each
pixel-centre ray (DESIGN.md), exact up to float32.

See-through surfaces: a ray that meets a cut-out texel of a masked material (``Material.alpha_mode``
``"mask"``: grates, fences, foliage) is cast again from just beyond that hit, up to ``MAX_CUTOUT_LAYERS``
times, so its colour, depth and object id are those of the surface behind; shadow rays pass through
cut-outs the same way. Only rays that hit masked materials pay for this; scenes without any render as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from dataset.core.conventions import as_c2w_array, check_equirect_size, equirect_directions, perspective_directions
from dataset.core.jobspec import MAX_SUPERSAMPLE, EmbeddedRendererSpec
from dataset.core.raycast import EmbreeCaster, Hits
from dataset.core.scene import Scene, default_poses
from dataset.render.base import Frames
from dataset.render.shading import (
    alpha_cut,
    box_downsample,
    build_atlas,
    rotate_directions,
    shade_kernel,
    texels_per_metre,
)

RENDERER_VERSION = "2"
"""Bumped when the same scene renders differently: 2 = see-through (alpha-tested) surfaces."""
MAX_CUTOUT_LAYERS = 8
"""Cut-out surfaces one ray passes through; the surface after that many is drawn whatever its alpha."""
CUTOUT_STEP = 1e-4
"""A ray continues from this far (relative to the hit distance, at least 1e-4 m) beyond a cut-out hit."""


@dataclass
class RenderSettings:
    """Lighting and quality settings of the embedded renderer."""

    supersample: int = 1
    """Colour samples per pixel side (1-4): s x s stratified rays per pixel, averaged."""
    sun_elevation_deg: float = 55.0
    """Sun height above the horizon, degrees."""
    sun_azimuth_deg: float = 30.0
    """Sun direction in the XY plane, degrees counter-clockwise from world +X."""
    sun_strength: float = 0.65
    """Direct sunlight on a surface facing the sun (linear units)."""
    sky_strength: float = 0.55
    """Ambient sky light on an upward-facing surface (linear units)."""
    shadows: bool = False
    """Cast shadow rays toward the sun (one extra ray per lit pixel)."""
    exposure: float = 1.0
    """Multiplier on all light, baked or not."""
    auto_gain: bool = True
    """Brighten dark scenes once per scene (never per frame, so clips do not flicker): probe panoramas
    from the spawn points set the tone-curve gain that brings their median brightness to the target."""
    target_brightness: float = 0.4
    """Median sRGB brightness (0-1) of the probe panoramas that the automatic gain aims at."""
    max_gain: float = 8.0
    """Upper bound of the automatic gain (it only brightens: its lower bound is 1)."""
    mipmaps: bool = True
    """Filter textures by ray footprint (trilinear mip-mapping): no shimmering at a distance."""
    sky_zenith: tuple[float, float, float] = (0.36, 0.56, 0.86)
    """sRGB sky colour straight up (rays that hit nothing)."""
    sky_horizon: tuple[float, float, float] = (0.78, 0.85, 0.93)
    """sRGB sky colour at the horizon."""
    ground: tuple[float, float, float] = (0.42, 0.40, 0.37)
    """sRGB colour of rays that hit nothing below the horizon."""
    threads: int | None = field(default=None)
    """Ray-casting threads; None = every core this process may use."""

    def __post_init__(self) -> None:
        if not 1 <= self.supersample <= MAX_SUPERSAMPLE:
            raise ValueError(f"supersample must be 1 to {MAX_SUPERSAMPLE}, got {self.supersample}")

    @classmethod
    def from_spec(cls, spec: EmbeddedRendererSpec, threads: int | None = None) -> RenderSettings:
        """The settings a job spec's ``renderer: {kind: embedded, ...}`` asks for (the others at their defaults)."""
        return cls(supersample=spec.supersample, shadows=spec.shadows, threads=threads)

    def sun_direction(self) -> np.ndarray:
        """Unit vector toward the sun in world coordinates."""
        e, a = math.radians(self.sun_elevation_deg), math.radians(self.sun_azimuth_deg)
        return np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)], np.float32)


class EmbeddedRenderer:
    """Renders equirect panoramas (RGB, range depth, object ids) of one scene on the CPU."""

    kind = "embedded"
    version = RENDERER_VERSION

    def __init__(self, scene: Scene, settings: RenderSettings | None = None) -> None:
        self.scene = scene
        self.settings = settings or RenderSettings()
        s = self.settings
        self.caster = EmbreeCaster(scene.vertices, scene.faces, s.threads)
        n = scene.num_faces
        self._normals = scene.face_normals()
        mat_tex = np.array([m.texture for m in scene.materials], np.int32)
        mat_base = np.array([m.base_color for m in scene.materials], np.float32).reshape(-1, 3)
        self._face_tex = np.ascontiguousarray(mat_tex[scene.face_material])
        self._face_base = np.ascontiguousarray(mat_base[scene.face_material])
        self._face_uv = scene.uvs if scene.uvs is not None else np.zeros((n, 3, 2), np.float32)
        self._face_tex[:] = np.where(scene.uvs is None, -1, self._face_tex)
        self._has_col = scene.colors is not None
        self._face_col = scene.colors if self._has_col else np.ones((1, 3, 3), np.float32)
        baked_lm = scene.baked_lighting and scene.face_lightmap is not None
        self._face_lm = scene.face_lightmap if baked_lm else np.full(n, -1, np.int32)
        self._face_lmuv = scene.lightmap_uvs if baked_lm else np.zeros((1, 3, 2), np.float32)
        self._atlas = build_atlas(scene.textures, mipmaps=s.mipmaps)
        self._tpm = texels_per_metre(scene.vertices, scene.faces, self._face_uv, self._face_tex, self._atlas)
        self._cutout = self._cutout_tables() if any(m.alpha_mode == "mask" for m in scene.materials) else None
        self._dirs: dict[tuple, np.ndarray] = {}
        self._buffers: dict[tuple, np.ndarray] = {}
        self.gain = 1.0
        """Tone-curve gain chosen for this scene by ``auto_gain`` (1 = none)."""
        if s.auto_gain:
            self.gain = self._probe_gain()

    # ------------------------------------------------------------------ public API

    def render(self, c2w: np.ndarray, width: int) -> Frames:
        """Equirect frames (W = width, H = width / 2) for poses (N, 4, 4) or one 4x4."""
        w, h = check_equirect_size(width)
        poses = as_c2w_array(c2w)
        ss = self.settings.supersample
        centre = self._directions(("equirect", w))
        colour = centre if ss == 1 else self._directions(("equirect", w * ss))
        return self._render(poses, centre, colour, h, w, math.pi / h)

    def render_perspective(self, c2w: np.ndarray, width: int, height: int, fov_deg: float = 90.0) -> Frames:
        """Pinhole frames (OpenCV camera, horizontal FOV ``fov_deg``); depth is still range along the ray."""
        poses = as_c2w_array(c2w)
        ss = self.settings.supersample
        centre = self._directions(("persp", width, height, fov_deg))
        colour = centre if ss == 1 else self._directions(("persp", width * ss, height * ss, fov_deg))
        return self._render(poses, centre, colour, height, width, math.radians(fov_deg) / width)

    def close(self) -> None:
        self.caster.close()

    def __enter__(self) -> EmbeddedRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _probe_gain(self, width: int = 128) -> float:
        """Gain that brings the median brightness of small panoramas from the spawn points to the target."""
        frames = self.render(default_poses(self.scene, 8), width)
        hit = frames.depth > 0
        if not hit.any():
            return 1.0
        m = min(max(float(np.median(frames.rgb[hit].mean(axis=1))) / 255.0, 1e-3), 0.999)
        t = self.settings.target_brightness
        gain = t * (1.0 - m) / (m * (1.0 - t))  # solves m g / (1 + m (g - 1)) = t, the tone curve at m
        return float(np.clip(gain, 1.0, self.settings.max_gain))

    def _cutout_tables(self) -> tuple:
        """Per-face alpha-plane index (-1 = opaque), cutoff and inversion, and the alpha atlas: ``alpha_cut``'s
        arguments after the hits."""
        scene = self.scene
        mat_alpha = np.array([m.alpha for m in scene.materials], np.int32)  # -1 for opaque (Scene.validate)
        mat_cutoff = np.array([m.alpha_cutoff for m in scene.materials], np.float32)
        mat_invert = np.array([m.alpha_invert for m in scene.materials], np.bool_)
        fm = scene.face_material
        atlas = build_atlas(scene.alphas, mipmaps=False)
        return (self._face_uv, np.ascontiguousarray(mat_alpha[fm]), np.ascontiguousarray(mat_cutoff[fm]),
                np.ascontiguousarray(mat_invert[fm]), atlas.data, atlas.offset, atlas.width, atlas.height)

    def _see_through(self, origins: np.ndarray, dirs: np.ndarray, hits: Hits, sl: slice) -> None:
        """Replace the hits ``sl`` that landed on cut-out texels by the next surface along the same rays (calling
        thread only; ``hits.t`` stays the range from the original origins)."""
        cut = np.empty(sl.stop - sl.start, np.bool_)
        alpha_cut(hits.prim[sl], hits.u[sl], hits.v[sl], *self._cutout, cut)
        idx = sl.start + np.flatnonzero(cut)
        for layer in range(MAX_CUTOUT_LAYERS):
            if not len(idx):
                return
            t = hits.t[idx]
            start = t + np.maximum(t * np.float32(CUTOUT_STEP), np.float32(CUTOUT_STEP))
            d = np.ascontiguousarray(dirs[idx])
            o = np.ascontiguousarray(origins[idx] + d * start[:, None])
            behind = Hits.empty(len(idx))
            self.caster.cast_slice(o, d, slice(0, len(idx)), behind)
            hits.t[idx], hits.prim[idx], hits.u[idx], hits.v[idx] = start + behind.t, behind.prim, behind.u, behind.v
            if layer + 1 < MAX_CUTOUT_LAYERS:
                cut = np.empty(len(idx), np.bool_)
                alpha_cut(behind.prim, behind.u, behind.v, *self._cutout, cut)
                idx = idx[cut]

    def _directions(self, key: tuple) -> np.ndarray:
        """Camera-frame unit ray directions (P, 3) float32, cached per camera model and size."""
        if key not in self._dirs:
            if key[0] == "equirect":
                d = equirect_directions(key[1])
            else:
                d = perspective_directions(key[1], key[2], key[3])
            self._dirs[key] = np.ascontiguousarray(d.reshape(-1, 3))
        return self._dirs[key]

    def _render(self, poses: np.ndarray, centre: np.ndarray, colour: np.ndarray, h: int, w: int,
                pixel_angle: float) -> Frames:
        n = len(poses)
        rgb = np.empty((n, h, w, 3), np.uint8)
        depth = np.empty((n, h, w), np.float32)
        inst = np.empty((n, h, w), np.int32)
        ss = self.settings.supersample
        for k, pose in enumerate(poses):
            rot = pose[:3, :3].astype(np.float32)
            origin = pose[:3, 3].astype(np.float32)
            if ss == 1:
                self._trace(origin, rot, centre, pixel_angle, rgb[k].reshape(-1, 3), depth[k].reshape(-1),
                            inst[k].reshape(-1))
                continue
            # Depth and ids from the pixel-centre rays; colour from s x s stratified rays per pixel.
            samples = np.empty((len(colour), 3), np.uint8)
            self._trace(origin, rot, colour, pixel_angle / ss, samples, np.empty(len(colour), np.float32),
                        np.empty(len(colour), np.int32))
            box_downsample(samples, h, w, ss, rgb[k])
            self._trace(origin, rot, centre, pixel_angle, np.empty((len(centre), 3), np.uint8),
                        depth[k].reshape(-1), inst[k].reshape(-1))
        return Frames(rgb, depth, inst)

    def _buffer(self, name: str, shape: tuple, dtype) -> np.ndarray:
        """A scratch array reused across frames (one per name and shape)."""
        key = (name, shape)
        if key not in self._buffers:
            self._buffers[key] = np.empty(shape, dtype)
        return self._buffers[key]

    def _origins(self, origin: np.ndarray, n: int) -> np.ndarray:
        """(n, 3) float32 copies of one ray origin."""
        buf = self._buffer("origins", (n, 3), np.float32)
        buf[:] = origin
        return buf

    def _trace(self, origin: np.ndarray, rot: np.ndarray, cam_dirs: np.ndarray, pixel_angle: float,
               out_rgb: np.ndarray, out_depth: np.ndarray, out_inst: np.ndarray) -> None:
        """Rotate, cast and shade every ray into the output views; each thread does its own chunk."""
        s = self.settings
        sun = s.sun_direction()
        shadows = s.shadows and not self.scene.baked_lighting
        n = len(cam_dirs)
        origins = self._origins(origin, n)
        dirs = self._buffer("dirs", (n, 3), np.float32)
        hits = Hits.empty(n)
        a = self._atlas
        consts = (np.float32(pixel_angle), self._face_uv, self._face_tex, self._face_base, self._face_col,
                  self._face_lm, self._face_lmuv, self._normals, self._tpm,
                  a.data, a.offset, a.width, a.height, a.levels)
        lights = (self.scene.baked_lighting, self._has_col, sun, np.float32(s.sun_strength),
                  np.float32(s.sky_strength), np.float32(s.exposure), np.float32(self.gain),
                  np.asarray(s.sky_zenith, np.float32), np.asarray(s.sky_horizon, np.float32),
                  np.asarray(s.ground, np.float32), self.scene.face_object)

        def chunk(sl: slice) -> None:
            rotate_directions(cam_dirs[sl], rot, dirs[sl])
            self.caster.cast_slice(origins, dirs, sl, hits)
            if self._cutout is not None:
                self._see_through(origins, dirs, hits, sl)
            shadow = self._shadow(origins[sl], dirs[sl], hits.t[sl], hits.prim[sl], sun) if shadows else _ONES
            shade_kernel(hits.prim[sl], hits.u[sl], hits.v[sl], dirs[sl], shadows, shadow, *consts, hits.t[sl],
                         *lights, out_rgb[sl], out_depth[sl], out_inst[sl])

        self.caster.map_chunks(chunk, n)

    def _shadow(self, origins: np.ndarray, dirs: np.ndarray, t: np.ndarray, prim: np.ndarray,
                sun: np.ndarray) -> np.ndarray:
        """1 where the sun reaches the hit point, 0 where something blocks it."""
        shadow = np.ones(len(dirs), np.float32)
        idx = np.flatnonzero(prim >= 0)
        normals = self._normals[prim[idx]]
        facing = np.einsum("ij,ij->i", normals, dirs[idx]) > 0
        normals[facing] *= -1
        lit = np.einsum("ij,j->i", normals, sun) > 0
        idx, normals = idx[lit], normals[lit]
        points = origins[idx] + dirs[idx] * t[idx, None]
        points += normals * np.float32(1e-3) * np.maximum(1.0, t[idx, None])
        points = points.astype(np.float32)
        towards = np.broadcast_to(sun, points.shape).copy()
        if self._cutout is None:
            blocked = self.caster.occluded(points, towards)
        else:  # light passes through cut-out texels too
            sun_hits = Hits.empty(len(points))
            self.caster.cast_slice(points, towards, slice(0, len(points)), sun_hits)
            self._see_through(points, towards, sun_hits, slice(0, len(points)))
            blocked = sun_hits.prim >= 0
        shadow[idx[blocked]] = 0.0
        return shadow


_ONES = np.ones(1, np.float32)
