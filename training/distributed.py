"""What every training loop shares about how it runs: the process group (alone, under ``torchrun``, or as a Ray
Train worker), the run folder's rerun rule and metrics log, and starting a loop on a Ray cluster.

A loop calls ``init_distributed`` first; with ``WORLD_SIZE`` > 1 in the environment (``torchrun``, Ray Train's
``TorchTrainer``) it joins the process group (nccl on GPUs, gloo on CPUs), otherwise it runs alone. Rank 0 writes
the run folder; ``barrier`` keeps the others from reading it early.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from dataset.core.jobspec import JobError


@dataclass
class Dist:
    """This process's place in the process group."""

    rank: int
    world: int
    device: torch.device
    created: bool
    """Whether ``init_distributed`` created the group (and so should destroy it)."""


def init_distributed(device: str | None) -> Dist:
    """Join the process group that torchrun or Ray Train describes (WORLD_SIZE > 1), or run alone; ``device``
    None picks this process's GPU (``LOCAL_RANK``) when there is one."""
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", 0))
    if device is not None:
        dev = torch.device(device)
    else:
        dev = torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    created = False
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        created = True
    if dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), dev, created)
    return Dist(0, 1, dev, created)


def close_distributed(d: Dist) -> None:
    """Leave the process group if ``init_distributed`` created it."""
    if d.created:
        torch.distributed.destroy_process_group()


def barrier(d: Dist) -> None:
    """Wait for every process (nothing to wait for alone)."""
    if d.world > 1:
        torch.distributed.barrier()


def global_mean(value: torch.Tensor, d: Dist) -> float:
    """The mean of a scalar over the processes."""
    if d.world > 1:
        value = value.detach().clone()
        torch.distributed.all_reduce(value)
        value /= d.world
    return float(value)


def check_rerun(path: Path, spec: dict, free: Iterable[str], error: type[JobError] = JobError) -> None:
    """A rerun into a run folder whose spec is at ``path`` must train the same thing: only the ``free`` fields may
    differ from the recorded spec (``error`` naming the first one that does otherwise)."""
    if not path.is_file():
        return
    old, free = json.loads(path.read_text()), set(free)
    for key in sorted(set(old) | set(spec)):
        if key not in free and old.get(key) != spec.get(key):
            raise error(f"{path.parent} holds a run with a different {key} ({old.get(key)!r}, now "
                        f"{spec.get(key)!r}): use a new --out, or the same settings to resume it")


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metrics lines after ``step`` (logged by a run that stopped before its next checkpoint)."""
    if not path.is_file():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
    path.write_text("".join(ln + "\n" for ln in lines))


def run_ray_train(worker: Callable[[dict], None], config: dict, address: str | None, workers: int, out: Path,
                  name: str, error: type[JobError] = JobError) -> None:
    """Run ``worker(config)`` on ``workers`` Ray Train workers (one GPU each when the cluster has that many) of the
    cluster at ``address`` (None: a local one), each in the process group Ray Train sets up; Ray's own run state
    goes to ``out/ray``."""
    try:
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
    except ImportError:
        raise error("--ray-address needs Ray Train: pip install 'ray[train]' (or use torchrun)") from None
    from dataset.runtime.ray import init_ray

    init_ray(address, None)
    import ray

    use_gpu = ray.cluster_resources().get("GPU", 0) >= workers
    trainer = TorchTrainer(worker, train_loop_config=config,
                           scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
                           run_config=RunConfig(name=name, storage_path=str(out / "ray")))
    trainer.fit()


__all__ = ["Dist", "barrier", "check_rerun", "close_distributed", "global_mean", "init_distributed", "run_ray_train",
           "truncate_metrics"]
