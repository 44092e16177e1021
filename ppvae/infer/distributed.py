"""Data-parallel training of one run across processes with ``torch.distributed`` (started by
``torchrun``, or ``ppvae run CONFIG --nproc N``, which starts it).

Every rank holds the whole pair and the whole data set, and draws the same global batches (the
shuffle generator is seeded alike); each takes its slice of every batch, and the gradients of
``sum over the slice / global batch size`` are summed across ranks before the optimizer step, so
the step is that of the full batch. The data plate is the slice, so per-example terms keep scale 1
and a Bayesian decoder's weight sites, at scale slice / N on each rank, add up to batch / N.

Each rank's noise is drawn from its own seed for each step (``step_seed``): a run continues the
same way from a checkpoint on any number of ranks, and a test can compute the same step in one
process. Rank 0 alone writes the run folder; a stop request on any rank (Ctrl-C, SIGTERM) is
summed with the gradients, so every rank stops after the same step.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class Group:
    """This process's place among the ranks of one data-parallel run."""

    rank: int
    world: int
    local_rank: int

    def slice(self, x: torch.Tensor | None) -> torch.Tensor | None:
        """This rank's contiguous share of a global batch (the first ranks take one row more)."""
        return None if x is None else torch.tensor_split(x, self.world)[self.rank]

    def sum_(self, flat: torch.Tensor) -> None:
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)

    def broadcast_(self, tensors: list[torch.Tensor]) -> None:
        """Rank 0's values of ``tensors`` on every rank (parameters after set-up; batch-norm statistics)."""
        if tensors:
            flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors])
            dist.broadcast(flat, 0)
            with torch.no_grad():
                for t, part in zip(tensors, torch.split(flat, [t.numel() for t in tensors])):
                    t.copy_(part.view_as(t))

    def broadcast_text(self, text: str | None) -> str:
        box = [text]
        dist.broadcast_object_list(box, 0)
        return box[0]


def from_environment(device: torch.device) -> Group | None:
    """The group torchrun set up for this process (``WORLD_SIZE`` > 1), joined with NCCL on GPUs and
    gloo on CPU; None for one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Group(dist.get_rank(), dist.get_world_size(), local_rank)


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


SHARED = 2**31  # the stream every rank draws alike (a closed-form update after the step, on the global batch)


def step_seed(seed: int, step: int, stream: int) -> int:
    """The torch seed of one step's draws on one stream: a rank's own (its rank), or ``SHARED``."""
    return int(np.random.SeedSequence([seed, step, stream]).generate_state(1, dtype=np.uint64)[0] % 2**63)


__all__ = ["Group", "from_environment", "leave", "step_seed", "SHARED"]
