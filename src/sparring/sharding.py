"""Sharded full fine-tuning with PyTorch's FSDP2 (``fully_shard``), for players too large for one device.

Each process keeps 1/N of a player's parameters, gradients and AdamW state. A sharded player's
parameters are fp32 -- they are the master weights -- and each decoder layer is gathered in the
model's own dtype (bf16 for the paper's 7B) for its forward and backward, with gradients
reduce-scattered in fp32 (the release's DeepSpeed bf16 ZeRO-2 keeps the same numbers). The frozen
reference stays in the model's dtype and is sharded too. Every process must take part in every
forward pass, so a sharded run generates and evaluates on all ranks and only rank 0 writes.
Checkpoints hold full (gathered) tensors in safetensors, so eval, export and report read a sharded
run's checkpoints like any other.
"""

from __future__ import annotations

import torch
from torch import nn

from sparring.models import base_model


def layer_classes(model: nn.Module) -> set[str]:
    """The decoder-layer classes to shard one by one: transformers names them in ``_no_split_modules``."""
    return set(getattr(base_model(model), "_no_split_modules", None) or [])


def shard(model: nn.Module, as_masters: bool) -> None:
    """Shard ``model`` over the process group, layer by layer and then the rest. With ``as_masters`` the
    parameters become fp32 and compute runs in their old dtype; a frozen module keeps its dtype."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    dtype = next(model.parameters()).dtype
    policy = MixedPrecisionPolicy()
    if as_masters and dtype != torch.float32:
        model.float()
        policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    names = layer_classes(model)
    for module in model.modules():
        if type(module).__name__ in names:
            fully_shard(module, mp_policy=policy)
    # The root too reshards after every forward (FSDP2 keeps it gathered by default): a no-grad forward
    # (generation) would otherwise leave it gathered without autograd, and the next training forward's
    # embeddings, final norm and head would get no gradient (measured: they did not move in the warm-up).
    fully_shard(model, mp_policy=policy, reshard_after_forward=True)


def is_dtensor(t: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def is_sharded(module: nn.Module) -> bool:
    return any(is_dtensor(p) for p in module.parameters())


def full(value):
    """A gathered plain tensor from a DTensor (a collective: every rank must call it); others pass through."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value


def gather_model(module: nn.Module) -> dict[str, torch.Tensor]:
    """The full state dict on rank 0's CPU (empty on the others). A collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def gather_optimizer(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict | None:
    """The optimizer's full state, keyed by parameter name, on rank 0's CPU (a collective); None before
    its first step. (torch fills an empty state by stepping it with zero gradients, which counts a step:
    Adam's bias correction then shrank the first real update by a quarter, measured.)"""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    if not optimizer.state:
        return None
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(module, optimizer, options=options)


def load_model(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Every rank passes the same full state dict; each keeps its own shard."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True, strict=False))


def load_optimizer(module: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(module, optimizer, state, options=StateDictOptions(full_state_dict=True))
