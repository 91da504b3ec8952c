"""``annotate``: same rows, ids and payload bytes; bad clips rejected; resumable per shard; input untouched."""

from __future__ import annotations

import hashlib
import shutil

import pyarrow.parquet as pq
import pytest
from build_helpers import add_bad_shard

from annotation.annotate import AnnotateError, run_annotate
from dataset.cli import main
from dataset.core.jobspec import AnnotateSpec, parse_spec
from dataset.store.reader import PanoDataset, verify_dataset
from dataset.store.shards import committed_shards

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def mixed(small_dataset, tmp_path_factory):
    """The small dataset plus a shard of three deliberately bad clips (inline verdicts flipped to accepted,
    as if built with lenient thresholds, so annotate has to find them)."""
    out = tmp_path_factory.mktemp("mixed") / "ds"
    shutil.copytree(small_dataset, out)
    return out, add_bad_shard(out, status="accepted")


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((folder / "shards").iterdir())}


def test_annotate_rejects_bad_clips_and_keeps_everything_else(mixed, tmp_path, local_ray):
    src, bad = mixed
    before = _digests(src)
    out = tmp_path / "annotated"
    counts = run_annotate(src, out, AnnotateSpec(), workers=2, progress=False)
    assert _digests(src) == before, "input shards are never modified"
    assert counts["clips"] == 7 and verify_dataset(out) == []
    for (pin, _), (pout, _) in zip(committed_shards(src), committed_shards(out), strict=True):
        a, b = pq.read_table(pin), pq.read_table(pout)
        assert pin.name == pout.name and a.num_rows == b.num_rows
        for col in a.column_names:
            if col not in ("scores", "status", "reject_reasons", "caption"):
                assert a[col].equals(b[col]), col
    status = {c.clip_id: (c.row["status"], c.row["reject_reasons"]) for c in PanoDataset(out).clips()}
    assert all(status[c][0] == "rejected" for c in bad), status
    assert all(s == "accepted" for cid, (s, _) in status.items() if cid not in bad)
    assert "camera motion" in " ".join(status["bad-no-motion"][1])
    assert "void_fraction" in " ".join(status["bad-inside-a-wall"][1])


def test_annotate_resumes_per_shard_and_refuses_other_settings(mixed, tmp_path, local_ray):
    src, _ = mixed
    out = tmp_path / "annotated"
    run_annotate(src, out, AnnotateSpec(), workers=1, progress=False)
    shards = committed_shards(out)
    first, last = shards[0][0], shards[-1][0]
    mtime = first.stat().st_mtime_ns
    last.with_suffix(".json").unlink()  # as if the job died before committing it
    counts = run_annotate(src, out, AnnotateSpec(), workers=1, progress=False)
    assert counts["clips"] == 7 and first.stat().st_mtime_ns == mtime and last.with_suffix(".json").exists()
    strict = parse_spec(AnnotateSpec, {"annotation": {"min_detail": 1e6}}, "test")
    with pytest.raises(AnnotateError, match="different settings"):
        run_annotate(src, out, strict, workers=1, progress=False)
    counts = run_annotate(src, out, strict, workers=1, overwrite=True, progress=False)
    assert counts["rejected"] == 7


def test_annotate_cli_errors(mixed, tmp_path, capsys):
    src, _ = mixed
    assert main(["annotate", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert main(["annotate", str(src), "--out", str(src / "inside")]) == 2
    cfg = tmp_path / "a.yaml"
    cfg.write_text("captioner: {modle: x}\n")
    assert main(["annotate", str(src), "--out", str(tmp_path / "o"), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "no committed shards" in err[0] and "must be outside" in err[1]
    assert "captioner.modle: unknown key; allowed keys: model," in err[2]
    (tmp_path / "empty").mkdir()
    for model, message in ((tmp_path / "absent", "is not here"), ("someone/NoSuchModel-2B", "is not here"),
                           (tmp_path / "empty", "has no config.json")):
        assert main(["annotate", str(src), "--out", str(tmp_path / "o2"), "--model", str(model)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "\x1b" not in err  # before Ray starts: one plain line
        assert not (tmp_path / "o2").exists()


def test_annotate_with_a_captioning_model_on_ray_actors(small_dataset, tmp_path, local_ray):
    pytest.importorskip("torchvision", reason="VideoLLaMA3's video processor needs torchvision")
    from tiny_videollama3 import save_tiny_videollama3

    model = save_tiny_videollama3(tmp_path / "tiny")
    spec = parse_spec(AnnotateSpec, {"captioner": {"model": str(model), "device": "cpu", "num_frames": 4,
                                                   "frame_size": 112, "max_new_tokens": 8}}, "test")
    out = tmp_path / "captioned"
    counts = run_annotate(small_dataset, out, spec, workers=2, progress=False)
    assert counts["clips"] == 4 and verify_dataset(out) == []
    for clip in PanoDataset(out).clips():
        row = clip.row
        vlm = [row["scores"][k] for k in ("vlm_detail", "vlm_semantic", "vlm_motion")]
        if row["caption"] is None:  # random weights: the malformed answer is recorded, the clip rejected
            assert vlm == [None] * 3 and row["status"] == "rejected"
            assert any(r.startswith("captioner: no valid answer") for r in row["reject_reasons"])
        else:
            assert all(1 <= v <= 5 for v in vlm)


@pytest.mark.slow
def test_annotate_records_clips_over_the_captioner_time_limit_and_finishes(small_dataset, tmp_path, local_ray):
    pytest.importorskip("torchvision", reason="VideoLLaMA3's video processor needs torchvision")
    from tiny_videollama3 import save_tiny_videollama3

    model = save_tiny_videollama3(tmp_path / "tiny")
    spec = parse_spec(AnnotateSpec, {"captioner": {"model": str(model), "device": "cpu", "num_frames": 4,
                                                   "frame_size": 112, "max_new_tokens": 64, "timeout_s": 1e-3}},
                      "test")
    out = tmp_path / "captioned"
    counts = run_annotate(small_dataset, out, spec, workers=2, progress=False)
    assert counts["clips"] == 4 and counts["rejected"] == 4 and verify_dataset(out) == []
    for clip in PanoDataset(out).clips():
        row = clip.row
        assert row["caption"] is None and row["status"] == "rejected"
        assert any(r.startswith("captioner: timed out: ") and "over captioner.timeout_s = 0.001 s per clip" in r
                   for r in row["reject_reasons"]), row["reject_reasons"]


def test_annotate_redoes_a_damaged_output_shard_and_names_a_corrupt_input(small_dataset, tmp_path, local_ray):
    out = tmp_path / "annotated"
    spec = AnnotateSpec(rescore=False)
    run_annotate(small_dataset, out, spec, workers=2, progress=False)
    (p0, _), *_ = committed_shards(out)
    p0.write_bytes(p0.read_bytes()[:500])  # an output shard truncated after its commit
    counts = run_annotate(small_dataset, out, spec, workers=2, progress=False)
    assert counts["quarantined"] == 1 and counts["clips"] == 4 and verify_dataset(out) == []
    assert (out / "quarantine" / p0.name).stat().st_size == 500
    src = tmp_path / "src"
    shutil.copytree(small_dataset, src)
    (_, _), (p1, _), *_ = committed_shards(src)
    data = bytearray(p1.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the checksum read with the shard sees it
    p1.write_bytes(bytes(data))
    with pytest.raises(AnnotateError, match=f"{p1.name}: content differs from its marker's SHA-256"):
        run_annotate(src, tmp_path / "other", spec, workers=2, progress=False)
    assert len(committed_shards(tmp_path / "other")) == 3, "the intact shards are committed"
