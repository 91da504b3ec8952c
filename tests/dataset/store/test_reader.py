"""Reading and verifying datasets: only committed shards are visible, and verify names what is wrong."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataset.cli import main
from dataset.store.reader import PanoDataset, verify_dataset
from dataset.store.shards import build_marker, committed_shards


@pytest.fixture
def dataset_copy(small_dataset, tmp_path):
    out = tmp_path / "ds"
    shutil.copytree(small_dataset, out)
    return out


def test_filters_and_uncommitted_files_are_invisible(dataset_copy):
    ds = PanoDataset(dataset_copy)
    n = len(ds)
    first = ds.shards[0]
    shutil.copy(first, dataset_copy / "shards" / "part-99999.parquet")  # no marker: debris of a crashed writer
    (dataset_copy / "shards" / ".tmp-abc.parquet").write_bytes(b"partial")
    ds = PanoDataset(dataset_copy)
    assert len(ds) == n == 4 and verify_dataset(dataset_copy) == []
    assert len(list(ds.clips(status="accepted"))) + len(list(ds.clips(status="rejected"))) == n
    scene_id = next(ds.clips(scene="procedural:indoor:1")).row["scene_id"]
    assert len(list(ds.clips(scene=scene_id))) == 2
    assert set(ds.table().column_names) >= {"clip_id", "c2w", "scores"} and "rgb_mp4" not in ds.table().column_names


def _reseal(parquet):
    """Write a marker that matches ``parquet`` as it is now (a shard committed with bad content)."""
    rows = pq.read_table(parquet, columns=["clip_id", "scene_id", "status", "num_frames"]).to_pylist()
    parquet.with_suffix(".json").write_text(json.dumps(build_marker(parquet, rows)))


def _rewrite(parquet, change):
    table = pq.read_table(parquet)
    rows = table.to_pylist()
    change(rows)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), parquet)
    _reseal(parquet)


def test_verify_names_corrupt_video_missing_poses_and_duplicates(dataset_copy, capsys):
    (p0, m0), (p1, _) = committed_shards(dataset_copy)[:2]

    def corrupt(rows):
        rows[0]["rgb_mp4"] = rows[0]["rgb_mp4"][:200]
        rows[0]["c2w"] = rows[0]["c2w"][:-1]

    _rewrite(p0, corrupt)
    dup = dataset_copy / "shards" / "part-00077.parquet"
    shutil.copy(p1, dup)
    _reseal(dup)
    problems = "\n".join(verify_dataset(dataset_copy))
    cid = m0["clip_ids"][0]
    assert f"{p0.name}: clip {cid}: video" in problems
    assert f"{p0.name}: clip {cid}: 5 poses for 6 frames" in problems
    assert f"part-00077.parquet: clip {json.loads(p1.with_suffix('.json').read_text())['clip_ids'][0]} duplicated " \
           f"(also in {p1.name})" in problems
    assert main(["verify", str(dataset_copy)]) == 2
    assert "problems found" in capsys.readouterr().err


def test_verify_and_stats_cli_on_a_good_dataset(dataset_copy, capsys):
    assert main(["verify", str(dataset_copy)]) == 0
    assert main(["stats", str(dataset_copy)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["clips"] == 4 and stats["by_scene"] == {"procedural:indoor:1": 2, "procedural:room:6x8x3": 2}
    assert (dataset_copy / "previews" / "first_frames.png").exists()
    assert len(list((dataset_copy / "previews").glob("trajectories_*.png"))) == 2
    from PIL import Image

    with Image.open(dataset_copy / "previews" / "clips.webp") as motion:  # the 4 clips playing side by side
        assert motion.is_animated and motion.n_frames > 1 and motion.size == (4 * 256, 128)


def test_missing_dataset_is_a_one_line_error(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "nope")]) == 2
    assert main(["stats", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "no committed shards" in err and "not a Matrix-Pano dataset" in err
