"""``matrix-pano view``: a reconstruction folder served as an explorable 3D scene in the browser, through viser.

The folder is what ``inference.reconstruct`` writes::

    DIR/scene.ply            3D Gaussians (INRIA layout, metric world, Z up): drawn as splats
    DIR/cameras.json         the clip's poses (Matrix-3D format): drawn as a line and one camera frustum per frame
    DIR/keyframes/NNNN.png   optional keyframe panoramas (NNNN = frame index): shown on their frame's frustum
    DIR/video.mp4            optional panoramic video: shown beside the scene, one frame at a time

viser renders the Gaussians with their view-independent colour (SH degree 0; higher SH degrees are dropped) and
has no video player, so the video appears as a GUI image with a frame slider (scrubbing, not playback).
Navigation is viser's own: drag to orbit, right-drag to pan, scroll to zoom, W/A/S/D/Q/E to move, arrow keys
to turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import viser
import viser.transforms as vtf
from PIL import Image

from dataset.core.codecs import decode_mp4
from dataset.core.conventions import load_matrix3d_cameras
from inference.gaussians import Gaussians, covariances
from inference.ply import load_ply

SCENE_FILE, CAMERAS_FILE, KEYFRAMES_DIR, VIDEO_FILE = "scene.ply", "cameras.json", "keyframes", "video.mp4"
"""The names of a reconstruction folder's files."""
FRUSTUM_FOV = np.deg2rad(60.0)
"""Vertical field of view of the drawn camera frustums (a panorama has none; this only sets their shape)."""
FRUSTUM_ASPECT = 2.0
"""Width over height of the drawn frustums: the equirect keyframes' 2:1."""
IMAGE_WIDTH = 512
"""Keyframes and video frames are sent to the browser at most this wide (every k-th pixel), to keep it light."""


@dataclass
class Viewer:
    """A running viewer: its viser server and the address to open."""

    server: viser.ViserServer
    """The ``viser.ViserServer`` (scene and GUI can be changed through it while it runs)."""
    url: str
    """``http://HOST:PORT/``, the port being the one actually bound."""

    def stop(self) -> None:
        """Stop the server and its threads."""
        self.server.stop()


def serve(folder: str | Path, host: str = "127.0.0.1", port: int = 8080) -> Viewer:
    """Load the reconstruction in ``folder`` and serve it on ``host``:``port`` (0: any free port; a busy port is
    replaced by the next free one, as viser does; ``Viewer.url`` has the bound one). Everything is read and
    checked before the server starts: FileNotFoundError naming the missing file, ValueError for an unreadable
    one. Returns at once; the server runs in background threads until ``Viewer.stop``."""
    gaussians, c2w, keyframes, video = _load_folder(Path(folder))
    server = viser.ViserServer(host=host, port=port, label=f"Matrix-Pano: {Path(folder).resolve().name}", verbose=False)
    scene = server.scene
    up = up_direction(c2w)
    scene.set_up_direction(tuple(up))
    scene.add_gaussian_splats("/scene", centers=gaussians.means.numpy(), covariances=covariances(gaussians).numpy(),
                              rgbs=gaussians.colours.numpy(), opacities=gaussians.opacities.numpy()[:, None])

    size = _frustum_size(gaussians.means.numpy(), c2w[:, :3, 3])
    positions = c2w[:, :3, 3]
    if len(positions) > 1:
        scene.add_line_segments("/trajectory", np.stack([positions[:-1], positions[1:]], axis=1),
                                colors=(255, 140, 0), thickness=0.1 * size)
    for i, pose in enumerate(c2w):
        image = keyframes.get(i)
        scene.add_camera_frustum(f"/cameras/{i:04d}", fov=FRUSTUM_FOV, aspect=FRUSTUM_ASPECT,
                                 scale=size * (1.5 if image is not None else 1.0), thickness=0.05 * size,
                                 color=(255, 140, 0) if image is not None else (90, 90, 90),
                                 image=None if image is None else _shrink(image),
                                 wxyz=vtf.SO3.from_matrix(pose[:3, :3]).wxyz, position=pose[:3, 3])

    # The first pose's frustum would fill the view from its apex, so the camera starts just behind it.
    forward = c2w[0, :3, 2]
    server.initial_camera.position = positions[0] - 4.0 * size * forward
    server.initial_camera.look_at = positions[0] + forward
    server.initial_camera.up = tuple(up)

    server.gui.add_markdown(f"**{len(gaussians):,}** Gaussians, **{len(c2w)}** camera poses, "
                            f"**{len(keyframes)}** keyframe panoramas (orange frustums).")
    if video is not None:
        _add_video(server, folder, video)
    return Viewer(server=server, url=f"http://{host}:{server.get_port()}/")


def up_direction(c2w: np.ndarray) -> np.ndarray:
    """The world's up for the viewer: +Z (DESIGN.md) when the cameras are upright in it, as a dataset clip's are;
    else the cameras' mean up (OpenCV -y), e.g. for a generated video whose cameras.json is relative to the
    panorama's camera (y down)."""
    ups = -np.asarray(c2w)[:, :3, 1]
    mean = ups.mean(axis=0)
    if np.linalg.norm(mean) < 0.5 or mean[2] > 0.9 * np.linalg.norm(mean):
        return np.array([0.0, 0.0, 1.0])
    return mean / np.linalg.norm(mean)


def _load_folder(folder: Path) -> tuple[Gaussians, np.ndarray, dict[int, np.ndarray], np.ndarray | None]:
    """The folder's Gaussians, c2w poses (N, 4, 4), keyframes by frame index and video frames (or None)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder (expected a reconstruction: {SCENE_FILE}, "
                                f"{CAMERAS_FILE})")
    for name in (SCENE_FILE, CAMERAS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} has no {name}: not a reconstruction folder (it needs {SCENE_FILE} "
                                    f"and {CAMERAS_FILE})")
    gaussians = load_ply(folder / SCENE_FILE)
    c2w = load_matrix3d_cameras(folder / CAMERAS_FILE)
    if len(c2w) == 0:
        raise ValueError(f"{folder / CAMERAS_FILE} holds no camera poses")
    keyframes = {}
    for path in sorted((folder / KEYFRAMES_DIR).glob("*.png")):
        if not path.stem.isdigit() or int(path.stem) >= len(c2w):
            raise ValueError(f"{path}: a keyframe's name is its frame index, 0 to {len(c2w) - 1} "
                             f"({CAMERAS_FILE} has {len(c2w)} poses)")
        with Image.open(path) as image:
            keyframes[int(path.stem)] = np.asarray(image.convert("RGB"))
    video_path, video = folder / VIDEO_FILE, None
    if video_path.is_file():
        try:
            video = decode_mp4(video_path.read_bytes())
        except (av.error.FFmpegError, ValueError) as exc:  # ValueError: no frames
            raise ValueError(f"{video_path} is not a readable video: {exc}") from exc
    return gaussians, c2w, keyframes, video


def _frustum_size(means: np.ndarray, positions: np.ndarray) -> float:
    """Frustum depth, metres: 3 % of the scene's extent (5th to 95th percentile of the Gaussians and cameras,
    largest axis), so that frustums look alike in a room and in a valley."""
    points = np.concatenate([means, positions])
    extent = float(np.max(np.percentile(points, 95, axis=0) - np.percentile(points, 5, axis=0)))
    return 0.03 * extent if extent > 0 else 0.1


def _shrink(image: np.ndarray) -> np.ndarray:
    """``image`` at most ``IMAGE_WIDTH`` wide, keeping every k-th pixel."""
    step = -(-image.shape[1] // IMAGE_WIDTH)
    return np.ascontiguousarray(image[::step, ::step])


def _add_video(server: viser.ViserServer, folder: str | Path, frames: np.ndarray) -> None:
    """The panoramic video in the GUI: its frame as an image and a slider choosing the frame."""
    frames = np.stack([_shrink(f) for f in frames])
    with server.gui.add_folder("Panoramic video"):
        server.gui.add_markdown(f"`{Path(folder) / VIDEO_FILE}`: {len(frames)} frames (viser cannot play video: "
                                "move the slider)")
        image = server.gui.add_image(frames[0], label="frame 0")
        slider = server.gui.add_slider("frame", min=0, max=len(frames) - 1, step=1, initial_value=0)

    @slider.on_update
    def _(_) -> None:
        image.image = frames[slider.value]
        image.label = f"frame {slider.value}"
