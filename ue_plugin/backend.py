"""The Unreal renderer backend: equirect panoramas captured through UnrealCV, behind the same ``Renderer``
protocol as the embedded renderer.

Per panorama, one pipelined batch of 24 requests: for each of the 6 cube faces (FOV 90, square, a
quarter of the panorama width) set the spawned camera's location and rotation, get ``lit png`` (BGRA)
and ``depth npy`` (planar depth in cm, through a float16 target). Faces are stitched into the
equirect (DESIGN.md section 1): colour bilinear, depth nearest, planar cm converted to range in metres;
the float16 far value (no hit) becomes 0. Camera 0 (the pawn) is never used: its images go stale.
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
    planar_to_range,
)
from dataset.render.base import Frames
from ue_plugin.protocol import CommandError, UnrealCVClient

NO_HIT_CM = 60000.0
"""Planar depth at or beyond this (cm) is the far plane / sky of a float16 target: stored as 0 (no hit)."""
VERSION = "unrealcv-cube6-1"


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


def decode_depth_npy(data: bytes, fov_deg: float = 90.0) -> np.ndarray:
    """Range in metres (H, W) float32 of UnrealCV's planar-centimetre NPY depth (0 = no hit)."""
    planar = np.load(io.BytesIO(data), allow_pickle=False).astype(np.float32)
    if planar.ndim != 2:
        raise ValueError(f"depth npy has shape {planar.shape}, expected (H, W)")
    no_hit = ~np.isfinite(planar) | (planar >= NO_HIT_CM) | (planar <= 0)
    rng = planar_to_range(np.where(no_hit, 0.0, planar) / 100.0, fov_deg)
    return np.where(no_hit, 0.0, rng).astype(np.float32)


class CubeStitcher:
    """Cube faces to equirect through one precomputed lookup (``cv2.remap`` on a strip of the 6 faces).

    Same pixel choice as ``conventions.perspective_to_equirect`` (the slow reference it is tested against):
    each equirect pixel samples the face whose axis is closest to its ray.
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
        x = np.clip(f * sel[:, 0] / sel[:, 2] + f - 0.5, 0, face - 1)  # cv2 pixel-centre coordinates
        y = np.clip(f * sel[:, 1] / sel[:, 2] + f - 0.5, 0, face - 1)
        self.map_x = (x + best * face).reshape(h, w).astype(np.float32)
        self.map_y = y.reshape(h, w).astype(np.float32)
        self._cv2 = cv2

    def __call__(self, faces: list[np.ndarray], nearest: bool = False) -> np.ndarray:
        """Equirect image of the 6 faces in CUBE_LAYOUT order (colour bilinear, or nearest for depth)."""
        strip = np.ascontiguousarray(np.concatenate(faces, axis=1))
        mode = self._cv2.INTER_NEAREST if nearest else self._cv2.INTER_LINEAR
        return self._cv2.remap(strip, self.map_x, self.map_y, mode, borderMode=self._cv2.BORDER_REPLICATE)


class UnrealCVRenderer:
    """Renders panoramas through one UnrealCV server (a running game or the stand-in)."""

    kind = "unreal"
    version = VERSION

    def __init__(self, endpoint: str, timeout: float = 30.0, illumination: str | None = "Lumen") -> None:
        host, port = parse_endpoint(endpoint)
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
        face = max(16, w // 4)
        if self._size != face:
            self.client.request(f"vset /camera/{self.camera}/size {face} {face}")
            self._size = face
        if self._stitcher is None or self._stitcher.map_x.shape != (h, w):
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
            faces_depth = [decode_depth_npy(replies[4 * k + 3]) for k in range(6)]
            rgb[i] = self._stitcher(faces_rgb)
            depth[i] = self._stitcher(faces_depth, nearest=True)
        return Frames(rgb, depth)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> UnrealCVRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
