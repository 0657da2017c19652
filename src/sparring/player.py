"""A trainable player: policy (+ LoRA), value head, frozen reference, and its RL update.

Read top to bottom: ``make_batch`` turns a generation and its scores into a ``RolloutBatch``
(reference log-probs, values); ``update`` runs PPO or the critic-free estimator on it. With LoRA
the reference policy is the same weights with the adapter switched off, so it costs no memory; on a
base shared with the other player (shared_base.py) it is the player's frozen warm-up adapter alone.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sparring import rl, sharding
from sparring.averaging import AVERAGED, StageAverage
from sparring.distributed import Distributed
from sparring.errors import SparringError
from sparring.generation import Generation, cache_kwarg, prefill, prompt_groups
from sparring.models import activate_adapters, restore_weights
from sparring.precision import MasterWeights
from sparring.refusal_bias import opening_ids, opening_logprob, unpadded
from sparring.runlog import (
    optimizer_from_files,
    optimizer_state_from_files,
    optimizer_state_to_files,
    optimizer_to_files,
)
from sparring.sampling import token_logprob
from sparring.sft import sft_loss


class RLConfig(BaseModel):
    """How a player learns. Defaults follow the paper's release where they transfer to small LoRA models.

    The game's players do not use these defaults as they stand: ``config.PlayerRLConfig`` (the defender)
    and ``config.AttackerRLConfig`` (the attacker) override some for the 135M CPU game and say why.
    ``sparring config --show`` prints the values a run actually gets."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    algo: Literal["ppo", "rloo", "grpo"] = Field("ppo", description="ppo (the paper's), rloo or grpo (critic-free).")
    lr: float = Field(1e-4, gt=0, description="Policy learning rate (LoRA-sized; the release used 5e-7 for 7B full).")
    value_lr: float = Field(3e-4, gt=0, description="Value-head learning rate (PPO).")
    kl_coef: float = Field(0.01, ge=0, description="beta: KL penalty to the frozen reference.")
    kl_mode: Literal["reward", "loss"] = Field("reward", description="KL as per-token reward (paper) or k3 loss term.")
    kl_target: float | None = Field(None, gt=0, description="Adaptive KL controller target; None keeps beta fixed.")
    gamma: float = Field(1.0, ge=0, le=1, description="PPO: GAE discount (1: the reward comes once, at the end).")
    lam: float = Field(0.95, ge=0, le=1, description="PPO: GAE lambda.")
    clip: float = Field(0.2, gt=0, description="Ratio clip epsilon.")
    value_clip: float = Field(0.2, gt=0, description="PPO: clip range of the value update.")
    critic_model: str | None = Field(
        None,
        description="PPO: spec of a separate critic model (trained fully); None puts the value head on the policy.",
    )
    value_coef: float = Field(1.0, ge=0, description="PPO: weight of the value loss.")
    whiten_advantages: bool = Field(True, description="Normalise advantages to zero mean, unit variance per batch.")
    loss_aggregation: Literal["token", "sequence"] = Field(
        "token",
        description="How the minibatch loss averages: token = every response token alike (long answers weigh more "
        "than short refusals), sequence = every response alike (its tokens share its weight; GRPO's original).",
    )
    epochs: int = Field(1, ge=1, description="Passes over each rollout batch.")
    minibatch_size: int = Field(16, ge=1, description="Sequences per optimiser step.")
    micro_batch_size: int = Field(8, ge=1, description="Sequences per forward/backward (gradient accumulation).")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient-norm clip per optimiser step.")
    warmup_steps: int = Field(0, ge=0, description="Optimiser steps of linear warm-up.")
    schedule: Literal["constant", "inverse_sqrt"] = Field("constant", description="Learning-rate schedule.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward (less memory).")
    autocast_bf16: bool = Field(False, description="bf16 autocast for forward passes where the device supports it.")
    master_weights: Literal["fp32", "none"] = Field(
        "fp32",
        description="Optimiser state and weights in fp32 for a player loaded in bf16/fp16 (precision.py): without "
        "them a bf16 step at lr 5e-7 is rounded away for most weights. fp32 players are unaffected; none = off.",
    )
    anchor_coef: float = Field(
        0.0,
        ge=0,
        description="gamma: weight of the supervised anchor (InstructGPT's PPO-ptx term), the mean -log p of the "
        "player's anchor answers (the defender's: its warm-up answers to benign requests) added to every optimiser "
        "step, so RL does not unlearn answering harmless requests; 0 = off.",
    )
    anchor_batch_size: int = Field(8, ge=1, description="Anchor (prompt, answer) pairs per optimiser step.")
    anchor_rows: Literal["answers", "warmup", "attacks"] = Field(
        "answers",
        description="The defender's anchor: answers = its warm-up answers to benign requests (a pull toward "
        "answering alone); warmup = those and the warm-up's refusal rows, the whole supervised objective, so RL "
        "moves off the warm-up's refuse/answer line only where its rewards say so; attacks = the warm-up's "
        "answers and a project refusal of each of this step's attacks that seeks harm (the warm-up continued on "
        "the attacker's prompts, as MART fine-tunes its target on safe answers to the red team's prompts).",
    )
    refusal_hold_coef: float = Field(
        0.0,
        ge=0,
        description="lambda: weight of the refusal hold (refusal_bias.py), lambda * (mean_x P(answer opens as a "
        "refusal | x) - the reference's mean)^2 over each minibatch's prompts, added to every optimiser step: RL "
        "may move refusals between prompts (sharpen the harmful/harmless line) but not shift them all toward "
        "answering, the slide a defender stage showed; 0 = off.",
    )
    refusal_hold_space: Literal["probability", "log"] = Field(
        "probability",
        description="What the refusal hold averages: probability = P(refusal opening), which weighs the prompts "
        "near a greedy decision and lets a few sure refusals carry the mean; log = log P(refusal opening), every "
        "prompt's log-odds alike (the geometric mean).",
    )
    refusal_hold_rows: Literal["all", "benign"] = Field(
        "all",
        description="Which prompts the refusal hold averages: all = every prompt of the minibatch, so a refusal "
        "gained on an attack must be paid for by one lost on a benign request (a zero-sum hold); benign = only "
        "the benign requests the game marks (``Player.hold_groups``), so the over-refusal side stays at the "
        "reference's while refusals of attacks move with their rewards.",
    )
    shard: Literal["none", "fsdp"] = Field(
        "none",
        description="fsdp: split the player's parameters, gradients and optimiser state over the launched processes "
        "(FSDP2, sharding.py), for full fine-tuning that does not fit one device; the sharded fp32 parameters are the "
        "master weights. none: every process holds the whole player (data parallelism).",
    )


@dataclass
class RolloutBatch:
    """Everything one update needs, produced once per step and never recomputed."""

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    old_logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    scores: torch.Tensor  # (B,) scalar reward per sequence
    values: torch.Tensor | None = None  # (B, T) PPO only
    group_size: int = 1  # k samples per prompt, consecutive rows

    def select(self, idx: torch.Tensor | slice) -> RolloutBatch:
        parts = {f.name: getattr(self, f.name) for f in fields(self)}
        return RolloutBatch(**{k: (v[idx] if isinstance(v, torch.Tensor) else v) for k, v in parts.items()})

    def __len__(self) -> int:
        return self.response_ids.shape[0]


@dataclass
class UpdateStats:
    policy_loss: float = 0.0
    value_loss: float = 0.0
    clip_frac: float = 0.0
    value_clip_frac: float = 0.0
    approx_kl: float = 0.0
    ref_kl: float = 0.0
    entropy: float = 0.0
    explained_variance: float = float("nan")
    grad_norm: float = 0.0
    kl_coef: float = 0.0
    lr: float = 0.0
    mean_score: float = 0.0
    tokens_per_s: float = 0.0
    skipped: bool = False
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out.update(self.extra)
        return out


class ValueHead(nn.Module):
    """Scalar value per position from the policy's last hidden state."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.to(self.linear.weight.dtype)).squeeze(-1)


def is_peft(model: nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


class Player:
    """One side of the game: a policy that can generate, score its own tokens and learn."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: RLConfig,
        temperature: float = 1.0,
        critic: PreTrainedModel | None = None,
        dist: Distributed | None = None,
        adapter: str | None = None,
        under: tuple[str, ...] = (),
    ) -> None:
        # On a base shared with the other player (shared_base.py) this player is its adapter ``adapter`` over
        # the frozen adapters ``under`` (its warm-up), which are also its reference; None: the model is its own.
        self._model = model
        self.adapter = adapter
        self.under = under
        self._policy_adapters = (*under, adapter) if adapter is not None else ()
        self._frozen = [p for n, p in model.named_parameters() if any(f".{a}." in n for a in under)]
        self.dist = dist or Distributed()  # data parallelism: gradients averaged over processes
        # PPO's values come from a head on the policy's last hidden state, or on a separate critic model's.
        self.critic = critic if config.algo == "ppo" else None
        self.tokenizer = tokenizer
        self.config = config
        self.temperature = temperature if temperature > 0 else 1.0
        self.device = next(model.parameters()).device
        # Full fine-tuning needs a frozen copy; LoRA reuses the base weights with the adapter off.
        self.reference = None if is_peft(model) else copy.deepcopy(model).eval().requires_grad_(False)
        hidden = (self.critic or model).config.get_text_config().hidden_size
        self.value_head = ValueHead(hidden).to(self.device) if config.algo == "ppo" else None
        self.sharded = config.shard == "fsdp"
        if self.sharded:
            self._shard()
        self.kl_controller = (
            rl.AdaptiveKLController(config.kl_coef, config.kl_target) if config.kl_target is not None else None
        )
        self.kl_coef = config.kl_coef
        self.anchor: list[tuple[str, str]] = []  # (chat-formatted prompt, answer) pairs for config.anchor_coef
        self.step_anchor: list[tuple[str, str]] = []  # rows for this update alone, in every minibatch's anchor
        self.hold_groups: list[bool] | None = None  # refusal_hold_rows=benign: which groups of the next update it holds
        self.openings = opening_ids(tokenizer) if config.refusal_hold_coef > 0 else []  # the refusal hold's
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if hasattr(model, "enable_input_require_grads"):
                model.enable_input_require_grads()
        trainable = [p for _, p in self._policy_named_params()]
        masters = config.master_weights == "fp32" and MasterWeights.needed(trainable) and not self.sharded
        self.masters = MasterWeights(trainable) if masters else None  # sharded parameters are fp32 masters already
        groups = [{"params": self.masters.params_for_optimizer if self.masters else trainable, "lr": config.lr}]
        if self.value_head is not None:
            critic_params = list(self.critic.parameters()) if self.critic is not None else []
            groups.append({"params": [*critic_params, *self.value_head.parameters()], "lr": config.value_lr})
        self.optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.95), eps=1e-6, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, rl.lr_lambda(config.schedule, config.warmup_steps)
        )

    @property
    def model(self) -> PreTrainedModel:
        """The policy. On a shared base, reading it puts this player's adapters in charge of the model."""
        if self.adapter is not None:
            activate_adapters(self._model, self._policy_adapters, self._frozen)
        return self._model

    @property
    def adapter_name(self) -> str:
        """The name of the adapter this player trains (PEFT's 'default' on a model of its own)."""
        return self.adapter or "default"

    def _policy_named_params(self) -> list[tuple[str, nn.Parameter]]:
        """The policy's trained parameters by name: its adapter's on a shared base, else every one that needs a
        gradient."""
        if self.adapter is not None:
            return [(n, p) for n, p in self._model.named_parameters() if f".{self.adapter}." in n]
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    @contextlib.contextmanager
    def averaged(self, average: StageAverage):
        """The averaged weights in charge for the block (an evaluation), then the last iterate again."""
        with average.applied(self.model, self.adapter_name, self.under, self._frozen):
            policy = self._policy_adapters
            if self.adapter is not None:
                self._policy_adapters = (*self.under, AVERAGED)
            try:
                yield
            finally:
                self._policy_adapters = policy

    def _shard(self) -> None:
        """FSDP2 over the launched processes: policy, critic and value head with fp32 masters, the frozen
        reference in its own dtype. Needs a full fine-tune (a LoRA player is small; data parallelism fits)."""
        if is_peft(self.model):
            raise SparringError(
                "rl.shard=fsdp shards full fine-tuning; this player is a LoRA adapter",
                hint="set the player's model.lora=null, or rl.shard=none (a LoRA player fits one device)",
            )
        if not self.dist.active:
            raise SparringError(
                "rl.shard=fsdp splits a player over several processes, and this run has one",
                hint="launch with torchrun --nproc_per_node N -m sparring.cli train ... (or accelerate launch), "
                "or set rl.shard=none",
            )
        sharding.shard(self.model, as_masters=True)
        if self.reference is not None:
            sharding.shard(self.reference, as_masters=False)
        if self.critic is not None:
            sharding.shard(self.critic, as_masters=True)
        if self.value_head is not None:
            sharding.shard(self.value_head, as_masters=True)

    def _modules(self) -> nn.ModuleDict:
        """Everything the optimiser trains, under one name each (the names a sharded checkpoint keys by)."""
        parts = {"policy": self.model, "value_head": self.value_head, "critic": self.critic}
        return nn.ModuleDict({k: v for k, v in parts.items() if v is not None})

    # ---------------------------------------------------------------------------------- forward

    def _autocast(self):
        if self.config.autocast_bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def forward(
        self, model: nn.Module, batch: RolloutBatch | Generation, with_values: bool = False, with_entropy: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Log-probs of the response tokens (at the sampling temperature), values and entropy.

        When several samples share a prompt, the prompt runs once and its key/value cache is copied
        to each sample (gradients flow back through the copies), so only responses run per sample.
        Gradient checkpointing cannot keep a cache, so with it every sequence runs whole.
        """
        ids = torch.cat([batch.prompt_ids, batch.response_ids], dim=1)
        mask = torch.cat([batch.prompt_mask, batch.response_mask], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        n = batch.response_ids.shape[1]
        hidden_states = with_values and self.critic is None
        groups = self._prompt_groups(model, batch)
        with self._autocast():
            if groups is None:
                out = model(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=positions,
                    output_hidden_states=hidden_states,
                    logits_to_keep=n + 1,
                    use_cache=False,
                )
                logits, last_hidden = out.logits[:, :-1].float(), out.hidden_states[-1] if hidden_states else None
            else:
                logits, last_hidden = self._shared_prefix_pass(model, batch, mask, positions, groups, hidden_states)
        if self.temperature != 1.0:
            logits = logits / self.temperature
        log_partition = torch.logsumexp(logits, dim=-1)  # (B, T), reused by the entropy below
        logprobs = token_logprob(logits, batch.response_ids, log_partition)  # (B, T)
        values = None
        if with_values:
            assert self.value_head is not None
            if self.critic is None:
                hidden = last_hidden
            else:
                with self._autocast():
                    hidden = self.critic(
                        input_ids=ids,
                        attention_mask=mask,
                        position_ids=positions,
                        output_hidden_states=True,
                        use_cache=False,
                    ).hidden_states[-1]
            values = self.value_head(hidden[:, -n - 1 : -1])  # the shared pass returns only the last n + 1
        entropy = None
        if with_entropy:  # a statistic only: no graph, so its vocabulary-sized temporaries are freed at once
            with torch.no_grad():
                z = log_partition.detach()
                entropy = z - (torch.exp(logits - z.unsqueeze(-1)) * logits).sum(-1)
        return logprobs, values, entropy

    def _prompt_groups(self, model: nn.Module, batch: RolloutBatch | Generation) -> tuple | None:
        """``prompt_groups`` of the batch, or None where this pass cannot keep a cache: gradient
        checkpointing (which this player turned on for its policy) while training."""
        return prompt_groups(batch.prompt_ids, batch.prompt_mask) if self._keeps_cache(model) else None

    def _keeps_cache(self, model: nn.Module) -> bool:
        """Whether a pass of ``model`` can keep a key/value cache: not under the gradient checkpointing this
        player turned on for its policy, while training."""
        return not (self.config.gradient_checkpointing and model.training and torch.is_grad_enabled())

    def _shared_prefix_pass(
        self, model: nn.Module, batch, mask: torch.Tensor, positions: torch.Tensor, groups: tuple, hidden_states: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Each distinct prompt once, its cache copied per sample, then the responses: the logits
        (and last hidden states) at the n + 1 positions that predict/score the n response tokens."""
        width = batch.prompt_ids.shape[1]
        head, cache = prefill(model, batch.prompt_ids, batch.prompt_mask, groups, output_hidden_states=hidden_states)
        tail = model(
            input_ids=batch.response_ids,
            attention_mask=mask,
            position_ids=positions[:, width:],
            output_hidden_states=hidden_states,
            use_cache=True,
            **{cache_kwarg(model): cache},
        )
        inverse = groups[1]
        logits = torch.cat([head.logits[inverse], tail.logits[:, :-1]], dim=1).float()
        hidden = None
        if hidden_states:
            hidden = torch.cat([head.hidden_states[-1][inverse, -1:], tail.hidden_states[-1]], dim=1)
        return logits, hidden

    @contextlib.contextmanager
    def reference_model(self):
        """The frozen initial policy: the frozen copy (full fine-tuning), the warm-up adapters alone (a shared
        base after a warm-up), or the adapter disabled (LoRA)."""
        if self.reference is not None:
            yield self.reference
        elif self.under:
            activate_adapters(self._model, self.under, self._frozen)
            try:
                yield self._model
            finally:
                activate_adapters(self._model, self._policy_adapters, self._frozen)
        else:
            with self.model.disable_adapter():
                yield self._model

    @torch.no_grad()
    def make_batch(self, generation: Generation, scores: torch.Tensor, group_size: int = 1) -> RolloutBatch:
        """Add reference log-probs (and values, for PPO) to a generation; one pass each, in micro-batches."""
        self.model.eval()
        if self.critic is not None:
            self.critic.eval()
        step = self.config.micro_batch_size
        refs, olds, values = [], [], []
        for start in range(0, len(generation.texts), step):
            part = _slice_generation(generation, slice(start, start + step))
            with self.reference_model() as ref:
                refs.append(self.forward(ref, part)[0])
            if self.value_head is not None:
                logprobs, v, _ = self.forward(self.model, part, with_values=True)
                olds.append(logprobs)
                values.append(v)
        mask = generation.response_mask.float()
        return RolloutBatch(
            prompt_ids=generation.prompt_ids,
            prompt_mask=generation.prompt_mask,
            response_ids=generation.response_ids,
            response_mask=generation.response_mask,
            # PPO needs values from a pass anyway, so it takes old log-probs from the same pass;
            # the critic-free path reuses the sampling log-probs and saves that pass.
            old_logprobs=(torch.cat(olds) if olds else generation.logprobs) * mask,
            ref_logprobs=torch.cat(refs) * mask,
            scores=scores.to(self.device, torch.float32),
            values=torch.cat(values) * mask if values else None,
            group_size=group_size,
        )

    # ---------------------------------------------------------------------------------- update

    def advantages(self, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Advantages (B, T), returns (PPO) and the per-token rewards actually used."""
        cfg, mask = self.config, batch.response_mask.float()
        kl_in_reward = self.kl_coef if cfg.kl_mode == "reward" else 0.0
        if cfg.algo == "ppo":
            rewards = rl.kl_penalised_rewards(batch.scores, batch.old_logprobs, batch.ref_logprobs, mask, kl_in_reward)
            advantages, returns = rl.gae(rewards, batch.values, mask, cfg.gamma, cfg.lam)
            if cfg.whiten_advantages:
                advantages = rl.masked_whiten(advantages, mask)
            return advantages, returns, rewards
        # Critic-free: the sequence reward includes the summed KL penalty, then a group baseline.
        kl = ((batch.old_logprobs - batch.ref_logprobs) * mask).sum(1)
        sequence_rewards = batch.scores - kl_in_reward * kl
        grouped = sequence_rewards.view(-1, batch.group_size)
        estimator = rl.rloo_advantages if cfg.algo == "rloo" else rl.group_normalised_advantages
        adv = estimator(grouped)
        advantages = adv.reshape(-1, 1) * mask
        if cfg.whiten_advantages and cfg.algo == "rloo":
            advantages = rl.masked_whiten(advantages, mask, shift_mean=False)
        return advantages, None, sequence_rewards

    def update(self, batch: RolloutBatch, generator: torch.Generator | None = None) -> UpdateStats:
        """Epochs over shuffled minibatches; micro-batches accumulate gradients per minibatch."""
        cfg = self.config
        start = time.perf_counter()
        advantages, returns, _ = self.advantages(batch)
        finite = bool(torch.isfinite(advantages).all() and torch.isfinite(batch.old_logprobs).all())
        if not self.dist.all_true(finite):
            return UpdateStats(skipped=True, extra={"skip_reason": "non-finite rewards or log-probs"})
        if cfg.algo != "ppo" and len(batch) % batch.group_size:
            raise ValueError("critic-free batches must hold whole groups")
        # Shuffle whole groups, so the samples of one prompt land in one micro-batch and share its pass.
        group = batch.group_size if len(batch) % batch.group_size == 0 else 1
        held = None
        if cfg.refusal_hold_coef > 0:
            held = self._reference_refusals(batch, group, self._held_groups(batch, group))
        self.model.train()
        if self.value_head is not None:
            self.value_head.train()
        if self.critic is not None:
            self.critic.train()
        totals: dict[str, float] = {}
        n_steps = 0
        anchor_rng = None
        if cfg.anchor_coef > 0 and self.anchor:  # its own generator, seeded from the step's: shuffles stay as they were
            anchor_rng = torch.Generator().manual_seed(int(torch.randint(2**31, (1,), generator=generator)))
        for _ in range(cfg.epochs):
            order = torch.randperm(len(batch) // group, generator=generator)
            order = (order[:, None] * group + torch.arange(group)).flatten()
            for mb_start in range(0, len(batch), cfg.minibatch_size):
                idx = order[mb_start : mb_start + cfg.minibatch_size]
                stats = self._minibatch_step(batch, advantages, returns, idx, anchor_rng, held, group)
                if stats is None:
                    return UpdateStats(skipped=True, extra={"skip_reason": "non-finite gradient"})
                for key, value in stats.items():
                    totals[key] = totals.get(key, 0.0) + value
                n_steps += 1
        means = {k: v / max(n_steps, 1) for k, v in totals.items()}
        mask = batch.response_mask.float()
        ref_kl = float(rl.masked_mean(batch.old_logprobs - batch.ref_logprobs, mask) * mask.sum(1).mean())
        if self.kl_controller is not None:
            self.kl_coef = self.kl_controller.update(ref_kl, len(batch))
        elapsed = time.perf_counter() - start
        explained = (
            rl.explained_variance(batch.values, returns, mask)
            if returns is not None and batch.values is not None
            else float("nan")
        )
        return UpdateStats(
            policy_loss=means.get("policy_loss", 0.0),
            value_loss=means.get("value_loss", 0.0),
            clip_frac=means.get("clip_frac", 0.0),
            value_clip_frac=means.get("value_clip_frac", 0.0),
            approx_kl=means.get("approx_kl", 0.0),
            ref_kl=ref_kl,
            entropy=means.get("entropy", 0.0),
            explained_variance=explained,
            grad_norm=means.get("grad_norm", 0.0),
            kl_coef=self.kl_coef,
            lr=self.scheduler.get_last_lr()[0],
            mean_score=float(batch.scores.mean()),
            tokens_per_s=cfg.epochs * float(mask.sum()) / max(elapsed, 1e-9),
            extra={k: means[k] for k in ("anchor_loss", "refusal_hold_gap") if k in means},
        )

    def _minibatch_step(
        self, batch: RolloutBatch, advantages: torch.Tensor, returns: torch.Tensor | None, idx: torch.Tensor,
        anchor_rng: torch.Generator | None = None, held: dict[tuple[int, ...], float] | None = None, group: int = 1,
    ) -> dict[str, float] | None:  # fmt: skip
        cfg = self.config
        total_tokens = batch.response_mask[idx].sum().clamp(min=1).float()
        sums = {
            "policy_loss": 0.0,
            "value_loss": 0.0,
            "clip_frac": 0.0,
            "value_clip_frac": 0.0,
            "approx_kl": 0.0,
            "entropy": 0.0,
        }
        self.optimizer.zero_grad(set_to_none=True)
        if self.masters is not None:
            self.model.zero_grad(set_to_none=True)
        for micro in idx.split(cfg.micro_batch_size):
            part = batch.select(micro)
            mask = part.response_mask.float()
            logprobs, values, entropy = self.forward(
                self.model, part, with_values=self.value_head is not None, with_entropy=True
            )
            pg, clipped, approx_kl = rl.policy_loss(logprobs, part.old_logprobs, advantages[micro], mask, cfg.clip)
            weight = rl.token_weights(mask, len(idx), total_tokens, cfg.loss_aggregation)
            loss = (pg * weight).sum()
            if cfg.kl_mode == "loss" and self.kl_coef > 0:
                loss = loss + self.kl_coef * (rl.k3_kl(logprobs, part.ref_logprobs) * weight).sum()
            if values is not None and returns is not None:
                vl, v_clipped = rl.value_loss(values, part.values, returns[micro], mask, cfg.value_clip)
                loss = loss + cfg.value_coef * (vl * weight).sum()
                sums["value_loss"] += float(vl.detach().sum() / total_tokens)
                sums["value_clip_frac"] += float(v_clipped.sum() / total_tokens)
            loss.backward()
            sums["policy_loss"] += float(pg.detach().sum() / total_tokens)
            sums["clip_frac"] += float(clipped.sum() / total_tokens)
            sums["approx_kl"] += float(approx_kl.sum() / total_tokens)
            sums["entropy"] += float((entropy.detach() * mask).sum() / total_tokens)
        if anchor_rng is not None:  # loss += gamma * E_anchor[-log p(answer | prompt)] (PPO-ptx)
            picks = torch.randint(len(self.anchor), (cfg.anchor_batch_size,), generator=anchor_rng).tolist()
            with self._autocast():
                anchor_loss = sft_loss(self.model, self.tokenizer, [self.anchor[i] for i in picks] + self.step_anchor)
            (cfg.anchor_coef * anchor_loss).backward()
            sums["anchor_loss"] = float(anchor_loss.detach())
        if held is not None:
            sums["refusal_hold_gap"] = self._hold_refusals(batch.select(idx[::group]), held)
        if not self.sharded:  # FSDP has already reduce-scattered the mean gradient
            self.dist.average_gradients(self._trained_params())
        if self.masters is not None:  # low-precision gradients become fp32 ones on the masters
            self.masters.take_grads()
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        grad_norm = sharding.full(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
        if not math.isfinite(float(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.optimizer.step()
        if self.masters is not None:
            self.masters.write_back()
        self.scheduler.step()
        sums["grad_norm"] = float(grad_norm)
        return sums

    def _refusal_chunks(self, model: nn.Module, prompts: list[list[int]]) -> Iterator[torch.Tensor]:
        """P(the answer opens as a refusal | prompt), or its log (``rl.refusal_hold_space``), per micro-batch of
        prompts (each prompt is one row per opening), yielded one micro-batch at a time so a caller's backward
        frees each graph before the next."""
        step, pad = self.config.micro_batch_size, self.tokenizer.pad_token_id
        shared = self._keeps_cache(model)
        for i in range(0, len(prompts), step):
            with self._autocast():
                logp = opening_logprob(model, prompts[i : i + step], self.openings, pad, shared_prefix=shared)
            yield logp.exp() if self.config.refusal_hold_space == "probability" else logp

    def _held_groups(self, batch: RolloutBatch, group: int) -> list[bool]:
        """Which of the batch's groups the refusal hold averages: all, or those the game marked benign."""
        n = len(batch) // group
        if self.config.refusal_hold_rows == "all":
            return [True] * n
        if self.hold_groups is None or len(self.hold_groups) != n:
            raise ValueError(
                f"refusal_hold_rows=benign needs hold_groups marking each of the batch's {n} groups "
                f"(got {None if self.hold_groups is None else len(self.hold_groups)})"
            )
        return list(self.hold_groups)

    @torch.no_grad()
    def _reference_refusals(self, batch: RolloutBatch, group: int, keep: list[bool]) -> dict[tuple[int, ...], float]:
        """The reference's P(refusal opening) (or its log) for each held group's prompt: what the hold keeps."""
        self.model.eval()
        every = unpadded(batch.prompt_ids[::group], batch.prompt_mask[::group])
        prompts = [p for p, k in zip(every, keep, strict=True) if k]
        if not prompts:
            return {}
        with self.reference_model() as ref:
            p = torch.cat(list(self._refusal_chunks(ref, prompts)))
        return {tuple(x): float(v) for x, v in zip(prompts, p, strict=True)}

    def _hold_refusals(self, part: RolloutBatch, held: dict[tuple[int, ...], float]) -> float:
        """Backward of lambda * (m - m_ref)^2, m = the mean P(refusal opening) (or log P) over the minibatch's
        prompts (one row per group). A square is not a sum over micro-batches, so m is read first without a graph, then
        each micro-batch backs 2 lambda (m - m_ref) / n * its sum of P. Returns m - m_ref."""
        prompts = [x for x in unpadded(part.prompt_ids, part.prompt_mask) if tuple(x) in held]
        if not prompts:  # no held prompt in this minibatch (refusal_hold_rows=benign)
            return 0.0
        with torch.no_grad():
            mean = float(torch.cat(list(self._refusal_chunks(self.model, prompts))).mean())
        gap = mean - sum(held[tuple(x)] for x in prompts) / len(prompts)
        scale = 2 * self.config.refusal_hold_coef * gap / len(prompts)
        for p in self._refusal_chunks(self.model, prompts):
            (scale * p.sum()).backward()
        return gap

    def advance_schedule(self, steps: int) -> None:
        """Move the learning-rate schedule on by ``steps`` optimiser steps this player did not take (the other
        player's): the release steps one scheduler for both players, so a player's warm-up and decay follow
        the game's clock, not its own updates. A no-op for the constant schedule after its warm-up."""
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()" is the point here
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(steps):
                self.scheduler.step()

    def _trained_params(self) -> list[torch.Tensor]:
        """The model-side parameters whose gradients backward fills (the masters' twins, where there are masters)."""
        if self.masters is None:
            return [p for group in self.optimizer.param_groups for p in group["params"]]
        rest = [p for group in self.optimizer.param_groups[1:] for p in group["params"]]
        return [*self.masters.params, *rest]

    # ---------------------------------------------------------------------------------- state

    def gather(self) -> tuple[dict, dict | None] | None:
        """A sharded player's full weights and optimiser state on rank 0, for ``save_state`` (a collective:
        every rank calls it); None for an unsharded player, whose state is whole on every rank."""
        if not self.sharded:
            return None
        modules = self._modules()
        return sharding.gather_model(modules), sharding.gather_optimizer(modules, self.optimizer)

    def save_model(self, folder: Path, gathered: tuple[dict, dict | None] | None = None) -> None:
        """The policy as a Hugging Face directory (adapter or full weights); a sharded player's from ``gather``.
        On a shared base, its own adapter alone, laid out as a model of its own would write it."""
        if self.adapter is not None:
            from peft import get_peft_model_state_dict

            folder.mkdir(parents=True, exist_ok=True)
            state = get_peft_model_state_dict(self._model, adapter_name=self.adapter)
            save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "adapter_model.safetensors"))
            self._model.peft_config[self.adapter].save_pretrained(str(folder))
        elif gathered is None:
            self.model.save_pretrained(folder, safe_serialization=True)
        else:
            policy = {k.removeprefix("policy."): v for k, v in gathered[0].items() if k.startswith("policy.")}
            self.model.save_pretrained(folder, state_dict=policy, safe_serialization=True)

    def save_state(self, folder: Path, gathered: tuple[dict, dict | None] | None = None) -> None:
        """Write everything a resumed run needs to continue this player exactly: its trained weights (adapter
        or full model), value head or critic, optimiser (tensors as safetensors) and, as JSON, the learning-rate
        schedule's position and the KL coefficient and its controller. A sharded player writes what
        ``gather`` collected: the same files, fp32, keyed by name."""
        if self.sharded:
            if gathered is None:
                raise ValueError("a sharded player saves what gather() collected on every rank")
            weights, optimizer = gathered
            part = lambda prefix: {k.removeprefix(prefix): v for k, v in weights.items() if k.startswith(prefix)}  # noqa: E731
            self.save_model(folder, gathered)
            if self.value_head is not None:
                save_file(part("value_head."), str(folder / "value_head.safetensors"))
            if self.critic is not None:
                save_file(part("critic."), str(folder / "critic.safetensors"))
            if optimizer is None:  # no step yet: nothing but the settings to keep
                optimizer_to_files(self.optimizer, folder, "optimizer")
            else:
                optimizer_state_to_files(optimizer, folder, "optimizer")
        else:
            self.save_model(folder)
            if self.value_head is not None:
                save_file(self.value_head.state_dict(), str(folder / "value_head.safetensors"))
            if self.critic is not None:
                save_model(self.critic, str(folder / "critic.safetensors"))  # handles tied weights
            optimizer_to_files(self.optimizer, folder, "optimizer")
        if self.masters is not None:
            save_file(self.masters.state_dict(), str(folder / "master_weights.safetensors"))
        schedule = {
            "scheduler": {k: v for k, v in self.scheduler.state_dict().items() if k != "lr_lambdas"},
            "kl_coef": self.kl_coef,
            "kl_controller": vars(self.kl_controller) if self.kl_controller else None,
        }
        (folder / "state.json").write_text(json.dumps(schedule))

    def load_state(self, folder: Path) -> None:
        """Restore what ``save_state`` wrote (every rank reads the files; a sharded player keeps its shard)."""
        if self.sharded:
            weights = {f"policy.{k}": v for k, v in load_file(str(folder / "model.safetensors")).items()}
            for name in ("value_head", "critic"):
                if getattr(self, name) is not None:
                    weights |= {f"{name}.{k}": v for k, v in load_file(str(folder / f"{name}.safetensors")).items()}
            modules = self._modules()
            sharding.load_model(modules, weights)
            optimizer = optimizer_state_from_files(folder, "optimizer")
            if optimizer["state"]:  # saved before its first step: the fresh optimiser is that state
                sharding.load_optimizer(modules, self.optimizer, optimizer)
            self._load_schedule(folder)
            return
        restore_weights(self._model, folder, self.adapter_name)
        if self.value_head is not None:
            self.value_head.load_state_dict(load_file(str(folder / "value_head.safetensors")))
        if self.critic is not None:
            load_model(self.critic, str(folder / "critic.safetensors"))
        optimizer_from_files(self.optimizer, folder, "optimizer")
        if self.masters is not None:
            masters = folder / "master_weights.safetensors"
            self.masters.load_state_dict(load_file(str(masters)) if masters.exists() else {})
        self._load_schedule(folder)

    def _load_schedule(self, folder: Path) -> None:
        schedule = json.loads((folder / "state.json").read_text())
        self.scheduler.load_state_dict({**self.scheduler.state_dict(), **schedule["scheduler"]})
        self.kl_coef = schedule["kl_coef"]
        if self.kl_controller and schedule["kl_controller"]:
            vars(self.kl_controller).update(schedule["kl_controller"])

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Weights that change during training (adapter or full model, plus value head); none when sharded,
        where no rank holds them whole (and FSDP keeps the shards consistent by construction)."""
        if self.sharded:
            return {}
        state = {f"policy.{n}": p.detach() for n, p in self._policy_named_params()}
        if self.value_head is not None:
            state.update({f"value_head.{n}": p.detach() for n, p in self.value_head.named_parameters()})
        if self.critic is not None:
            state.update({f"critic.{n}": p.detach() for n, p in self.critic.named_parameters()})
        return state


def _slice_generation(g: Generation, idx: slice) -> Generation:
    return Generation(
        texts=g.texts[idx],
        prompt_ids=g.prompt_ids[idx],
        prompt_mask=g.prompt_mask[idx],
        response_ids=g.response_ids[idx],
        response_mask=g.response_mask[idx],
        logprobs=g.logprobs[idx],
    )
