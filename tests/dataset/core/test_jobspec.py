"""Job-spec validation: finite and bounded numbers, the ``limits`` section, the hash it leaves alone, and
the key reference in docs/jobspec.md."""

from __future__ import annotations

import math
import types
import typing
from pathlib import Path

import pytest
from build_helpers import SMALL_BUILD

from dataset.core import jobspec
from dataset.core.jobspec import (
    AnnotateSpec,
    AnnotationSpec,
    CaptionerSpec,
    EmbeddedRendererSpec,
    JobSpec,
    JobSpecError,
    LimitsSpec,
    OutputSpec,
    SamplingSpec,
    UnrealRendererSpec,
    parse_job_spec,
    parse_spec,
)

MINIMAL = {JobSpec: {"scenes": ["procedural:indoor:0"]}, UnrealRendererSpec: {"kind": "unreal",
                                                                              "endpoints": ["localhost:9000"]},
           CaptionerSpec: {"model": "some/checkpoint"}}
"""The required keys of the spec models that have any."""

MODELS = [m for m in vars(jobspec).values() if isinstance(m, type) and issubclass(m, jobspec.StrictModel)
          and m is not jobspec.StrictModel]

LIMITED = {"trajectories_per_scene": "max_trajectories_per_scene", "frames_per_clip": "max_frames_per_clip"}
"""JobSpec keys whose maximum is in the ``limits`` section (checked by the model validator)."""

DOC_SECTIONS = {JobSpec: "", LimitsSpec: "limits.", EmbeddedRendererSpec: "renderer.",
                UnrealRendererSpec: "renderer.", OutputSpec: "output.", SamplingSpec: "sampling.",
                AnnotationSpec: "annotation."}
"""The models docs/jobspec.md documents, with the key prefix of their section."""


def _numeric(annotation) -> type | None:
    """``int`` or ``float`` for a number field (also Optional), else None."""
    if annotation in (int, float):
        return annotation
    members = [a for a in typing.get_args(annotation) if a is not type(None)]
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(members) == 1
    return members[0] if optional and members[0] in (int, float) else None


def _bounds(field) -> dict:
    return {k: getattr(m, k) for m in field.metadata for k in ("ge", "gt", "le", "lt")
            if getattr(m, k, None) is not None}


def test_every_spec_model_is_checked():
    assert set(MODELS) == {JobSpec, LimitsSpec, EmbeddedRendererSpec, UnrealRendererSpec, OutputSpec, SamplingSpec,
                           AnnotationSpec, CaptionerSpec, AnnotateSpec}


@pytest.mark.parametrize("model, name", [(m, n) for m in MODELS for n, f in m.model_fields.items()
                                         if _numeric(f.annotation) or n == "resources"],
                         ids=lambda v: v if isinstance(v, str) else v.__name__)
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
def test_every_number_key_refuses_inf_and_nan(model, name, value):
    key, bad = (f"{name}.ue_slot", {"ue_slot": value}) if name == "resources" else (name, value)
    with pytest.raises(JobSpecError, match=rf"^spec: {key}: Input should be a finite number$"):
        parse_spec(model, {**MINIMAL.get(model, {}), name: bad}, "spec")


def test_what_the_workers_are_given_reads_back_the_same():
    spec = parse_job_spec({**SMALL_BUILD, "fps": 23.976, "sampling": {"step": 0.05},
                           "limits": {"max_width": 16384}, "resolution": [10000, 5000]})
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec


@pytest.mark.parametrize("model", [m for m in MODELS if m is not CaptionerSpec], ids=lambda m: m.__name__)
def test_every_number_key_has_an_upper_bound(model):
    # CaptionerSpec is left out here: its owner bounds its fields (num_frames, frame_size, batch_size, ...).
    unbounded = [n for n, f in model.model_fields.items() if _numeric(f.annotation)
                 and not {"le", "lt"} & _bounds(f).keys() and not (model is JobSpec and n in LIMITED)]
    assert unbounded == []


@pytest.mark.parametrize("keys, message", [
    ({"resolution": [100000, 50000]},
     "resolution: width 100000 is above the maximum 8192; raise limits.max_width if this machine has the memory"),
    ({"frames_per_clip": 2001}, "frames_per_clip: 2001 is above the maximum 2000; raise limits.max_frames_per_clip "
                                "if this machine has the memory"),
    ({"trajectories_per_scene": 10**8}, "trajectories_per_scene: 100000000 is above the maximum 10000; raise "
                                        "limits.max_trajectories_per_scene if this machine has the time and disk"),
    ({"resolution": [1024, 512], "limits": {"max_width": 512}},
     "resolution: width 1024 is above the maximum 512; raise limits.max_width"),
])
def test_job_size_above_a_limit_names_the_key_the_maximum_and_the_way_out(keys, message):
    with pytest.raises(JobSpecError, match=r"^job spec: " + message.replace("(", r"\(")):
        parse_job_spec({"scenes": ["procedural:indoor:0"], **keys})


def test_limits_can_be_raised_and_are_bounded_too():
    spec = parse_job_spec({"scenes": ["a"], "resolution": [16384, 8192], "frames_per_clip": 3000,
                           "trajectories_per_scene": 20000, "limits": {"max_width": 16384, "max_frames_per_clip": 3000,
                                                                       "max_trajectories_per_scene": 20000}})
    assert spec.resolution == (16384, 8192) and spec.limits.max_width == 16384
    assert LimitsSpec() == LimitsSpec(max_width=8192, max_frames_per_clip=2000, max_trajectories_per_scene=10000)
    with pytest.raises(JobSpecError, match=r"limits.max_width: Input should be less than or equal to 65536"):
        parse_job_spec({"scenes": ["a"], "limits": {"max_width": 10**6}})
    with pytest.raises(JobSpecError, match=r"limits.max_widht: unknown key; allowed keys: max_width, "):
        parse_job_spec({"scenes": ["a"], "limits": {"max_widht": 1}})


@pytest.mark.parametrize("spec, pinned", [
    ({"scenes": ["procedural:indoor:0"]}, "a67289ab9bbd3074"),
    ({"scenes": ["a"], "renderer": {"kind": "unreal", "endpoints": ["h:1"], "timeout_s": 5}, "seed": 7},
     "562b3262bebecfa0"),
    ({"scenes": ["a"], "sampling": {"step": 0.2}, "fps": 24, "resolution": [2048, 1024]}, "06f5a8dcf595c9f3"),
])
def test_limits_leave_the_config_hash_alone(spec, pinned):
    # Pinned: the hashes these specs had before the limits section existed, so existing datasets keep their ids.
    assert parse_job_spec(spec).config_hash() == pinned
    raised = {"max_width": 16384, "max_frames_per_clip": 5000, "max_trajectories_per_scene": 50000}
    assert parse_job_spec({**spec, "limits": raised}).config_hash() == pinned


def test_scene_listed_twice_names_the_key():
    with pytest.raises(JobSpecError, match=r"^job spec: scenes: listed twice: \['a'\]$"):
        parse_job_spec({"scenes": ["a", "b", "a"]})


def _allowed(model, name: str, field) -> str:
    """The 'allowed' cell docs/jobspec.md gives a number key."""
    b = _bounds(field)
    low = f"{b['ge']} ≤" if "ge" in b else f"{b['gt']} <"
    high = f"≤ `limits.{LIMITED[name]}`" if model is JobSpec and name in LIMITED else (
        f"≤ {b['le']}" if "le" in b else f"< {b['lt']}")
    return f"{low} x {high}"


def _shown(default) -> str:
    if default is None:
        return "none"
    return str(int(default)) if isinstance(default, float) and default.is_integer() else str(default)


def test_docs_list_every_key_with_its_default_and_range():
    text = (Path(__file__).parents[3] / "docs" / "jobspec.md").read_text()
    rows = {cells[0].strip("`"): cells[1:3] for line in text.splitlines() if line.startswith("| `")
            for cells in [[c.strip() for c in line.strip("|").split("|")]]}
    for model, prefix in DOC_SECTIONS.items():
        for name, field in model.model_fields.items():
            key = prefix + name
            assert f"`{key}`" in text, f"docs/jobspec.md does not document {key}"
            if _numeric(field.annotation):
                default = field.get_default(call_default_factory=True)
                assert rows[key] == [_shown(default), _allowed(model, name, field)], key
