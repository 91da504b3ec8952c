"""``matrix-pano stats``: counts and rates of a dataset, and previews (a first-frame contact sheet, an animated
WebP of clips playing side by side, and top-down trajectory plots over each scene's walkable floor) in
``DIR/previews/``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
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


def write_previews(path: str | Path, max_clips: int = 48, motion_clips: int = 12,
                   plot_paths: Callable[[str, list, dict, Path], None] | None = None) -> list[Path]:
    """Into ``DIR/previews/``: a contact sheet of the first frames of up to ``max_clips`` clips (labelled with
    status, scene and clip id), an animated WebP of up to ``motion_clips`` clips playing side by side (motion
    without decoding shards), and with ``plot_paths`` (``sampling.plot.plot_clip_paths``: scene, [(clip id,
    c2w)], the build spec, PNG path) a top-down plot of each scene's clips."""
    from PIL import Image, ImageDraw

    from dataset.core.codecs import decode_mp4

    ds = PanoDataset(path)
    out = Path(path) / "previews"
    out.mkdir(exist_ok=True)
    written = []
    thumbs, labels, paths, motion = [], [], {}, []
    for clip in ds.clips():
        paths.setdefault(clip.row["scene"], []).append((clip.clip_id, clip.c2w))
        if len(thumbs) < max_clips:
            first = decode_first_frame(clip.row["rgb_mp4"])
            thumbs.append(Image.fromarray(first).resize((320, 160)))
            labels.append(f"{clip.row['status'][:3]} {clip.row['scene'][-24:]} {clip.clip_id[:8]}")
        if len(motion) < motion_clips:
            frames = decode_mp4(clip.row["rgb_mp4"])
            motion.append([Image.fromarray(f).resize((MOTION_SIZE, MOTION_SIZE // 2)) for f in frames])
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
    if motion:
        written.append(_motion_preview(motion, out / "clips.webp"))
    spec = read_manifest(path).get("spec", {})
    for k, (scene, trajs) in enumerate(sorted(paths.items()) if plot_paths else ()):
        target = out / f"trajectories_{k:03d}.png"
        plot_paths(scene, trajs, spec, target)
        written.append(target)
    return written


MOTION_SIZE = 256
"""Width of each clip in the animated preview."""
MOTION_FRAMES = 32
"""Most frames of the animated preview (clips are subsampled evenly to it)."""


def _motion_preview(clips: list[list], target: Path) -> Path:
    """An animated WebP: the clips in a grid of ``SHEET_COLUMNS``, all playing at once (shorter ones hold their last
    frame), at most ``MOTION_FRAMES`` frames."""
    from PIL import Image

    longest = max(len(c) for c in clips)
    picks = np.linspace(0, longest - 1, min(longest, MOTION_FRAMES)).round().astype(int)
    cols = min(len(clips), SHEET_COLUMNS)
    rows = (len(clips) + cols - 1) // cols
    frames = []
    for t in picks:
        canvas = Image.new("RGB", (MOTION_SIZE * cols, MOTION_SIZE // 2 * rows), "white")
        for i, clip in enumerate(clips):
            canvas.paste(clip[min(t, len(clip) - 1)], (MOTION_SIZE * (i % cols), MOTION_SIZE // 2 * (i // cols)))
        frames.append(canvas)
    duration = max(40, round(1000 * longest / len(picks) / 12))  # about real time at the usual 12 fps
    frames[0].save(target, "WEBP", save_all=True, append_images=frames[1:], duration=duration, loop=0, quality=70)
    return target
