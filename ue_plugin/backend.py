"""The Unreal renderer backend: equirect panoramas captured through UnrealCV, behind the same ``Renderer``
protocol as the embedded renderer.

Per panorama, one pipelined batch of 24 requests: for each of the 6 cube faces (FOV 90, square, a
quarter of the panorama width by default) set the spawned camera's location and rotation, get ``lit png``
(BGRA) and ``depth npy`` (planar depth in cm, through a float16 target). Faces are stitched into the
equirect (DESIGN.md section 1): colour bilinear; depth as planar metres with 1/z interpolated bilinearly
(nearest texel across depth edges and no-hits), converted to range along each equirect pixel's own ray;
the float16 far value (no hit) becomes 0. Camera 0 (the pawn) is never used: its images go stale.

Depth precision: float16 has 11 significant bits, so planar depth is rounded to 0.05-0.1 % (8 cm steps at
100 m). Against the embedded renderer on the same OpenArena poses (stand-in, 512x256, oa_ctf2) 99.1 % of the
pixels hit by both agree within 1 %; the rest sit on true depth edges (ue_plugin/README.md has the figures).
"""

from __future__ import annotations

import io

import numpy as np

from dataset.core.addresses import parse_host_port
from dataset.core.conventions import (
    CUBE_LAYOUT,
    as_c2w_array,
    c2w_to_ue_pose,
    check_equirect_size,
    crop_rotation,
    equirect_directions,
)
from dataset.render.base import Frames
from ue_plugin.protocol import MAX_IMAGE_SIDE, CommandError, UnrealCVClient

NO_HIT_CM = 60000.0
"""Planar depth at or beyond this (cm) is the far plane / sky of a float16 target: stored as 0 (no hit)."""
EDGE_RATIO = 1.05
"""Largest / smallest planar depth of the 4 face texels around a sample up to which 1/z is always interpolated
(this and the next two chosen by the depth agreement on eight OpenArena levels, ue_plugin/README.md)."""
PLANE_RATIO = 1.3
"""The same ratio up to which 1/z is interpolated when the 4 texels lie on one plane (grazing floors and walls
change by more than EDGE_RATIO per texel); beyond it, or off a plane beyond EDGE_RATIO, the sample straddles
a depth edge and takes the nearest texel."""
PLANE_TOL = 0.01
"""Planarity test: |1/z00 - 1/z01 - 1/z10 + 1/z11| (0 on a plane) at most this fraction of the largest 1/z;
float16 rounding alone makes about 0.2 %."""
VERSION = "unrealcv-cube6-2"


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` to (host, port), with a clear error naming the UnrealCV endpoint."""
    return parse_host_port(endpoint, "UnrealCV endpoint")


def decode_png_bgra(data: bytes) -> np.ndarray:
    """RGB uint8 (H, W, 3) of UnrealCV's BGRA PNG."""
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(data)))
    if img.ndim != 3 or img.shape[2] < 3:
        raise ValueError(f"lit png has shape {img.shape}, expected (H, W, 4) BGRA")
    return np.ascontiguousarray(img[..., 2::-1])


def decode_planar_npy(data: bytes) -> np.ndarray:
    """Planar depth in metres (H, W) float32 of UnrealCV's planar-centimetre NPY depth (0 = no hit)."""
    planar = np.load(io.BytesIO(data), allow_pickle=False).astype(np.float32)
    if planar.ndim != 2:
        raise ValueError(f"depth npy has shape {planar.shape}, expected (H, W)")
    no_hit = ~np.isfinite(planar) | (planar >= NO_HIT_CM) | (planar <= 0)
    return np.where(no_hit, 0.0, planar / 100.0).astype(np.float32)


class CubeStitcher:
    """Cube faces to equirect through precomputed lookups: colour by ``cv2.remap`` (bilinear) on a strip of the
    6 faces, range depth by a gather of 4 face texels with precomputed indices and weights.

    Same pixel choice as ``conventions.perspective_to_equirect`` (the slow reference it is tested against):
    each equirect pixel samples the face whose axis is closest to its ray. Depth: planar depth of a plane is
    affine in 1/z across a face, so 1/z is interpolated bilinearly (exact on planes) and converted to range
    along the equirect pixel's own ray (z / cos of its angle to the face axis). Where the 4 texels straddle a
    depth edge (``EDGE_RATIO``, ``PLANE_RATIO``) or one is a no-hit, the nearest texel's planar depth is used
    instead, so foreground and background never blend.
    """

    def __init__(self, width: int, face: int) -> None:
        import cv2

        w, h = check_equirect_size(width)
        self.face = face
        rots = np.stack([crop_rotation(yaw, pitch) for yaw, pitch in CUBE_LAYOUT])
        d = equirect_directions(w, h, dtype=np.float64).reshape(-1, 3)
        local = np.einsum("nji,pj->npi", rots, d)
        best = np.argmax(local[..., 2], axis=0)
        sel = local[best, np.arange(len(d))]
        f = face / 2.0  # FOV 90: focal length = half the side
        x = f * sel[:, 0] / sel[:, 2] + f - 0.5  # cv2 pixel-centre coordinates, in -0.5 .. face - 0.5
        y = f * sel[:, 1] / sel[:, 2] + f - 0.5
        self.map_x = (np.clip(x, 0, face - 1) + best * face).reshape(h, w).astype(np.float32)
        self.map_y = np.clip(y, 0, face - 1).reshape(h, w).astype(np.float32)
        # depth: a sample's 2x2 texel cell, named by its top-left texel in the strip of faces (texels 00, 01, 10,
        # 11 as (y, x)); within half a texel of a face's border the border cell's plane is extrapolated
        x0, y0 = np.clip(np.floor(x), 0, face - 2), np.clip(np.floor(y), 0, face - 2)
        self._cell_x = (x0 + best * face).reshape(h, w).astype(np.float32)
        self._cell_y = y0.reshape(h, w).astype(np.float32)
        self._near_x = (np.clip(np.rint(x), 0, face - 1) + best * face).reshape(h, w).astype(np.float32)
        self._near_y = np.clip(np.rint(y), 0, face - 1).reshape(h, w).astype(np.float32)
        fx, fy = (x - x0).reshape(h, w), (y - y0).reshape(h, w)
        self._weights = [wt.astype(np.float32) for wt in ((1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy)]
        self._inv_cos = (1.0 / sel[:, 2]).reshape(h, w).astype(np.float32)  # range / planar depth along each ray
        self._cv2 = cv2

    def colour(self, faces: list[np.ndarray]) -> np.ndarray:
        """Equirect image (bilinear) of the 6 faces in CUBE_LAYOUT order."""
        strip = np.ascontiguousarray(np.concatenate(faces, axis=1))
        return self._cv2.remap(strip, self.map_x, self.map_y, self._cv2.INTER_LINEAR,
                               borderMode=self._cv2.BORDER_REPLICATE)

    def depth(self, planar: list[np.ndarray]) -> np.ndarray:
        """Equirect range in metres (float32, 0 = no hit) of the 6 faces' planar depth in metres (0 = no hit)."""
        cv2 = self._cv2
        z = np.concatenate(planar, axis=1).astype(np.float32, copy=False)
        with np.errstate(divide="ignore"):
            inv = np.where(z > 0, 1.0 / z, np.float32(0))
        it = (inv[:-1, :-1], inv[:-1, 1:], inv[1:, :-1], inv[1:, 1:])  # per cell, 1/z of its 4 texels
        lo = np.minimum(np.minimum(it[0], it[1]), np.minimum(it[2], it[3]))
        hi = np.maximum(np.maximum(it[0], it[1]), np.maximum(it[2], it[3]))
        off_plane = np.abs(it[0] - it[1] - it[2] + it[3]) > PLANE_TOL * hi
        smooth = (lo > 0) & (hi <= lo * np.where(off_plane, np.float32(EDGE_RATIO), np.float32(PLANE_RATIO)))
        # one 4-channel gather of each sample's cell; 1/z of texel 00 negated where the cell straddles an edge
        cells = cv2.merge([np.where(smooth, it[0], -it[0]), *it[1:]])
        g = cv2.split(cv2.remap(cells, self._cell_x, self._cell_y, cv2.INTER_NEAREST))
        inv_z = cv2.remap(inv, self._near_x, self._near_y, cv2.INTER_NEAREST)
        interpolated = sum(wt * gk for wt, gk in zip(self._weights, g, strict=True))
        np.copyto(inv_z, interpolated, where=g[0] > 0)
        with np.errstate(divide="ignore"):
            return np.where(inv_z > 0, self._inv_cos / inv_z, np.float32(0))


class UnrealCVRenderer:
    """Renders panoramas through one UnrealCV server (a running game or the stand-in).

    ``face_scale``: cube face side = face_scale x width / 4 (at most ``MAX_IMAGE_SIDE``). 1.1 buys about
    0.1 % more pixels within 1 % of the true depth for 21 % more face pixels to render, so 1 is the default.
    """

    kind = "unreal"
    version = VERSION

    def __init__(self, endpoint: str, timeout: float = 30.0, illumination: str | None = "Lumen",
                 face_scale: float = 1.0) -> None:
        if not 0.5 <= face_scale <= 2.0:
            raise ValueError(f"face_scale {face_scale} is outside 0.5..2: cube faces are face_scale x width / 4")
        host, port = parse_endpoint(endpoint)
        self.face_scale = face_scale
        self.endpoint = endpoint
        self.client = UnrealCVClient(host, port, timeout)
        self.client.connect()
        self.camera = self._spawn_camera()
        self.client.request(f"vset /camera/{self.camera}/fov 90")
        if illumination:
            try:  # Lumen scenes render dark until set; older servers do not know the command
                self.client.request(f"vset /camera/{self.camera}/illumination {illumination}")
            except CommandError:
                pass
        self._size: int | None = None
        self._stitcher: CubeStitcher | None = None

    def _spawn_camera(self) -> int:
        """Spawn a camera and find its id by counting cameras (the reply is a name, not always a number)."""
        self.client.request("vset /cameras/spawn")
        names = self.client.request_text("vget /cameras").split()
        if len(names) < 2:
            raise CommandError(f"{self.endpoint}: spawning a camera failed (cameras: {names})")
        return len(names) - 1

    def render(self, c2w: np.ndarray, width: int) -> Frames:
        """Equirect frames (N, width/2, width) for poses (N, 4, 4) or one 4x4."""
        w, h = check_equirect_size(width)
        poses = as_c2w_array(c2w)
        face = max(16, min(MAX_IMAGE_SIDE, round(self.face_scale * w / 4)))
        if self._size != face:
            self.client.request(f"vset /camera/{self.camera}/size {face} {face}")
            self._size = face
        if self._stitcher is None or self._stitcher.map_x.shape != (h, w) or self._stitcher.face != face:
            self._stitcher = CubeStitcher(w, face)
        rots = [crop_rotation(yaw, pitch) for yaw, pitch in CUBE_LAYOUT]
        rgb = np.empty((len(poses), h, w, 3), np.uint8)
        depth = np.empty((len(poses), h, w), np.float32)
        cam = self.camera
        for i, pose in enumerate(poses):
            batch = []
            for r in rots:
                face_c2w = pose.copy()
                face_c2w[:3, :3] = pose[:3, :3] @ r
                loc, (pitch, yaw, roll) = c2w_to_ue_pose(face_c2w)
                batch += [f"vset /camera/{cam}/location {loc[0]:.4f} {loc[1]:.4f} {loc[2]:.4f}",
                          f"vset /camera/{cam}/rotation {pitch:.5f} {yaw:.5f} {roll:.5f}",
                          f"vget /camera/{cam}/lit png", f"vget /camera/{cam}/depth npy"]
            replies = self.client.request_batch(batch)
            faces_rgb = [decode_png_bgra(replies[4 * k + 2]) for k in range(6)]
            faces_depth = [decode_planar_npy(replies[4 * k + 3]) for k in range(6)]
            rgb[i] = self._stitcher.colour(faces_rgb)
            depth[i] = self._stitcher.depth(faces_depth)
        return Frames(rgb, depth)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> UnrealCVRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
