"""Annotation throughput: model-free filters and VideoLLaMA3 captioning, in clips per second.

    python benchmarks/annotate.py [--clips 8] [--model PATH | --random-size tiny|2b] [--device auto] [--view panorama]

Clips are rendered from procedural:indoor:0 (49 frames at 960x480, as the demo build makes them).
The filters run on the decoded frames, as ``annotate`` does. The captioner runs on the same clips with
a real checkpoint (``--model``) or a random-weight model of the given size: ``2b`` follows the
VideoLLaMA3-2B architecture (Qwen2.5-1.5B text model, 27-layer 1152-wide vision encoder), so its speed
stands for the real model's, but its answers are gibberish (parsing fails, which costs the retries).
"""

from __future__ import annotations

import argparse
import tempfile
import time

from annotation.filters import clip_scores
from dataset.core.jobspec import CaptionerSpec, parse_job_spec
from dataset.jobs.worker import plan_scene
from dataset.render.embedded import EmbeddedRenderer, RenderSettings


def random_checkpoint(size: str, folder: str) -> str:
    """Save a random-weight VideoLLaMA3 of the given size with a real-sized processor; returns its folder."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent.parent / "tests" / "helpers"))
    from tiny_videollama3 import save_tiny_videollama3

    save_tiny_videollama3(folder)
    if size == "tiny":
        return folder
    import torch
    from transformers import AutoProcessor, VideoLlama3Config, VideoLlama3ForConditionalGeneration

    processor = AutoProcessor.from_pretrained(folder)
    config = VideoLlama3Config(
        text_config={"model_type": "qwen2", "vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960,
                     "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
                     "max_position_embeddings": 32768, "eos_token_id": processor.tokenizer.eos_token_id,
                     "pad_token_id": processor.tokenizer.pad_token_id},
        vision_config={"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
                       "num_attention_heads": 16, "patch_size": 14},
        image_token_id=processor.image_token_id, video_token_id=processor.video_token_id)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = VideoLlama3ForConditionalGeneration(config)
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    model.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--model", help="VideoLLaMA3 checkpoint folder")
    parser.add_argument("--random-size", choices=["tiny", "2b"], default="tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--view", choices=["panorama", "crops"], default="panorama")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    args = parser.parse_args()

    spec = parse_job_spec({"scenes": ["procedural:indoor:0"], "trajectories_per_scene": args.clips})
    scene, plan = plan_scene(spec, "procedural:indoor:0")
    clips = []
    with EmbeddedRenderer(scene, RenderSettings()) as renderer:
        for clip in plan.clips:
            c2w = clip.c2w
            frames = renderer.render(c2w, 960)
            clips.append((frames.rgb, frames.depth, c2w))
    n = len(clips)
    print(f"{n} clips of {len(clips[0][0])} frames at 960x480")
    start = time.perf_counter()
    for rgb, depth, c2w in clips:
        clip_scores(rgb, depth, c2w, 0.25)
    seconds = time.perf_counter() - start
    print(f"filters: {n / seconds:.1f} clips/s ({seconds / n * 1000:.0f} ms per clip, one process)")

    from annotation.captioner import VideoLlama3Captioner

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or random_checkpoint(args.random_size, tmp)
        cap = CaptionerSpec(model=model, device=args.device, view=args.view, batch_size=args.batch_size,
                            max_new_tokens=args.max_new_tokens, max_attempts=1)
        t0 = time.perf_counter()
        captioner = VideoLlama3Captioner(cap)
        print(f"captioner: {args.model or 'random ' + args.random_size} on {captioner.device}, "
              f"loaded in {time.perf_counter() - t0:.1f} s")
        captioner.annotate([clips[0][0]], [12.0])  # warm-up
        start = time.perf_counter()
        results = captioner.annotate([c[0] for c in clips], [12.0] * n)
        seconds = time.perf_counter() - start
    ok = sum(r.error is None for r in results)
    print(f"captioner ({args.view}, batch {args.batch_size}, up to {args.max_new_tokens} new tokens): "
          f"{n / seconds:.2f} clips/s, {ok}/{n} answers parsed")
    if ok:
        print("example:", next(r for r in results if r.error is None))


if __name__ == "__main__":
    main()
