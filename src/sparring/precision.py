"""fp32 master weights for players trained in bf16 or fp16.

A bf16 weight of size 0.02 has a spacing of about 1.2e-4, so an AdamW step at the paper's learning rate
(5e-7 for the 7B defender) is rounded away: the release trained with DeepSpeed, which keeps fp32 masters.
Here the optimiser steps fp32 copies of the low-precision trainable parameters and the model gets each
updated master rounded back, so small steps accumulate instead of vanishing. fp32 parameters are their
own masters and cost nothing.
"""

from __future__ import annotations

import torch

LOW_PRECISION = (torch.bfloat16, torch.float16)


class MasterWeights:
    """fp32 copies of ``params`` (the policy's trainable ones; a bf16 critic keeps its own precision);
    ``params_for_optimizer`` are what the optimiser steps."""

    def __init__(self, params: list[torch.nn.Parameter]) -> None:
        self.params = params
        self.masters = [
            p.detach().float().clone().requires_grad_(True) if p.dtype in LOW_PRECISION else p for p in params
        ]

    @staticmethod
    def needed(params: list[torch.nn.Parameter]) -> bool:
        return any(p.dtype in LOW_PRECISION for p in params)

    @property
    def params_for_optimizer(self) -> list[torch.Tensor]:
        return self.masters

    def take_grads(self) -> None:
        """Move each low-precision gradient onto its master, in fp32 (before clipping and the step)."""
        for p, m in zip(self.params, self.masters, strict=True):
            if m is not p:
                m.grad = None if p.grad is None else p.grad.float()
                p.grad = None

    @torch.no_grad()
    def write_back(self) -> None:
        """After the optimiser step: each model parameter becomes its master, rounded to its dtype."""
        for p, m in zip(self.params, self.masters, strict=True):
            if m is not p:
                p.copy_(m)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The fp32 masters (a checkpoint needs them: the rounded model weights lose what a resume must keep)."""
        pairs = enumerate(zip(self.params, self.masters, strict=True))
        return {str(i): m.detach() for i, (p, m) in pairs if m is not p}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for i, (p, m) in enumerate(zip(self.params, self.masters, strict=True)):
            if m is not p:
                m.copy_(state[str(i)] if str(i) in state else p.float())
