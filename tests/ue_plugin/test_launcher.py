"""Launch mode: game instances started with their own port and ini, restarted when they die, never orphaned."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from ue_plugin.launcher import InstanceConfig, LaunchError, UEInstance

FAKE_GAME = Path(__file__).parents[1] / "helpers" / "fake_ue_game.py"
ray = pytest.importorskip("ray")


@pytest.fixture
def game_binary(tmp_path):
    """A 'packaged game' executable: the fake game under this test's Python."""
    binary = tmp_path / "Game.sh"
    binary.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_GAME}" "$@"\n')
    binary.chmod(0o755)
    return binary


def test_instance_starts_answers_restarts_and_stops(game_binary, tmp_path):
    inst = UEInstance(InstanceConfig(binary=str(game_binary), map="procedural:room:4x4x3", workdir=str(tmp_path),
                                     startup_timeout_s=60))
    cmd = inst.command()
    assert cmd[cmd.index("-UnrealCVPort") + 1] == str(inst.port) and "-RenderOffScreen" in cmd
    inst.start()
    try:
        assert inst.answers() and f"Port={inst.port}" in (inst.folder / "unrealcv.ini").read_text()
        os.killpg(inst.process.pid, signal.SIGKILL)  # the game crashes
        inst.process.wait()
        assert not inst.answers(timeout=1)
        inst.restart()
        assert inst.answers() and inst.restarts == 1
    finally:
        inst.stop()
    assert inst.process is None and not inst.answers(timeout=1)


def test_bad_binaries_are_clear_errors(tmp_path):
    with pytest.raises(LaunchError, match="does not exist"):
        UEInstance(InstanceConfig(binary=str(tmp_path / "nope"), map="x", workdir=str(tmp_path))).start()
    crash = tmp_path / "Crash.sh"
    crash.write_text("#!/bin/sh\necho 'LogInit: Error: no GPU'\nexit 3\n")
    crash.chmod(0o755)
    with pytest.raises(LaunchError, match=r"(?s)exited with code 3 during start-up.*no GPU"):
        UEInstance(InstanceConfig(binary=str(crash), map="x", workdir=str(tmp_path), startup_timeout_s=20)).start()


def test_launch_mode_build_survives_a_crashed_instance(game_binary, tmp_path):
    from dataset.core.jobspec import parse_job_spec
    from dataset.jobs.build import run_build
    from dataset.store.reader import verify_dataset
    from dataset.store.shards import committed_shards

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, num_gpus=1, resources={"ue_slot": 2}, include_dashboard=False, log_to_driver=False,
             configure_logging=False)  # one (logical) GPU: two instances share it
    try:
        spec = parse_job_spec({"scenes": ["procedural:indoor:1"], "trajectories_per_scene": 6, "frames_per_clip": 8,
                               "resolution": [256, 128], "output": {"shard_size_mb": 0.05, "rows_per_group": 1},
                               "renderer": {"kind": "unreal", "binary": str(game_binary),
                                            "map": "procedural:indoor:1", "instances_per_gpu": 2, "timeout_s": 5,
                                            "resources": {"ue_slot": 1}}})
        out = tmp_path / "out"

        def crash_one():
            deadline = time.time() + 120
            while time.time() < deadline and not committed_shards(out):
                time.sleep(0.05)
            import subprocess

            games = subprocess.run(["pgrep", "-af", str(FAKE_GAME)], capture_output=True, text=True).stdout
            seen.extend(games.splitlines())
            if seen:
                os.kill(int(seen[0].split()[0]), signal.SIGKILL)

        seen = []
        killer = threading.Thread(target=crash_one)
        killer.start()
        counts = run_build(spec, out, progress=False)
        killer.join()
        ids = [c for _, m in committed_shards(out) for c in m["clip_ids"]]
        assert len(ids) == len(set(ids)) == 6 == counts["clips_committed"] and verify_dataset(out) == []
        assert counts["endpoint_failures"] >= 1, "the crash was noticed; the instance was restarted"
        assert seen and all("-graphicsadapter=0" in line for line in seen), seen
    finally:
        ray.shutdown()
    time.sleep(1)
    import subprocess

    left = subprocess.run(["pgrep", "-f", str(FAKE_GAME)], capture_output=True, text=True).stdout.split()
    assert left == [], "no game process outlives the build"
