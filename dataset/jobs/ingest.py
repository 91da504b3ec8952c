"""``matrix-pano unreal ingest``: Movie Render Queue panoramas (``ue_plugin.mrq``) added to a dataset as clips.

The clip is scored like a built one (``annotation.filters``) and committed as a new shard of the dataset
in ``out``. Its scene id is the scene's source and content hash, as for built clips, so the clips of a
level rendered both ways join on ``scene_id``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from annotation.filters import clip_scores, verdict
from dataset.core.codecs import encode_depth, encode_mp4
from dataset.core.ids import mrq_clip_id, mrq_config_hash
from dataset.core.ids import scene_id as make_scene_id
from dataset.core.jobspec import AnnotationSpec
from dataset.sources import load_scene
from dataset.store.output import output_lock
from dataset.store.rows import shard_row
from dataset.store.shards import ShardWriter, committed_clip_ids, next_shard_number
from ue_plugin.mrq import read_mrq_frames


def ingest_mrq(frames_dir: str | Path, c2w: np.ndarray, fps: float, out_dir: str | Path, trajectory_id: str,
               scene: str, color_pass: str = "FinalImage", depth_pass: str = "M_RangeDepth",
               thresholds: AnnotationSpec | None = None, crf: int = 18, scene_id: str | None = None) -> str:
    """Add one rendered trajectory to the dataset in ``out_dir`` as a committed shard; returns its clip id.

    ``scene_id`` is the id ``matrix-pano sample`` wrote beside the trajectory; without it the scene is loaded
    here to hash its content. The folder is locked meanwhile (shard numbers must not race with a build)."""
    rgb, depth = read_mrq_frames(frames_dir, len(c2w), color_pass, depth_pass)
    clip = mrq_clip_id(scene, trajectory_id)
    with output_lock(out_dir, "unreal ingest"):
        if clip in committed_clip_ids(out_dir):
            return clip
        if scene_id is None:
            scene_id = make_scene_id(scene, load_scene(scene).content_hash())
        t = thresholds or AnnotationSpec()
        scores = clip_scores(rgb, depth, c2w, t.near_limit_m)
        status, reasons = verdict(scores, t)
        n, h, w = depth.shape
        writer = ShardWriter(Path(out_dir) / "shards")
        writer.add(shard_row(clip_id=clip, scene_id=scene_id, trajectory_id=trajectory_id, scene=scene, width=w,
                             height=h, fps=fps, c2w=c2w, rgb_mp4=encode_mp4(rgb, fps, crf), depth=encode_depth(depth),
                             scores=scores, status=status, reject_reasons=reasons, renderer="unreal-mrq",
                             renderer_version="mrq-panoramic-1", config_hash=mrq_config_hash(color_pass, depth_pass),
                             seed=0))
        writer.commit(next_shard_number(out_dir))
    return clip
