"""Run inside the Unreal Editor: the high-quality offline mode. Turns a Matrix-Pano trajectory file into a
Level Sequence (a CineCamera keyed at every frame) and renders it with Movie Render Queue's panoramic pass,
plus a post-process material that writes range depth, into EXR frames that ``matrix-pano unreal ingest``
turns into a dataset clip.

    UnrealEditor Project.uproject /Game/Maps/Apartment \\
        -ExecutePythonScript="mrq_panorama.py trajectories.json 0 OUT /Game/MatrixPano/M_RangeDepth"

The depth material (a post-process material, ``Blendable Location: After Tonemapping``) must output
``length(AbsoluteWorldPosition - CameraPosition)`` in cm, not SceneDepth (planar, per pane).
"""

from __future__ import annotations

import sys
from pathlib import Path

import unreal

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the matrix-pano checkout
import numpy as np  # noqa: E402

from dataset.core.trajectories import read_trajectory_file  # noqa: E402
from ue_plugin.level import sequence_keys  # noqa: E402

DEFAULT_FPS = 12
"""Frame rate of the sequence when the trajectory file does not say (only ``matrix-pano sample`` output does)."""


def build_sequence(c2w: np.ndarray, fps: int, name: str, package: str = "/Game/MatrixPano") -> unreal.LevelSequence:
    """A Level Sequence with a CineCamera keyed at every frame of the trajectory (and a camera cut to it)."""
    tools = unreal.AssetToolsHelpers.get_asset_tools()
    seq = tools.create_asset(name, package, unreal.LevelSequence, unreal.LevelSequenceFactoryNew())
    seq.set_display_rate(unreal.FrameRate(fps, 1))
    seq.set_playback_start(0)
    seq.set_playback_end(len(c2w))
    actors = unreal.get_editor_subsystem(unreal.EditorActorSubsystem)
    camera = actors.spawn_actor_from_class(unreal.CineCameraActor, unreal.Vector(0, 0, 0))
    binding = seq.add_possessable(camera)
    section = binding.add_track(unreal.MovieScene3DTransformTrack).add_section()
    section.set_range(0, len(c2w))
    channels = section.get_all_channels()  # Location X/Y/Z, Rotation X (roll) / Y (pitch) / Z (yaw), Scale
    for key in sequence_keys(c2w, fps):
        frame = unreal.FrameNumber(key["frame"])
        (x, y, z), (pitch, yaw, roll) = key["location_cm"], key["rotation_deg"]
        for channel, value in zip(channels[:6], (x, y, z, roll, pitch, yaw), strict=True):
            channel.add_key(frame, value, interpolation=unreal.MovieSceneKeyInterpolation.LINEAR)
    cut = seq.add_master_track(unreal.MovieSceneCameraCutTrack).add_section()
    cut.set_range(0, len(c2w))
    cut.set_camera_binding_id(seq.get_binding_id(binding))
    return seq


def queue_render(seq: unreal.LevelSequence, out_dir: str, depth_material: str, steps: tuple[int, int] = (8, 3)
                 ) -> None:
    """Render the sequence with the panoramic pass and the range-depth material to EXR in ``out_dir``."""
    subsystem = unreal.get_editor_subsystem(unreal.MoviePipelineQueueSubsystem)
    job = subsystem.get_queue().allocate_new_job(unreal.MoviePipelineExecutorJob)
    job.sequence = unreal.SoftObjectPath(seq.get_path_name())
    job.map = unreal.SoftObjectPath(unreal.get_editor_subsystem(unreal.UnrealEditorSubsystem)
                                    .get_editor_world().get_path_name())
    config = job.get_configuration()
    pano = config.find_or_add_setting_by_class(unreal.MoviePipelinePanoramicPass)
    pano.num_horizontal_steps, pano.num_vertical_steps = steps
    pano.follow_camera_orientation = True
    pano.allocate_history_per_pane = True
    pano.additional_post_process_materials = [unreal.MoviePipelinePostProcessPass(
        enabled=True, material=unreal.load_asset(depth_material))]
    output = config.find_or_add_setting_by_class(unreal.MoviePipelineOutputSetting)
    output.output_directory = unreal.DirectoryPath(out_dir)
    output.file_name_format = "{render_pass}.{frame_number}"
    config.find_or_add_setting_by_class(unreal.MoviePipelineImageSequenceOutput_EXR)
    subsystem.render_queue_with_executor(unreal.MoviePipelinePIEExecutor)


if __name__ == "__main__":
    trajectories, index, out, material = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    traj = read_trajectory_file(trajectories, index)
    fps = int(round(traj.fps if traj.fps is not None else DEFAULT_FPS))
    queue_render(build_sequence(traj.c2w, fps, f"MatrixPano_{index:04d}"), out, material)
