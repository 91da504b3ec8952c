"""Content integrity of committed shards: markers carry sizes and checksums, ``verify`` names every damaged
shard without a traceback, and a resumed build quarantines damaged or duplicate shards and renders their
clips again, so one rerun restores exactly-once with nothing deleted."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from build_helpers import SMALL_BUILD

from dataset.cli import main
from dataset.core.jobspec import parse_job_spec
from dataset.store.output import output_lock
from dataset.store.reader import PanoDataset, verify_dataset
from dataset.store.shards import QUARANTINE, build_marker, committed_shards, file_sha256


@pytest.fixture
def ds(small_dataset, tmp_path) -> Path:
    out = tmp_path / "ds"
    shutil.copytree(small_dataset, out)
    return out


def _files(out: Path) -> dict[str, bytes]:
    """Every committed shard file (parquet and marker) by name."""
    return {p.name: p.read_bytes() for p in sorted((out / "shards").glob("part-*"))}


def _clip_ids(out: Path) -> list[str]:
    """Clip ids as a reader globbing ``shards/part-*.parquet`` (the README's recipes) sees them."""
    return [c for p in sorted((out / "shards").glob("part-*.parquet"))
            for c in pq.read_table(p, columns=["clip_id"]).column("clip_id").to_pylist()]


def test_markers_record_size_and_checksums(ds):
    for parquet, marker in committed_shards(ds):
        assert marker["bytes"] == parquet.stat().st_size and marker["sha256"] == file_sha256(parquet)
        assert len(marker["marker_sha256"]) == 64
    assert verify_dataset(ds) == []


def _damage(ds: Path) -> dict[str, str]:
    """Each kind of damage the issue lists, one per shard: name -> what verify must say about it."""
    (p0, _), (p1, _), (p2, m2), _ = committed_shards(ds)
    with open(p0, "r+b") as f:  # one flipped byte, same size: only the checksum sees it
        f.seek(p0.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x5A]))
    marker1 = p1.with_suffix(".json")
    marker1.write_bytes(marker1.read_bytes()[:40])  # truncated marker
    p2.with_suffix(".json").write_text(json.dumps({k: v for k, v in m2.items() if k != "clip_ids"}))
    return {p0.name: "SHA-256", p1.name: "marker unreadable", p2.name: "no list of clip ids"}


def test_verify_names_each_damaged_shard_without_a_traceback(ds, capsys):
    expected = _damage(ds)
    problems = verify_dataset(ds)
    assert len(problems) == 3
    for name, words in expected.items():
        assert any(p.startswith(name) and words in p for p in problems), (name, problems)
    assert main(["verify", str(ds)]) == 2
    err = capsys.readouterr().err
    assert "3 problems found" in err and "Traceback" not in err
    with pytest.warns(UserWarning, match="2 damaged shards are skipped"):  # readers check markers and sizes
        assert len(PanoDataset(ds)) == 2


def test_truncated_and_emptied_shards_are_named(ds):
    (p0, _), (p1, _), *_ = committed_shards(ds)
    p0.write_bytes(p0.read_bytes()[:-100])
    p1.write_bytes(b"")
    problems = verify_dataset(ds)
    assert [p.split(":")[0] for p in problems] == [p0.name, p1.name]
    assert all("truncated" in p for p in problems)


def test_jobs_refuse_a_damaged_input_and_name_the_repair(ds, tmp_path, capsys):
    original = _files(ds)
    _damage(ds)
    assert main(["export", str(ds), "--out", str(tmp_path / "a")]) == 2  # bad markers: refused before reading
    for name in ("part-00001.json", "part-00002.json"):
        (ds / "shards" / name).write_bytes(original[name])
    assert main(["export", str(ds), "--out", str(tmp_path / "b")]) == 2  # flipped byte: caught as it is read
    (ds / "shards" / "part-00000.parquet").write_bytes(original["part-00000.parquet"])
    assert main(["export", str(ds), "--out", str(tmp_path / "c")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert "2 damaged shards (part-00001.parquet: marker unreadable" in err[0] and "rerun the build" in err[0]
    assert "part-00000.parquet: content differs from its marker's SHA-256" in err[1] and "rerun the build" in err[1]


def test_a_resumed_build_quarantines_damage_and_restores_exactly_once(ds, local_ray, capsys):
    from dataset.jobs.build import run_build

    before = _files(ds)
    wanted = sorted(_clip_ids(ds))
    damaged = _damage(ds)
    (ds / "plans" / next(p.name for p in (ds / "plans").iterdir())).write_text("{\"scene\": ")  # damaged plan
    counts = run_build(parse_job_spec(SMALL_BUILD), ds, workers=2, checksums=True)
    err = capsys.readouterr().err
    assert "moved 3 damaged or duplicate shards" in err and "planning the scene again" in err
    assert counts["quarantined"] == 3 and counts["clips_committed"] == len(wanted) == 4
    assert verify_dataset(ds) == [] and sorted(_clip_ids(ds)) == wanted
    quarantined = {p.name for p in (ds / QUARANTINE).iterdir()}
    assert quarantined == {f for name in damaged for f in (name, name.replace(".parquet", ".json"))}
    assert set(before) - set(_files(ds)) == quarantined, "nothing deleted: every file moved is in quarantine"
    assert main(["stats", str(ds), "--no-previews"]) == 0


def test_a_duplicate_shard_is_quarantined_and_counts_agree(ds, local_ray):
    from dataset.jobs.build import run_build

    (p0, _), *_ = committed_shards(ds)
    dup = ds / "shards" / "part-00050.parquet"
    shutil.copy(p0, dup)
    rows = pq.read_table(dup, columns=["clip_id", "scene_id", "status", "num_frames"]).to_pylist()
    dup.with_suffix(".json").write_text(json.dumps(build_marker(dup, rows)))
    assert any(p.startswith("part-00050.parquet: clip") and "duplicated" in p for p in verify_dataset(ds))
    counts = run_build(parse_job_spec(SMALL_BUILD), ds, workers=2, progress=False)
    assert counts["quarantined"] == 1 and (ds / QUARANTINE / "part-00050.parquet").exists()
    ids = _clip_ids(ds)
    assert len(ids) == len(set(ids)) == counts["clips_committed"] == 4 and verify_dataset(ds) == []


def test_a_second_build_on_the_same_folder_stops_at_once(tmp_path, capsys):
    cfg = tmp_path / "job.yaml"
    cfg.write_text(json.dumps(SMALL_BUILD))
    with output_lock(tmp_path / "out", "build"):
        assert main(["build", str(cfg), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "is in use by build (pid" in err and "use another --out" in err


def _mutate(data: bytes, rng: random.Random) -> bytes:
    """A random truncation, or 1-3 flipped bytes (XOR with a non-zero value); an empty file stays empty."""
    if not data:
        return data
    if rng.random() < 0.3:
        return data[:rng.randrange(len(data))]
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        out[rng.randrange(len(out))] ^= rng.randint(1, 255)
    return bytes(out)


def _is_damaged(name: str, old: bytes, new: bytes) -> bool:
    """Whether a mutation changed what the file says (a marker whose JSON parses to the same object is not)."""
    if name.endswith(".parquet") or old == new:
        return old != new
    try:
        return json.loads(new) != json.loads(old)
    except ValueError:
        return True


def test_verify_fuzz_names_every_damaged_shard(ds):
    rng = random.Random(13)
    original = _files(ds)
    named = 0
    for _ in range(100):
        name = rng.choice(sorted(original))
        new = _mutate(original[name], rng)
        (ds / "shards" / name).write_bytes(new)
        problems = verify_dataset(ds)
        shard = name.replace(".json", ".parquet")
        if _is_damaged(name, original[name], new):
            named += 1
            assert [p.split(":")[0] for p in problems] == [shard], (name, problems)
        else:
            assert problems == []
        (ds / "shards" / name).write_bytes(original[name])
    assert named >= 90


def test_verify_survives_corrupt_content_under_a_matching_marker(ds):
    """Damage sealed into a marker (as an old marker without checksums would let through) is read, not crashed on."""
    rng = random.Random(7)
    original = _files(ds)
    for _ in range(30):
        name = rng.choice([n for n in sorted(original) if n.endswith(".parquet")])
        path = ds / "shards" / name
        path.write_bytes(_mutate(original[name], rng))
        marker = json.loads(original[name.replace(".parquet", ".json")])
        legacy = {k: v for k, v in marker.items() if k not in ("sha256", "marker_sha256")}
        path.with_suffix(".json").write_text(json.dumps({**legacy, "bytes": path.stat().st_size}))
        problems = verify_dataset(ds)  # must not raise
        assert all(p.startswith("part-") for p in problems)
        path.write_bytes(original[name])
        path.with_suffix(".json").write_bytes(original[name.replace(".parquet", ".json")])


@pytest.mark.slow
def test_fuzz_then_one_resumed_build_restores_every_clip_exactly_once(ds, local_ray):
    """100 random byte flips and truncations in 5 rounds: each round verify names every damaged shard (exit 2),
    and one resumed build (checksums on) restores every clip exactly once, moving but never deleting files."""
    from dataset.jobs.build import run_build

    rng = random.Random(2026)
    spec = parse_job_spec(SMALL_BUILD)
    wanted = sorted(_clip_ids(ds))
    for _ in range(5):
        original = _files(ds)
        current = dict(original)
        targets = rng.sample(sorted(original), rng.randint(1, 3))
        for _ in range(20):
            name = rng.choice(targets)
            current[name] = _mutate(current[name], rng)
            (ds / "shards" / name).write_bytes(current[name])
        damaged = {n.replace(".json", ".parquet") for n in original if _is_damaged(n, original[n], current[n])}
        assert {p.split(":")[0] for p in verify_dataset(ds)} == damaged
        assert main(["verify", str(ds)]) == (2 if damaged else 0)
        counts = run_build(spec, ds, workers=2, progress=False, checksums=True)
        assert counts["quarantined"] == len(damaged) and counts["clips_committed"] == len(wanted)
        assert verify_dataset(ds) == [] and sorted(_clip_ids(ds)) == wanted
        gone = set(original) - set(_files(ds))
        assert gone == {n for s in damaged for n in (s, s.replace(".parquet", ".json"))}
        assert all((ds / QUARANTINE / n).read_bytes() == current[n] for n in gone), "moved, never deleted"
