"""``matrix-pano stats``: counts and rates of a dataset, and previews (first-frame contact sheets and
top-down trajectory plots per scene) in ``DIR/previews/``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from dataset.core.codecs import decode_first_frame
from dataset.store.reader import PanoDataset
from dataset.store.shards import read_manifest

SHEET_COLUMNS = 4
"""Thumbnails per contact-sheet row."""


def dataset_stats(path: str | Path) -> dict:
    """Counts by status and scene, frames, bytes, mean scores, and the failures recorded."""
    import pyarrow.parquet as pq

    ds = PanoDataset(path)
    table = ds.table(columns=["scene", "status", "num_frames", "scores", "reject_reasons"])
    rows = table.to_pylist()
    status = Counter(r["status"] for r in rows)
    scores = {}
    for k in rows[0]["scores"] if rows else {}:
        values = [r["scores"][k] for r in rows if r["scores"][k] is not None]
        if values:
            scores[k] = float(np.mean(values))
    failures = Path(path) / "failures.parquet"
    counts = read_manifest(path).get("counts", {})
    return {"clips": len(rows), "accepted": status.get("accepted", 0), "rejected": status.get("rejected", 0),
            "acceptance_rate": status.get("accepted", 0) / max(len(rows), 1),
            "frames": int(sum(r["num_frames"] for r in rows)), "shards": len(ds.shards),
            "bytes": int(sum(p.stat().st_size for p in ds.shards)),
            "failed": pq.read_metadata(failures).num_rows if failures.exists() else 0,
            "by_scene": dict(Counter(r["scene"] for r in rows)), "mean_scores": scores,
            "reject_reasons": dict(Counter(reason.split(" ")[0] for r in rows for reason in r["reject_reasons"])),
            "build_seconds": counts.get("seconds")}


def write_previews(path: str | Path, max_clips: int = 48) -> list[Path]:
    """Contact sheet of the first frames of up to ``max_clips`` clips and a trajectory plot per scene."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image, ImageDraw

    ds = PanoDataset(path)
    out = Path(path) / "previews"
    out.mkdir(exist_ok=True)
    written = []
    thumbs, labels, paths = [], [], {}
    for clip in ds.clips():
        paths.setdefault(clip.row["scene"], []).append(clip.c2w[:, :3, 3])
        if len(thumbs) < max_clips:
            first = decode_first_frame(clip.row["rgb_mp4"])
            thumbs.append(Image.fromarray(first).resize((320, 160)))
            labels.append(f"{clip.row['status'][:3]} {clip.clip_id[:8]}")
    if thumbs:
        rows = (len(thumbs) + SHEET_COLUMNS - 1) // SHEET_COLUMNS
        sheet = Image.new("RGB", (320 * SHEET_COLUMNS, 176 * rows), "white")
        draw = ImageDraw.Draw(sheet)
        for i, (im, label) in enumerate(zip(thumbs, labels, strict=True)):
            x, y = 320 * (i % SHEET_COLUMNS), 176 * (i // SHEET_COLUMNS)
            sheet.paste(im, (x, y))
            draw.text((x + 4, y + 161), label, fill="black")
        sheet.save(out / "first_frames.png")
        written.append(out / "first_frames.png")
    for k, (scene, trajs) in enumerate(sorted(paths.items())):
        fig, ax = plt.subplots(figsize=(6, 6))
        for p in trajs:
            (line,) = ax.plot(p[:, 0], p[:, 1], "-")
            ax.plot(p[0, 0], p[0, 1], "o", markersize=4, color=line.get_color())
        ax.set_aspect("equal")
        ax.set_title(f"{scene}: {len(trajs)} clips (dots: starts)")
        ax.set_xlabel("x (m)")
        ax.set_ylabel("y (m)")
        target = out / f"trajectories_{k:03d}.png"
        fig.savefig(target, dpi=90)
        plt.close(fig)
        written.append(target)
    return written
