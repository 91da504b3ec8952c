"""A pool of Ray actors of one class: calls in flight, readiness, and replacement of dead actors.

An actor is only given work once it has answered ``ready()``: one the cluster has no room for stays
pending and is simply not used. ``wait`` hands back one finished call at a time, with its outcome
classified, so a job's driver decides what a dead actor or a failed task means for its work. Actors
that keep failing in their constructor (a bad spec, a missing dependency) stop the pool with
``WorkerStartError`` naming the cause, instead of being replaced forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dataset.core.jobspec import JobError

READY = "ready"
"""The task of the readiness probe every new actor is sent."""

MAX_START_FAILURES = 3
"""Constructor failures in a row (no actor became ready in between) after which the pool gives up."""


class WorkerStartError(JobError):
    """Workers keep failing as they start; the message carries the cause."""


@dataclass
class Finished:
    """One finished call: the actor, the task it was given, and its value or why it has none."""

    actor: Any
    task: Any
    value: Any = None
    died: BaseException | None = None
    """The actor died (process crash, node lost): ``replace`` or ``remove`` it."""
    error: BaseException | None = None
    """The call raised: the original exception (the actor lives on)."""


class ActorPool:
    """Actors made from ``cls`` with Ray ``options``; each gets ``args``, plus its own ``key`` when it has one."""

    def __init__(self, ray, cls: type, options: dict, args: tuple) -> None:
        self.ray = ray
        self.cls = ray.remote(cls).options(**options)
        self.args = args
        self.actors: list = []
        self.key: dict = {}
        """actor -> its key (e.g. the UnrealCV endpoint it drives)."""
        self.ready: set = set()
        self.busy: dict = {}
        """object ref -> (actor, task)."""
        self.start_failures = 0
        """Actors that died in their constructor since one last became ready."""

    def add(self, key: Any = None):
        """Start one actor (with ``key`` as its last argument) and probe it for readiness."""
        actor = self.cls.remote(*self.args, *(() if key is None else (key,)))
        self.actors.append(actor)
        self.key[actor] = key
        self.busy[actor.ready.remote()] = (actor, READY)
        return actor

    def submit(self, actor, method: str, *args, task: Any) -> None:
        """Call ``actor.method(*args)``; ``task`` comes back with its result."""
        self.busy[getattr(actor, method).remote(*args)] = (actor, task)

    def working(self) -> set:
        """Actors with a call in flight."""
        return {a for a, _ in self.busy.values()}

    def idle(self) -> list:
        """Ready actors with nothing in flight, in the order they were started."""
        working = self.working()
        return [a for a in self.actors if a in self.ready and a not in working]

    def tasks(self) -> list:
        """The tasks in flight (readiness probes included)."""
        return [t for _, t in self.busy.values()]

    def wait(self, timeout: float | None = None) -> Finished | None:
        """The next finished call (None after ``timeout`` seconds without one)."""
        done, _ = self.ray.wait(list(self.busy), num_returns=1, timeout=timeout)
        if not done:
            return None
        actor, task = self.busy.pop(done[0])
        exceptions = self.ray.exceptions
        try:
            value = self.ray.get(done[0])
        except (exceptions.RayActorError, exceptions.WorkerCrashedError) as exc:
            self.ready.discard(actor)
            message = str(exc)
            if "creation task" in message:  # its constructor raised: the same would happen to a replacement
                self.start_failures += 1
                if self.start_failures >= MAX_START_FAILURES:
                    cause = message.strip().splitlines()[-1]
                    raise WorkerStartError(f"{self.start_failures} workers failed as they started: {cause}") from None
            return Finished(actor, task, died=exc)
        except exceptions.RayTaskError as exc:
            return Finished(actor, task, error=exc.cause if exc.cause is not None else exc)
        if task == READY:
            self.ready.add(actor)
            self.start_failures = 0
        return Finished(actor, task, value)

    def remove(self, actor) -> Any:
        """Forget an actor and its calls in flight; returns its key."""
        if actor in self.actors:
            self.actors.remove(actor)
        self.ready.discard(actor)
        for ref in [r for r, (a, _) in self.busy.items() if a is actor]:
            del self.busy[ref]
        return self.key.pop(actor, None)

    def replace(self, actor):
        """Remove a (dead) actor and start a new one with the same key."""
        return self.add(self.remove(actor))

    def kill_all(self) -> None:
        """End every actor."""
        for actor in self.actors:
            self.ray.kill(actor)
