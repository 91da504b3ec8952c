"""The actor pool: a worker class whose constructor keeps failing stops the pool with the cause, instead of
being replaced forever (a bad spec once crash-looped every build worker with no error)."""

from __future__ import annotations

import pytest

from dataset.runtime.pool import MAX_START_FAILURES, READY, ActorPool, WorkerStartError


class _Broken:
    def __init__(self, reason: str) -> None:
        raise ValueError(reason)

    def ready(self) -> bool:
        return True


class _Fine:
    def __init__(self, reason: str) -> None:
        self.reason = reason

    def ready(self) -> bool:
        return True

    def echo(self) -> str:
        return self.reason


def test_workers_failing_as_they_start_stop_the_pool_with_the_cause(local_ray):
    pool = ActorPool(local_ray, _Broken, {"num_cpus": 0, "max_restarts": 0}, ("step must be finite",))
    pool.add()
    deaths = 0
    with pytest.raises(WorkerStartError, match="3 workers failed as they started: ValueError: step must be finite"):
        while True:
            f = pool.wait(timeout=60)
            assert f is not None and f.died is not None and f.task == READY
            deaths += 1
            pool.replace(f.actor)
    assert deaths == MAX_START_FAILURES - 1
    pool.kill_all()


def test_healthy_workers_are_ready_and_answer(local_ray):
    pool = ActorPool(local_ray, _Fine, {"num_cpus": 0, "max_restarts": 0}, ("hello",))
    actor = pool.add()
    f = pool.wait(timeout=60)
    assert f.task == READY and f.died is None and pool.idle() == [actor]
    pool.submit(actor, "echo", task="echo")
    assert pool.wait(timeout=60).value == "hello" and pool.start_failures == 0
    pool.kill_all()
