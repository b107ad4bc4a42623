"""Several processes (DDP under torchrun) and the random state a run resumes with.

A run's batch is the global batch: every process builds it and trains on its share of the rows
(`shard_loss` keeps the loss the single-process mean); only rank 0 writes. The random state
(dropout's generator) is saved per process, so a resumed run draws what the killed one would have.
"""

from __future__ import annotations

import torch

from shared.constants import IGNORE_INDEX
from torch_impl.losses import shift_for_next_token


def distributed():
    """(rank, world_size): (0, 1) unless `torch.distributed` was initialised (under torchrun)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def barrier():
    import torch.distributed as dist

    if distributed()[1] > 1:
        dist.barrier()


def label_count(labels: torch.Tensor, causal: bool) -> int:
    """Number of labelled positions the loss averages over (causal: labels shift by one)."""
    labels = shift_for_next_token(labels, labels)[1] if causal else labels
    return int((labels != IGNORE_INDEX).sum())


def shard_loss(nll_sum, global_count: int) -> torch.Tensor:
    """This process's summed token NLL / the whole batch's token count.

    Summed over processes it is the single-process mean loss, and DDP averages gradients
    over processes, so each process backpropagates world_size times this value. A shard with
    no labelled token gives 0 (its sum is 0), not 0/0."""
    return nll_sum / max(global_count, 1)


def rng_tensors(device) -> dict[str, torch.Tensor]:
    """The random state dropout draws from: the CPU generator, and the CUDA one on a GPU."""
    state = {"torch_cpu": torch.get_rng_state()}
    if torch.device(device).type == "cuda":
        state["torch_cuda"] = torch.cuda.get_rng_state(torch.device(device))
    return state


def set_rng_tensors(state, device) -> None:
    torch.set_rng_state(state["torch_cpu"])
    if "torch_cuda" in state and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(state["torch_cuda"], torch.device(device))


def gathered_rng_tensors(device) -> dict[str, torch.Tensor]:
    """Every process's random state, keyed `torch_cpu` (rank 0) and `torch_cpu.rank1`, ..."""
    import torch.distributed as dist

    world = distributed()[1]
    mine = rng_tensors(device)
    if world == 1:
        return mine
    out = {}
    for key, tensor in mine.items():
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather_object(parts, tensor.cpu())
        for r, part in enumerate(parts):
            out[key if r == 0 else f"{key}.rank{r}"] = part
    return out


def my_rng_tensors(saved: dict, rank: int) -> dict[str, torch.Tensor]:
    suffix = "" if rank == 0 else f".rank{rank}"
    return {key: saved[key + suffix] for key in ("torch_cpu", "torch_cuda") if key + suffix in saved}
