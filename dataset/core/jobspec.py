"""The build job spec: a YAML file validated on load, with one-line errors naming the bad key.

Minimal example (every other key has a default)::

    scenes: [procedural:indoor:0, path/to/level.glb]
    trajectories_per_scene: 4
    frames_per_clip: 49
    fps: 12
    resolution: [960, 480]
    renderer: {kind: embedded}
    output: {shard_size_mb: 256}
    seed: 0

Every number is finite and bounded (``docs/jobspec.md`` lists the ranges); the job-size maximums of
``limits`` can be raised where a machine has the memory and time for more.
"""

from __future__ import annotations

import hashlib
import json
import typing
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SerializerFunctionWrapHandler,
    Tag,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from dataset.core.addresses import parse_host_port

MAX_SUPERSAMPLE = 4
"""Most colour rays per pixel side of the embedded renderer."""
MAX_UNREAL_WIDTH = 8192
"""Widest equirect of the unreal renderer, whatever ``limits`` say: its cube faces (width / 4, at most 2048 px)
bound the UnrealCV replies the client accepts (``ue_plugin.protocol.MAX_PAYLOAD``)."""


class StrictModel(BaseModel):
    """A spec section: unknown keys are errors, values are frozen, numbers are finite (``.inf`` and ``.nan``
    would turn into ``null`` in the JSON the workers are given, and they would fail to start)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SpecKeyError(ValueError):
    """A model validator's problem with one key of its section: ``parse_spec`` names that key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class EmbeddedRendererSpec(StrictModel):
    """The embedded CPU renderer (ray casting on this machine's cores)."""

    kind: Literal["embedded"] = "embedded"
    """``embedded``."""
    supersample: int = Field(1, ge=1, le=MAX_SUPERSAMPLE)
    """Colour rays per pixel side."""
    shadows: bool = False
    """Sun shadows (unbaked scenes)."""


class UnrealRendererSpec(StrictModel):
    """Unreal Engine through UnrealCV: running servers (attach mode) or packaged games started here (launch mode)."""

    kind: Literal["unreal"]
    """``unreal``."""
    endpoints: list[str] = []
    """``host:port`` of running UnrealCV servers (attach mode): one worker per endpoint."""
    binary: str | None = None
    """Packaged game executable to launch (launch mode), with ``map``."""
    map: str | None = None
    """Map the launched games open (launch mode)."""
    instances_per_gpu: int = Field(1, ge=1, le=64)
    """Game instances per GPU of the cluster (launch mode); each is owned by one worker."""
    instances: int | None = Field(None, ge=1, le=10_000)
    """Total instances instead (launch mode; for clusters without GPUs, or to use fewer)."""
    startup_timeout_s: float = Field(300.0, gt=0, le=86_400)
    """How long a launched game may take until UnrealCV answers (at most a day)."""
    resources: dict[str, Annotated[float, Field(ge=0, le=1_000_000)]] = {}
    """Ray custom resources each render worker needs, e.g. ``{ue_slot: 1}`` with nodes started as
    ``ray start --resources='{"ue_slot": 4}'`` to place 4 game instances per node."""
    timeout_s: float = Field(30.0, gt=0, le=3600)
    """Seconds an UnrealCV request may take before the instance counts as hung (at most an hour)."""

    @model_validator(mode="after")
    def _endpoints(self) -> UnrealRendererSpec:
        launch = self.binary is not None or self.map is not None
        if not self.endpoints and not (self.binary and self.map):
            raise ValueError("the unreal renderer needs endpoints: [\"host:port\", ...] of running UnrealCV servers "
                             "(attach mode) or binary: PATH and map: NAME (launch mode)")
        if self.endpoints and launch:
            raise ValueError("give endpoints (attach mode) or binary + map (launch mode), not both")
        for e in self.endpoints:
            parse_host_port(e, "endpoint")
        return self


def _renderer_kind(value) -> str | None:
    """The renderer section's ``kind`` (``embedded`` when the section leaves it out)."""
    return value.get("kind", "embedded") if isinstance(value, dict) else getattr(value, "kind", None)


RendererSpec = Annotated[
    Annotated[EmbeddedRendererSpec, Tag("embedded")] | Annotated[UnrealRendererSpec, Tag("unreal")],
    Discriminator(_renderer_kind),
]
"""Which renderer draws the clips: one model per ``kind``."""

RENDERER_KINDS = ("embedded", "unreal")


class OutputSpec(StrictModel):
    """How clips are stored."""

    shard_size_mb: float = Field(256.0, gt=0, le=16_384)
    """Shards are cut once they reach this size (a worker holds its open shard in memory)."""
    rows_per_group: int = Field(4, ge=1, le=1024)
    """Parquet row group size in clips (rows hold video: keep groups small)."""
    video_crf: int = Field(18, ge=0, le=51)
    """H.264 constant rate factor: 18 is visually lossless-ish (~39 dB); 12 for higher fidelity."""
    video_preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"] = "veryfast"
    """x264 speed/size preset."""


class SamplingSpec(StrictModel):
    """Camera trajectories (see ``sampling``)."""

    step: float = Field(0.1, gt=0, le=10)
    """Metres walked per frame."""
    eye_height: float = Field(1.6, gt=0, le=100)
    """Camera height above the floor, metres."""
    heading: Literal["travel", "fixed", "look_around"] = "travel"
    """Heading policy."""
    camera_radius: float = Field(0.3, gt=0, le=10)
    """Distance kept from walls and drops, metres."""
    regions: Literal["ground", "all"] = "ground"
    """Walkable regions that get paths: ground-connected only (no roofs, wall tops, ledges), or all."""

    @model_serializer(mode="wrap")
    def _omit_default_regions(self, handler: SerializerFunctionWrapHandler) -> dict:
        """``regions`` is left out while it is the default, so the config hash (clip ids) of existing jobs stays."""
        data = handler(self)
        if self.regions == "ground":
            data.pop("regions", None)
        return data


class AnnotationSpec(StrictModel):
    """Thresholds of the model-free quality filters (``annotation.filters``); a clip failing any is rejected."""

    near_limit_m: float = Field(0.25, ge=0, le=1000)
    """Hits nearer than this count as void (metres)."""
    max_void_fraction: float = Field(0.6, ge=0, le=1)
    """Largest mean fraction of void pixels: no hit below the horizon, or nearer than near_limit (open sky is not
    void)."""
    min_mean_depth: float = Field(0.5, ge=0, le=10_000)
    """Smallest mean hit depth (metres): lower means the camera hugs the geometry."""
    min_detail: float = Field(20.0, ge=0, le=1_000_000)
    """Smallest Laplacian variance of the perspective crops: lower is blurred or flat."""
    max_dark_fraction: float = Field(0.5, ge=0, le=1)
    """Largest fraction of pixels with luma below 16."""
    max_saturated_fraction: float = Field(0.3, ge=0, le=1)
    """Largest fraction of pixels with luma above 250."""
    min_path_length_m: float = Field(0.3, ge=0, le=10_000)
    """A clip must travel this far (metres) or turn ``min_rotation_deg``."""
    min_rotation_deg: float = Field(20.0, ge=0, le=3600)
    """A clip must turn this much (degrees) or travel ``min_path_length_m``."""
    min_flow_px: float = Field(0.2, ge=0, le=256)
    """Smallest mean optical flow between frames (pixels of a 256-px-wide panorama)."""


class LimitsSpec(StrictModel):
    """Maximums of a build's size, checked on load so that a typo fails at once rather than hours later or
    with an out-of-memory error on every clip; raise them where a machine has the memory and time. They
    change no produced data, so ``JobSpec.config_hash`` leaves them out."""

    max_width: int = Field(8192, ge=2, le=65_536)
    """Widest ``resolution`` (height is half): an 8192 x 4096 float64 image plane is 0.25 GiB."""
    max_frames_per_clip: int = Field(2000, ge=2, le=1_000_000)
    """Most ``frames_per_clip``: a worker holds a clip's depth in memory (2 bytes a pixel per frame)."""
    max_trajectories_per_scene: int = Field(10_000, ge=1, le=10_000_000)
    """Most ``trajectories_per_scene``: the driver plans and tracks every clip."""


class JobSpec(StrictModel):
    """A dataset build: which scenes, how many clips, how they are rendered and stored."""

    scenes: list[str] = Field(min_length=1)
    """Scene strings, as on every CLI."""
    trajectories_per_scene: int = Field(4, ge=1)
    """Clips per scene (at most ``limits.max_trajectories_per_scene``)."""
    frames_per_clip: int = Field(49, ge=2)
    """Frames per clip (at most ``limits.max_frames_per_clip``)."""
    fps: float = Field(12.0, gt=0, le=1000)
    """Frame rate of the clips."""
    resolution: tuple[int, int] = (960, 480)
    """Equirect width and height (width = 2 x height, width at most ``limits.max_width``)."""
    renderer: RendererSpec = EmbeddedRendererSpec()
    """Which renderer draws the clips and its options."""
    output: OutputSpec = OutputSpec()
    """Shard size, row groups and video quality."""
    sampling: SamplingSpec = SamplingSpec()
    """Trajectory sampling options."""
    annotation: AnnotationSpec = AnnotationSpec()
    """Inline quality scores' thresholds."""
    seed: int = Field(0, ge=0, lt=2**63)
    """Seed of every random choice (trajectories); ids depend on it. Below 2**63: stored as int64."""
    max_attempts: int = Field(2, ge=1, le=100)
    """Tries per clip before it is recorded in failures.parquet."""
    limits: LimitsSpec = LimitsSpec()
    """Maximums of the job size (raise them for a machine that has the memory); not part of ``config_hash``."""

    @field_validator("resolution")
    @classmethod
    def _equirect(cls, v: tuple[int, int]) -> tuple[int, int]:
        w, h = v
        if w <= 0 or h <= 0 or w != 2 * h or w % 2 or h % 2:
            raise ValueError(f"must be [width, height] with width = 2 x height, both even (e.g. [960, 480]), got {v}")
        return v

    @model_validator(mode="after")
    def _unique_scenes(self) -> JobSpec:
        dup = {s for s in self.scenes if self.scenes.count(s) > 1}
        if dup:
            raise SpecKeyError("scenes", f"listed twice: {sorted(dup)}")
        return self

    @model_validator(mode="after")
    def _within_limits(self) -> JobSpec:
        for key, what, value, limit, need in (
                ("resolution", "width ", self.resolution[0], "max_width", "the memory"),
                ("frames_per_clip", "", self.frames_per_clip, "max_frames_per_clip", "the memory"),
                ("trajectories_per_scene", "", self.trajectories_per_scene, "max_trajectories_per_scene",
                 "the time and disk")):
            most = getattr(self.limits, limit)
            if value > most:
                raise SpecKeyError(key, f"{what}{value} is above the maximum {most}; raise limits.{limit} if this "
                                        f"machine has {need}")
        if self.renderer.kind == "unreal" and self.resolution[0] > MAX_UNREAL_WIDTH:
            raise SpecKeyError("resolution", f"width {self.resolution[0]} is above {MAX_UNREAL_WIDTH}, the widest the "
                                             f"unreal renderer makes (its cube faces are width / 4, at most "
                                             f"{MAX_UNREAL_WIDTH // 4} px)")
        return self

    def config_hash(self) -> str:
        """Hash of everything that changes the produced data.

        The renderer section is hashed in the layout of the single renderer model of version 0.1 (every
        kind's options, the other kind's at their defaults), so existing datasets keep their clip ids. The
        ``limits`` section changes no data and is left out."""
        data = self.model_dump(mode="json", exclude={"limits"})
        data["renderer"] = {**_renderer_option_defaults(), **data["renderer"]}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _renderer_option_defaults() -> dict:
    """Every renderer kind's options at their defaults (``kind`` aside)."""
    return {name: f.get_default(call_default_factory=True) for model in (EmbeddedRendererSpec, UnrealRendererSpec)
            for name, f in model.model_fields.items() if name != "kind"}


class CaptionerSpec(StrictModel):
    """The captioning and scoring model (VideoLLaMA3 through ``transformers``)."""

    model: str
    """Local folder or hub id of a VideoLLaMA3 checkpoint."""
    allow_download: bool = False
    """Fetch a hub id that is not in the local cache (off: nothing is downloaded unless asked)."""
    device: str = "auto"
    """``auto`` (CUDA when present), ``cuda``, ``cuda:N`` or ``cpu``."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights dtype: ``auto`` is bfloat16 on GPU, float32 on CPU."""
    view: Literal["panorama", "crops"] = "panorama"
    """What the model sees: the equirect frames, or 4 horizontal perspective crops tiled 2 x 2."""
    num_frames: int = Field(8, ge=1)
    """Frames sampled evenly from each clip."""
    frame_size: int = Field(448, ge=28)
    """Longest side of the frames given to the model, pixels."""
    batch_size: int = Field(4, ge=1)
    """Clips per generate call."""
    max_new_tokens: int = Field(160, ge=8)
    """Answer length limit."""
    max_attempts: int = Field(2, ge=1)
    """Generations per clip before a malformed answer is recorded as such."""
    timeout_s: float = Field(120.0, gt=0, le=86_400)
    """Seconds of generation and parsing per clip and attempt (at most a day); a batch over its share is stopped
    and its clips rejected."""
    min_vlm_detail: float = Field(2.0, ge=0, le=5)
    """Clips the model rates below this for detail quality (1-5) are rejected."""
    min_vlm_semantic: float = Field(2.0, ge=0, le=5)
    """Clips the model rates below this for semantic information (1-5) are rejected."""
    min_vlm_motion: float = Field(1.0, ge=0, le=5)
    """Clips the model rates below this for motion richness (1-5) are rejected."""


class AnnotateSpec(StrictModel):
    """What ``annotate`` does; every key is optional."""

    annotation: AnnotationSpec | None = None
    """Filter thresholds (``annotation.filters``); default: the input dataset's own (from its manifest)."""
    rescore: bool = True
    """Recompute the model-free scores from the stored frames (off: keep the build's scores)."""
    captioner: CaptionerSpec | None = None
    """Caption and rate clips with a model (``--model`` sets ``captioner.model``)."""


class JobError(RuntimeError):
    """A job (build, annotate, export) cannot start or continue; the message is one line saying what to do."""


class JobSpecError(ValueError):
    """The job spec file is missing, not YAML, or invalid; the message is one line naming the key."""


def load_yaml_spec(path: str | Path, model: type[BaseModel], what: str = "job spec"):
    """Read and validate a YAML spec file into ``model``; problems become a one-line JobSpecError."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise JobSpecError(f"{what} {path} does not exist") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        context = f" ({exc.context})" if exc.context else ""
        raise JobSpecError(f"{what} {where}: not valid YAML: {exc.problem}{context}") from None
    except (OSError, yaml.YAMLError) as exc:
        raise JobSpecError(f"{what} {path} is not readable YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise JobSpecError(f"{what} {path} must be a mapping of keys")
    return parse_spec(model, data, f"{what} {path}")


def load_job_spec(path: str | Path) -> JobSpec:
    """Read and validate a job spec YAML file."""
    return load_yaml_spec(path, JobSpec)


def parse_spec(model: type[BaseModel], data: dict, where: str):
    """Validate a mapping into ``model``; the problems become one line naming each bad key."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"] if p not in RENDERER_KINDS]  # tags: no keys
            msg = err["msg"]
            keyed = err.get("ctx", {}).get("error")
            if isinstance(keyed, SpecKeyError):
                loc, msg = [*loc, keyed.key], str(keyed)
            key = ".".join(loc) or "(top level)"
            if err["type"] == "extra_forbidden":
                parent = _model_at(model, err["loc"][:-1])
                msg = f"unknown key; allowed keys: {', '.join(parent.model_fields)}" if parent else "unknown key"
            elif err["type"] == "union_tag_invalid":
                key += ".kind"
                msg = f"must be one of {', '.join(repr(k) for k in RENDERER_KINDS)}, got {err['ctx']['tag']!r}"
            problems.append(f"{key}: {msg}")
        raise JobSpecError(f"{where}: " + "; ".join(problems)) from None


def parse_job_spec(data: dict, where: str = "job spec") -> JobSpec:
    """Validate a job spec mapping."""
    return parse_spec(JobSpec, data, where)


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The model class at a key path (for listing allowed keys); a tag in the path picks a union's member."""
    found = [model]
    for part in loc:
        tagged = [m for m in found if part in typing.get_args(getattr(m.model_fields.get("kind"), "annotation", None))]
        if tagged:
            found = tagged
            continue
        field = found[0].model_fields.get(str(part))
        found = _models_in(field.annotation) if field is not None else []
        if not found:
            return None
    return found[0]


def _models_in(annotation) -> list[type[BaseModel]]:
    """The spec models an annotation holds: X, Optional[X], or the members of a tagged union of models."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
