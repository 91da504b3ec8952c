"""Job specs shared by the build, reader and training-data tests."""

SMALL_BUILD = {"scenes": ["procedural:indoor:1", "procedural:room:6x8x3"], "trajectories_per_scene": 2,
               "frames_per_clip": 6, "resolution": [128, 64], "output": {"shard_size_mb": 0.05, "rows_per_group": 1}}
"""Four small clips in a few seconds; shards cut small so there are several."""
