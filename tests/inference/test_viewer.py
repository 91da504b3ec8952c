"""The reconstruction viewer: a folder of Gaussians, poses, a keyframe and a video is served on 127.0.0.1 and draws
the splats in a real headless Chromium, seen from behind the first pose with Z up; a folder that is no
reconstruction is refused, naming the missing file."""

from __future__ import annotations

import io
import shutil
import time

import numpy as np
import pytest
import torch
from PIL import Image

from dataset.cli import main
from dataset.core.codecs import encode_mp4
from dataset.core.conventions import pose_from_heading, save_matrix3d_cameras
from inference.gaussians import Gaussians, rgb_to_sh0
from inference.ply import save_ply
from inference.viewer import serve

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
WALLS = {(0, 2.0): (230, 25, 25), (0, -2.0): (25, 200, 25), (1, 2.0): (25, 50, 230), (1, -2.0): (230, 200, 25),
         (2, 0.0): (128, 128, 128), (2, 3.0): (230, 230, 230)}
"""(axis, coordinate) of each wall of the 4 x 4 x 3 m box -> its RGB: +X red, -X green, +Y blue, -Y yellow."""
KEYFRAME, VIDEO = (220, 40, 220), (40, 200, 220)
"""The colours of the keyframe panorama (magenta) and of the video's frames (cyan): no wall has them."""


def box_gaussians(per_side: int = 24) -> Gaussians:
    """Flat, nearly opaque Gaussians on a per_side x per_side grid on each wall of the box, coloured by WALLS."""
    lo, hi = np.array([-2.0, -2.0, 0.0]), np.array([2.0, 2.0, 3.0])
    means, scales, colours = [], [], []
    for (axis, value), rgb in WALLS.items():
        u, v = [a for a in range(3) if a != axis]
        uu, vv = (g.ravel() for g in np.meshgrid(np.linspace(lo[u], hi[u], per_side),
                                                 np.linspace(lo[v], hi[v], per_side)))
        p = np.zeros((uu.size, 3))
        p[:, axis], p[:, u], p[:, v] = value, uu, vv
        s = np.full((uu.size, 3), 0.12)
        s[:, axis] = 0.01
        means.append(p)
        scales.append(s)
        colours.append(np.tile(np.array(rgb) / 255.0, (uu.size, 1)))
    n = sum(len(m) for m in means)
    return Gaussians(means=torch.tensor(np.concatenate(means), dtype=torch.float32),
                     log_scales=torch.tensor(np.log(np.concatenate(scales)), dtype=torch.float32),
                     quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1), opacity_logits=torch.full((n,), 4.0),
                     sh0=rgb_to_sh0(torch.tensor(np.concatenate(colours), dtype=torch.float32)))


@pytest.fixture
def reconstruction(tmp_path):
    """A reconstruction folder: the box, 5 poses walking along +X looking at the red wall, keyframe 0, a video."""
    folder = tmp_path / "recon"
    (folder / "keyframes").mkdir(parents=True)
    save_ply(folder / "scene.ply", box_gaussians())
    save_matrix3d_cameras(folder / "cameras.json",
                          np.stack([pose_from_heading((-1.0 + 0.25 * i, 0.0, 1.5), 0.0) for i in range(5)]))
    Image.fromarray(np.full((128, 256, 3), KEYFRAME, np.uint8)).save(folder / "keyframes" / "0000.png")
    (folder / "video.mp4").write_bytes(encode_mp4(np.full((4, 64, 128, 3), VIDEO, np.uint8), fps=8.0))
    return folder


@pytest.fixture
def viewer(reconstruction):
    """The reconstruction served on a free port of 127.0.0.1 (stopped after ``browser``: a test asks for this
    first, so that no client is still connected when it stops, which would take seconds)."""
    running = serve(reconstruction, port=0)
    yield running
    running.stop()


@pytest.fixture
def browser():
    """Headless Chromium as tests/annotation/test_review.py starts it, plus software WebGL (SwiftShader)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--enable-unsafe-swiftshader", "--window-size=800,600"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def colour_mask(image: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 40) -> np.ndarray:
    """Pixels of ``image`` (H, W, 3) within ``tolerance`` of ``rgb`` on every channel."""
    return (np.abs(image.astype(int) - np.array(rgb)) < tolerance).all(axis=-1)


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver")
def test_page_draws_the_splats_from_behind_the_first_pose_in_chromium(viewer, browser, tmp_path):
    from selenium.webdriver.common.by import By

    assert viewer.url.startswith("http://127.0.0.1:") and viewer.server.get_host() == "127.0.0.1"
    browser.get(viewer.url)
    deadline, red = time.monotonic() + 20, 0.0
    while time.monotonic() < deadline and red < 0.05:  # the splats arrive and are sorted asynchronously
        time.sleep(0.5)
        shot = np.asarray(Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB"))
        red = colour_mask(shot, WALLS[0, 2.0]).mean()
    Image.fromarray(shot).save(tmp_path / "viewer.png")
    assert len(viewer.server.get_clients()) == 1
    assert red > 0.05, f"the red wall covers {red:.1%} of {tmp_path / 'viewer.png'}"
    assert shot.std() > 30  # not a blank page
    background = np.bincount((shot // 16).reshape(-1, 3) @ [256, 16, 1]).max() / shot[..., 0].size
    assert background < 0.6  # no single colour fills the page
    # Z up and the first camera looking along +X: +Y (blue) is on the left, -Y (yellow) on the right, the
    # floor (grey) below the middle.
    quarter = shot.shape[1] // 4
    blue, yellow = colour_mask(shot, WALLS[1, 2.0]), colour_mask(shot, WALLS[1, -2.0])
    assert blue[:, :quarter].sum() > 20 * blue[:, -quarter:].sum() + 1000
    assert yellow[:, -quarter:].sum() > 20 * yellow[:, :quarter].sum() + 1000
    floor = np.nonzero(colour_mask(shot, WALLS[2, 0.0], tolerance=12))[0]
    assert floor.size > 100 and np.median(floor) > shot.shape[0] / 2
    assert colour_mask(shot, KEYFRAME).mean() > 0.01  # keyframe 0 on its frustum
    assert colour_mask(shot, VIDEO).mean() > 0.01  # the video's frame beside the scene
    assert "Panoramic video" in browser.find_element(By.TAG_NAME, "body").text


def test_a_folder_without_scene_ply_is_refused_naming_it(reconstruction, capsys):
    (reconstruction / "scene.ply").unlink()
    with pytest.raises(FileNotFoundError, match="scene.ply"):
        serve(reconstruction, port=0)
    assert main(["view", str(reconstruction), "--port", "0"]) == 2
    assert "scene.ply" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="not a folder"):
        serve(reconstruction / "missing", port=0)


def test_a_keyframe_that_names_no_frame_is_refused(reconstruction):
    shutil.copy(reconstruction / "keyframes" / "0000.png", reconstruction / "keyframes" / "0007.png")
    with pytest.raises(ValueError, match=r"0007\.png.*0 to 4"):
        serve(reconstruction, port=0)


def test_up_is_z_for_upright_cameras_and_the_cameras_up_for_a_generated_videos_frame():
    from dataset.core.conventions import pose_from_heading
    from inference.viewer import up_direction

    upright = np.stack([pose_from_heading((i, 0.0, 1.6), 0.3 * i, pitch=0.1) for i in range(4)])
    np.testing.assert_allclose(up_direction(upright), [0.0, 0.0, 1.0])
    relative = np.linalg.inv(upright[0]) @ upright  # frame 0's OpenCV camera frame: y down
    true_up = np.linalg.inv(upright[0])[:3, :3] @ [0.0, 0.0, 1.0]  # about -y, tilted by frame 0's pitch
    assert up_direction(relative) @ true_up > np.cos(np.radians(10))
