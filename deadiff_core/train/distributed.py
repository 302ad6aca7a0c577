"""torch.distributed for the trainer: one process per GPU (or CPU worker), started by torchrun,
on one machine or many. NCCL on GPUs, gloo on CPUs; DDP by default, FSDP as an option."""
import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Processes:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self):
        return self.rank == 0


def start_processes(backend=""):
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT);
    a plain `python -m` run is a group of one and starts none."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)  # before ComfyUI asks for "the" device
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if device.type == "cuda" else "gloo"),
                                timeout=datetime.timedelta(minutes=30), device_id=device if device.type == "cuda" else None)
    return Processes(rank, world_size, local_rank, device)


def stop_processes():
    if dist.is_initialized():
        dist.destroy_process_group()


def parallelise(module, processes, strategy):
    """The module the optimizer steps through: DDP (replicated, gradients averaged) or FSDP
    (parameters, gradients and optimizer state sharded across processes)."""
    if processes.world_size == 1:
        return module
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        # each branch gathers its weights when it runs; the i_to_k/v are read inside the UNet's
        # forward (never through a forward of their own), so they stay in the root's group,
        # gathered for the whole objective forward
        for branch in module.encoder.branches.values():
            fully_shard(branch)
        return fully_shard(module)
    from torch.nn.parallel import DistributedDataParallel

    # gradients live in the all-reduce buckets themselves: no second copy of 426 M gradients
    return DistributedDataParallel(module, device_ids=[processes.device.index] if processes.device.type == "cuda" else None,
                                   gradient_as_bucket_view=True)


@contextlib.contextmanager
def gradient_sync(model, enabled):
    """Skip the gradient all-reduce on accumulation micro-batches before the last."""
    from torch.nn.parallel import DistributedDataParallel

    if enabled:
        yield
    elif isinstance(model, DistributedDataParallel):
        with model.no_sync():
            yield
    elif hasattr(model, "set_requires_gradient_sync"):  # FSDP
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


def mean_over_processes(value, processes):
    """The mean of a float over all processes (for logging)."""
    if processes.world_size == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=processes.device)
    dist.all_reduce(tensor)
    return tensor.item() / processes.world_size


def barrier(processes):
    if processes.world_size > 1:
        dist.barrier()
