"""Data parallelism across processes, as the game needs it: rank, world size and four collectives.

Launched with ``torchrun --nproc_per_node N -m sparring.cli train ...`` (CPU, gloo) or
``accelerate launch --multi_gpu --num_processes N -m sparring.cli train ...`` (GPUs, NCCL), every
process holds both players. Each plays its own shard of the step's seeds, gradients are averaged
before every optimiser step (so weights stay identical on all ranks), every rank adds every rank's
attacks to its diversity history, and rank 0 alone writes logs, evaluations and checkpoints.
Accelerate's ``PartialState`` sets up the process group; a single process needs none of this.
"""

from __future__ import annotations

import os
from typing import NoReturn

import torch

from sparring.errors import SparringError


def all_ranks_true(flag: bool) -> bool:
    """True only if ``flag`` holds on every rank of the initialised process group (a collective)."""
    device = "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"  # gloo reduces CPU tensors
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MIN)
    return bool(value.item() == 1.0)


def shut_down() -> None:
    """Destroy the process group, if one was set up, before the interpreter exits: gloo's worker threads
    outliving it abort the process ("terminate called without an active exception", SIGABRT) at random."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def leave(code: int = 0) -> NoReturn:
    """End a launched process without interpreter finalization. Destroying the group is not always enough:
    gloo work objects still held by the backend's threads free tensors during finalization, when the GIL can
    no longer be taken, and a rank that had finished its game aborted (SIGABRT) one CI run in many, which
    made torchrun kill the others. Exit handlers run first, while the interpreter is whole."""
    import atexit
    import sys

    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class Distributed:
    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = 0
        if self.world > 1:
            from accelerate import PartialState

            state = PartialState(cpu=not torch.cuda.is_available())
            self.rank, self.world = state.process_index, state.num_processes

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard(self, items: list) -> list:
        """This rank's share of a list drawn identically on every rank."""
        if len(items) % self.world:
            raise SparringError(
                f"{len(items)} items per step cannot be split evenly over {self.world} processes",
                hint="make data.seeds_per_step, data.attacker_seeds_per_step and data.benign_per_step multiples "
                "of the number of processes",
            )
        return items[self.rank :: self.world] if self.active else items

    def gather(self, items: list) -> list[list]:
        """Every rank's list, in rank order, on every rank."""
        if not self.active:
            return [items]
        from accelerate.utils import gather_object

        return gather_object([items])

    def average_gradients(self, params: list[torch.Tensor]) -> None:
        """All-reduce the gradients into their mean, in one flat buffer (what DDP does, minus the overlap)."""
        if not self.active:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p, g in zip(params, grads, strict=True):
            p.grad = flat[offset : offset + g.numel()].view_as(g).clone()
            offset += g.numel()

    def all_true(self, flag: bool) -> bool:
        """True only if ``flag`` holds on every rank (so all ranks skip an update together)."""
        return all_ranks_true(flag) if self.active else flag

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def check_in_sync(self, tensors: dict[str, torch.Tensor]) -> None:
        """Data parallelism's invariant: every rank holds the same weights. Checked at each checkpoint."""
        if not self.active:
            return
        checksum = sum(float(t.double().sum()) + float(t.double().abs().sum()) for t in tensors.values())
        sums = self.gather([checksum])
        if len({s[0] for s in sums}) != 1:
            raise SparringError(f"the processes' weights have drifted apart (checksums {[s[0] for s in sums]})")
