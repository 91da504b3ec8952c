"""``matrix-pano eval-video`` on real rendered clips: a dataset against itself, generation output folders with a
drifting requested heading and with re-encoded video, and bad inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import av
import numpy as np
import pytest

from dataset.cli import main
from dataset.core.codecs import decode_mp4, encode_mp4
from dataset.core.conventions import save_matrix3d_cameras
from dataset.store.reader import PanoDataset

FRAMES = 13
WIDTH = 384


def walk(start: tuple[float, float], heading_deg: float, step: tuple[float, float], turn_deg: float) -> np.ndarray:
    """FRAMES eye-height poses moving ``step`` metres and turning ``turn_deg`` degrees per frame."""
    from dataset.core.conventions import pose_from_heading

    return np.stack([pose_from_heading((start[0] + step[0] * i, start[1] + step[1] * i, 1.6),
                                       math.radians(heading_deg + turn_deg * i)) for i in range(FRAMES)])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A built dataset of two 13-frame 384x192 clips in a procedural room, rendered and committed the way
    ``matrix-pano build`` does it (``clip_row`` + ``ShardWriter``)."""
    from dataset.core.jobspec import JobSpec
    from dataset.jobs.clips import clip_row
    from dataset.render.embedded import EmbeddedRenderer
    from dataset.sources import load_scene
    from dataset.store.shards import ShardWriter

    scene = "procedural:room:6x8x3"
    spec = JobSpec.model_validate({"scenes": [scene], "frames_per_clip": FRAMES, "resolution": [WIDTH, WIDTH // 2],
                                   "fps": 12})
    out = tmp_path_factory.mktemp("eval_dataset")
    writer = ShardWriter(out / "shards", rows_per_group=1)
    paths = {"walk-a": walk((-0.6, -0.3), 10, (0.1, 0.0), 2), "walk-b": walk((0.5, 1.0), 200, (-0.06, -0.08), -3)}
    with EmbeddedRenderer(load_scene(scene)) as renderer:
        for cid, c2w in paths.items():
            writer.add(clip_row(renderer, spec, scene, "room", cid, cid, c2w))
    writer.commit(0)
    return out


def clips(path: Path) -> dict:
    return {c.clip_id: c for c in PanoDataset(path).clips()}


def run(args: list[str], capsys) -> tuple[int, list[str], list[str]]:
    status = main(["eval-video", *args])
    captured = capsys.readouterr()
    return status, captured.out.splitlines(), captured.err.splitlines()


def strict_json(path: Path) -> dict:
    """metrics.json as a strict reader sees it: Infinity or NaN are errors."""
    def reject(name):
        raise AssertionError(f"{path} holds {name}")

    return json.loads(path.read_text(), parse_constant=reject)


def generation_output(folder: Path, video: bytes, c2w: np.ndarray, clip_id: str | None) -> Path:
    """A folder as ``matrix-pano generate`` leaves it: video.mp4, cameras.json (Matrix-3D w2c) and clip.json."""
    folder.mkdir(parents=True)
    (folder / "video.mp4").write_bytes(video)
    save_matrix3d_cameras(folder / "cameras.json", c2w)
    if clip_id is not None:
        (folder / "clip.json").write_text(json.dumps({"clip_id": clip_id}))
    return folder


def test_ground_truth_as_its_own_prediction_is_perfect(dataset, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    status, lines, err = run(["--pred", str(dataset), "--gt", str(dataset), "--out", str(out)], capsys)
    assert status == 0 and len(lines) == 1 and not err
    line = json.loads(lines[0])
    m = strict_json(out)
    assert line["psnr"] == m["psnr"] == 100.0 and m["psnr_capped"] is True
    assert m["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert m["r_err_deg"] < 0.5 and m["t_err"] < 0.03, m["per_clip"]
    assert all(c["r_err_deg"] < 1.0 and c["psnr"] == 100.0 for c in m["per_clip"]), m["per_clip"]
    assert m["lpips"] is None and m["fid"] is None and m["fvd"] is None
    assert m["missing"] == {"lpips": "no --lpips-weights given", "fid": "no --inception-weights given",
                            "fvd": "no --i3d-weights given"}
    assert line["missing"] == ["fid", "fvd", "lpips"] and line["clips"] == 2
    assert (m["clips"], m["frames"]) == (2, 2 * FRAMES)
    assert sorted(c["clip_id"] for c in m["per_clip"]) == ["walk-a", "walk-b"]


def test_drifting_requested_heading_is_reported(dataset, tmp_path, capsys):
    """Two generation outputs whose videos are the ground truth: one asked to follow a heading that drifts from 0
    to 10 degrees over the clip, one asked to follow the clip's own path."""
    from dataset.core.conventions import rotation_from_heading

    truth = clips(dataset)
    a, b = truth["walk-a"], truth["walk-b"]
    drifted = a.c2w.copy()
    for pose, drift in zip(drifted, np.radians(np.linspace(0, 10, FRAMES)), strict=True):
        pose[:3, :3] = rotation_from_heading(drift) @ rotation_from_heading(0.0).T @ pose[:3, :3]  # yaw about +Z
    runs = tmp_path / "runs"
    generation_output(runs / "0", a.row["rgb_mp4"], drifted, "walk-a")
    generation_output(runs / "1", b.row["rgb_mp4"], b.c2w, "walk-b")
    out = tmp_path / "m" / "metrics.json"
    status, lines, _ = run(["--pred", str(runs), "--gt", str(dataset), "--out", str(out)], capsys)
    assert status == 0 and len(lines) == 1
    per_clip = {c["clip_id"]: c for c in strict_json(out)["per_clip"]}
    assert per_clip["walk-a"]["r_err_deg"] == pytest.approx(5.0, abs=1.0)
    assert per_clip["walk-b"]["r_err_deg"] < 1.0
    assert per_clip["walk-a"]["t_err"] < 0.03  # the drift turns the camera in place: positions still match


def test_psnr_matches_numpy_on_the_written_frames(dataset, tmp_path, capsys):
    gt = clips(dataset)["walk-b"]
    video = encode_mp4(decode_mp4(gt.row["rgb_mp4"]), 12, crf=40)  # a lossy "prediction"
    folder = generation_output(tmp_path / "gen", video, gt.c2w, None)
    out = tmp_path / "metrics.json"
    status, lines, _ = run(["--pred", str(folder), "--gt", str(dataset), "--clip", "walk-b", "--out", str(out)],
                           capsys)
    assert status == 0 and len(lines) == 1

    def frames(path_or_bytes) -> np.ndarray:  # PyAV directly, not the project's decoder
        import io

        with av.open(io.BytesIO(path_or_bytes)) as container:
            return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(np.float64)

    pred, truth = frames((folder / "video.mp4").read_bytes()), frames(gt.row["rgb_mp4"])
    mse = ((pred - truth) ** 2).reshape(FRAMES, -1).mean(axis=1)
    m = strict_json(out)
    assert m["psnr"] == pytest.approx(np.mean(10 * np.log10(255**2 / mse)), rel=1e-9)
    assert m["psnr_capped"] is False and 20 < m["psnr"] < 45 and m["ssim"] < 1


def test_a_shorter_generation_is_scored_on_the_clips_first_frames(dataset, tmp_path, capsys):
    gt = clips(dataset)["walk-b"]
    first = decode_mp4(gt.row["rgb_mp4"])[:9]  # a 4k+1 generation of a 13-frame clip
    folder = generation_output(tmp_path / "gen", encode_mp4(first, 12, crf=40), gt.c2w[:9], "walk-b")
    out = tmp_path / "metrics.json"
    status, _, _ = run(["--pred", str(folder), "--gt", str(dataset), "--out", str(out)], capsys)
    pred = decode_mp4((folder / "video.mp4").read_bytes()).astype(np.float64)
    mse = ((pred - first.astype(np.float64)) ** 2).reshape(9, -1).mean(axis=1)
    m = strict_json(out)
    assert status == 0 and m["frames"] == 9 and m["per_clip"][0]["frames"] == 9
    assert m["psnr"] == pytest.approx(np.mean(10 * np.log10(255**2 / mse)), rel=1e-9)


def test_bad_inputs_are_one_line_errors(dataset, tmp_path, capsys):
    gt = clips(dataset)["walk-a"]
    frames = decode_mp4(gt.row["rgb_mp4"])
    longer = generation_output(tmp_path / "longer", encode_mp4(np.concatenate([frames, frames[:4]]), 12),
                               np.concatenate([gt.c2w, gt.c2w[:4]]), "walk-a")
    orphan = generation_output(tmp_path / "orphan", gt.row["rgb_mp4"], gt.c2w, None)
    unknown = generation_output(tmp_path / "unknown", gt.row["rgb_mp4"], gt.c2w, "no-such-clip")
    short = generation_output(tmp_path / "short", gt.row["rgb_mp4"], gt.c2w[:5], "walk-a")
    out = str(tmp_path / "metrics.json")
    cases = {str(tmp_path / "absent"): "does not exist", str(orphan): "has no clip.json: give --clip",
             str(unknown): "has no committed clip 'no-such-clip'", str(short): "5 requested poses for 13",
             str(orphan / "video.mp4"): "neither a dataset",
             str(longer): "the prediction has 17 frames, its ground truth only 13"}
    for pred, problem in cases.items():
        status, lines, err = run(["--pred", pred, "--gt", str(dataset), "--out", out], capsys)
        assert status == 2 and not lines and len(err) == 1 and problem in err[0], (pred, err)
    assert not Path(out).exists()
