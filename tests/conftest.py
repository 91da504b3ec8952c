"""Shared test fixtures."""

from __future__ import annotations

import atexit
import faulthandler
import sys

import pytest
from build_helpers import SMALL_BUILD
from scene_helpers import make_scene

from dataset.core.scene import Scene


@pytest.fixture
def box_room() -> Scene:
    """A closed 4 x 6 x 3 m room (x in [-2, 2], y in [-3, 3], z in [0, 3]) with a small box prop."""
    return make_scene([((-2, -3, 0), (2, 3, 3), True, (0.8, 0.8, 0.8), "room"),
                       ((1.0, 2.0, 0.0), (1.5, 2.5, 0.5), False, (0.8, 0.2, 0.2), "crate")])



@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory):
    """A dataset folder built once per session from SMALL_BUILD (Ray started and stopped around it)."""
    ray = pytest.importorskip("ray")
    from dataset.core.jobspec import parse_job_spec
    from dataset.jobs.build import run_build

    out = tmp_path_factory.mktemp("small_dataset")
    started = not ray.is_initialized()
    try:
        run_build(parse_job_spec(SMALL_BUILD), out, workers=2, progress=False)
    finally:
        if started:
            ray.shutdown()
    return out


@pytest.fixture
def no_ray(monkeypatch):
    """Starting Ray is a test failure: the problem must be found before (a build refuses bad input at once)."""
    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr("dataset.jobs.build.init_ray", refuse)


@pytest.fixture(scope="module")
def local_ray():
    """A local 2-CPU Ray for the tests of one module (an already running one is used as is)."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    if started:
        ray.shutdown()


def pytest_sessionfinish(session, exitstatus) -> None:
    """Stop a Ray that a test started through the CLI (``init_ray`` leaves it running) while the interpreter is
    whole, and keep crash tracebacks on past pytest's own faulthandler: a rare crash while the interpreter
    shuts down (seen twice, after every test had passed) then names its threads."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    atexit.register(faulthandler.enable, sys.__stderr__, all_threads=True)


@pytest.fixture(scope="session")
def s3_bucket():
    """``s3://BUCKET`` on a real S3-protocol server on 127.0.0.1 (moto's, one per session; see s3_server)."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto")
    from s3_server import s3_server

    with s3_server() as url:
        yield url
