"""The averaged defender: the mean of the defender's weights at the end of each of its stages.

GPO's convergence result, like fictitious play's, is about the players' *averaged* strategies; the
last iterate of alternating best responses can cycle around the equilibrium. A mixture of policies
cannot be served as one model, so we average weights (Polyak averaging), the usual proxy.

With LoRA (W = W0 + s * B @ A) the mean of n stage ends is exactly another LoRA, of rank n * r:

    mean_i(s * B_i @ A_i) = s * [B_1 ... B_n] / n  @  [A_1; ...; A_n]

so the averaged defender is a plain PEFT adapter (alpha scaled so that s stays the same), applied
and saved like any other. Without LoRA it is the running mean of the trained weights.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from sparring import sharding

AVERAGED = "averaged"  # the PEFT adapter name of the averaged weights
FILE = "average.safetensors"  # inside a checkpoint's defender folder; the count is in its game.json


def _like(value: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``value`` laid out as ``p``: a full tensor (read from a checkpoint) split into ``p``'s shards."""
    if sharding.is_dtensor(p) and not sharding.is_dtensor(value):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(value.to(p.device, p.dtype if p.is_floating_point() else value.dtype), p.device_mesh,
                                 p.placements)  # fmt: skip
    return value


def is_lora(model: torch.nn.Module) -> bool:
    return hasattr(model, "peft_config")


class StageAverage:
    """The defender's stage ends so far: LoRA snapshots (exact average by concatenation) or a running mean."""

    def __init__(self) -> None:
        self.snapshots: list[dict[str, torch.Tensor]] = []  # LoRA: each stage end's adapter weights
        self.mean: dict[str, torch.Tensor] = {}  # full fine-tuning: running mean of the trained weights
        self.count = 0

    def add(self, model: torch.nn.Module, adapter: str = "default") -> None:
        """Record the model (its LoRA ``adapter``) as it is now (call at the end of each defender stage)."""
        if is_lora(model):
            from peft import get_peft_model_state_dict

            state = get_peft_model_state_dict(model, adapter_name=adapter)
            self.snapshots.append({k: v.detach().to("cpu", copy=True) for k, v in state.items()})
        else:
            n = self.count + 1
            for name, p in model.named_parameters():
                if p.requires_grad:  # a sharded (FSDP) parameter keeps its mean as a shard beside it
                    now = p.detach().float() if sharding.is_dtensor(p) else p.detach().to("cpu", torch.float32)
                    old = None if name not in self.mean else _like(self.mean[name], now)
                    # mean_n = mean_{n-1} + (x_n - mean_{n-1}) / n
                    self.mean[name] = now.clone() if old is None else old + (now - old) / n
        self.count += 1

    # ---------------------------------------------------------------------------- persistence

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat tensors for safetensors: ``snapshot.I.KEY`` (LoRA) or ``mean.KEY`` (full; a sharded mean is
        gathered, a collective every rank must join)."""
        state = {f"snapshot.{i}.{k}": v.contiguous() for i, snap in enumerate(self.snapshots) for k, v in snap.items()}
        state.update({f"mean.{k}": sharding.full(v).cpu().contiguous() for k, v in self.mean.items()})
        return state

    @classmethod
    def load(cls, folder: Path, count: int) -> StageAverage:
        """The average a checkpoint's defender folder holds (``count`` stage ends, from its game.json)."""
        from safetensors.torch import load_file

        average = cls()
        average.load_state_dict(load_file(str(folder / FILE)), count)
        return average

    def load_state_dict(self, state: dict[str, torch.Tensor], count: int) -> None:
        self.snapshots = [{} for _ in range(count)] if any(k.startswith("snapshot.") for k in state) else []
        self.mean = {}
        for key, value in state.items():
            kind, _, rest = key.partition(".")
            if kind == "snapshot":
                index, _, name = rest.partition(".")
                self.snapshots[int(index)][name] = value
            else:
                self.mean[rest] = value
        self.count = count

    # ---------------------------------------------------------------------------- the average

    def adapter(self, config) -> tuple[object, dict[str, torch.Tensor]]:
        """The averaged LoRA: (LoraConfig of rank n * r, its weights in PEFT's state-dict naming)."""
        n = len(self.snapshots)
        if n == 0:
            raise ValueError("no stage end recorded yet")
        if config.rank_pattern or config.alpha_pattern:
            raise ValueError("averaging LoRA adapters with per-module rank or alpha patterns is not supported")
        averaged = copy.deepcopy(config)
        averaged.r = n * config.r
        # PEFT scales B @ A by alpha / r (alpha / sqrt(r) with rsLoRA); keep that scale at rank n * r
        averaged.lora_alpha = config.lora_alpha * (math.sqrt(n) if config.use_rslora else n)
        weights: dict[str, torch.Tensor] = {}
        for key in self.snapshots[0]:
            parts = [snap[key] for snap in self.snapshots]
            if "lora_A" in key or "lora_embedding_A" in key:
                weights[key] = torch.cat(parts, dim=0)  # (r, in) x n -> (n r, in)
            elif "lora_B" in key or "lora_embedding_B" in key:
                weights[key] = torch.cat(parts, dim=1) / n  # (out, r) x n -> (out, n r), each 1/n
            else:  # anything else an adapter trains (biases, modules_to_save): its plain mean
                weights[key] = torch.stack([p.float() for p in parts]).mean(0).to(parts[0].dtype)
        return averaged, weights

    def apply(
        self, model: torch.nn.Module, adapter: str = "default", under: tuple[str, ...] = (),
        frozen: Iterable[torch.Tensor] = (),
    ) -> None:  # fmt: skip
        """Make ``model`` the averaged defender for good (loading a run's averaged player): the average of
        ``adapter``'s stage ends, over the frozen adapters ``under`` where it has them (a shared base)."""
        if is_lora(model):
            from peft import set_peft_model_state_dict

            from sparring.models import activate_adapters

            config, weights = self.adapter(model.peft_config[adapter])
            model.add_adapter(AVERAGED, config)
            set_peft_model_state_dict(model, weights, adapter_name=AVERAGED)
            activate_adapters(model, (*under, AVERAGED), frozen)
        else:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name in self.mean:
                        p.copy_(_like(self.mean[name], p).to(p.dtype))

    @contextlib.contextmanager
    def applied(
        self, model: torch.nn.Module, adapter: str = "default", under: tuple[str, ...] = (),
        frozen: Iterable[torch.Tensor] = (),
    ) -> Iterator[None]:  # fmt: skip
        """The averaged weights for the duration of the block (an evaluation), then the last iterate again."""
        if is_lora(model):
            from sparring.models import activate_adapters

            active = tuple(model.base_model.active_adapters)
            self.apply(model, adapter, under, frozen)
            try:
                yield
            finally:
                activate_adapters(model, active, frozen)
                model.delete_adapter(AVERAGED)
        else:
            saved = {n: p.detach().clone() for n, p in model.named_parameters() if n in self.mean}
            self.apply(model)
            try:
                yield
            finally:
                with torch.no_grad():
                    for name, p in model.named_parameters():
                        if name in saved:
                            p.copy_(saved[name])
