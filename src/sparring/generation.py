"""Batched sampling with a KV cache, returning what the RL step needs.

A hand-written decode loop rather than ``model.generate``: it stops each sequence at EOS, stops
the batch when all are done, and returns the sampled tokens' log-probabilities without keeping
every step's full logits. Sampling does one softmax per step and draws from it directly: by the
inverse CDF over the vocabulary, or -- for top-p -- within the few hundred most likely tokens
that hold the nucleus, instead of sorting the whole vocabulary (transformers' warpers) and drawing
with ``torch.multinomial`` over it, which together cost a third of each decode step on a CPU.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sparring import sharding, static_decode
from sparring.distributed import all_ranks_true
from sparring.errors import SparringError
from sparring.models import base_model
from sparring.sampling import penalise_repeats, sample, seen_mask, token_logprob


class SamplingConfig(BaseModel):
    """How to sample. temperature 0 means greedy decoding."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_new_tokens: int = Field(64, ge=1, description="Longest response, in tokens.")
    temperature: float = Field(1.0, ge=0, description="Softmax temperature; 0 = greedy.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    repetition_penalty: float = Field(1.0, gt=0, description="CTRL-style penalty on seen tokens; 1 = off.")
    batch_size: int = Field(64, ge=1, description="Sequences decoded together (memory bound).")
    bf16: bool = Field(
        False,
        description="Decode under bf16 autocast (fast on GPUs and on CPUs with AMX/AVX512-BF16); log-probs then "
        "carry bf16 rounding, so the update's first ratio is no longer exactly 1.",
    )
    decoder: Literal["auto", "dynamic", "static"] = Field(
        "auto",
        description="dynamic: a growing KV cache (fastest on CPUs); static: a fixed-size cache, and on CUDA the "
        "whole decode step as one replayed CUDA graph; auto: static on CUDA for models transformers can run "
        "over a static cache, else dynamic.",
    )
    compile: bool = Field(
        False,
        description="With decoder=static: torch.compile the decode step first, fusing a layer's few dozen small "
        "kernels into a handful (on an H100, 1B model, batch 64: 3.1x -> 5.3x plain generate). Compiling takes "
        "about a minute per model, once more when prompt widths first change.",
    )


@dataclass
class Generation:
    """Prompts and sampled responses as padded tensors plus decoded text.

    prompt_ids are left-padded, response_ids right-padded with the pad id. ``logprobs[i, t]`` is
    log pi(response_ids[i, t] | ...) under the policy at the sampling temperature (logits / T,
    before top-p and repetition penalty), the quantity the PPO ratio is built from.
    """

    texts: list[str]
    prompt_ids: torch.Tensor  # (B, P) long
    prompt_mask: torch.Tensor  # (B, P) long
    response_ids: torch.Tensor  # (B, R) long
    response_mask: torch.Tensor  # (B, R) long, 1 for tokens up to and including EOS
    logprobs: torch.Tensor  # (B, R) float

    @property
    def num_tokens(self) -> int:
        return int(self.response_mask.sum())


def cache_kwarg(model: PreTrainedModel) -> str:
    """transformers renamed ``past_key_values`` to ``cache``; accept both versions."""
    params = inspect.signature(base_model(model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def prompt_groups(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(first row of each distinct prompt, each row's prompt index), or None when no prompt repeats
    (GRPO groups, the defender's answers to one attack: their samples can share the prompt's pass)."""
    key = torch.cat([prompt_ids, prompt_mask], dim=1)
    unique, inverse = torch.unique(key, dim=0, return_inverse=True)
    if len(unique) == len(key):
        return None
    rows = torch.arange(len(key), device=key.device)
    first = torch.full((len(unique),), len(key), device=key.device).scatter_reduce(0, inverse, rows, reduce="amin")
    return first, inverse


def prefill(model: PreTrainedModel, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, groups, **kwargs):
    """Run the prompts into a fresh KV cache -- each distinct prompt once when ``groups`` is given,
    its cache rows then copied to every sample -- and return (output of the distinct rows, cache)."""
    rows = groups[0] if groups is not None else slice(None)
    out = model(
        input_ids=prompt_ids[rows],
        attention_mask=prompt_mask[rows],
        position_ids=(prompt_mask[rows].cumsum(-1) - 1).clamp(min=0),
        use_cache=True,
        logits_to_keep=1,
        **kwargs,
    )
    cache = out.cache if hasattr(out, "cache") else out.past_key_values
    if groups is not None:
        cache.reorder_cache(groups[1])
    return out, cache


def use_static(model: PreTrainedModel, cfg: SamplingConfig, device: torch.device) -> bool:
    """Which decode loop ``cfg.decoder`` picks for this model on this device."""
    if sharding.is_sharded(model):  # each layer's all-gather cannot sit inside a captured CUDA graph
        if cfg.decoder == "static":
            raise SparringError("sampling.decoder=static cannot run a sharded (rl.shard=fsdp) player; use auto")
        return False
    if cfg.decoder == "auto":
        return device.type == "cuda" and static_decode.supports_static_cache(model)
    if cfg.decoder == "static" and not static_decode.supports_static_cache(model):
        base = base_model(model)
        raise SparringError(
            f"sampling.decoder=static: transformers cannot run {type(base).__name__} with "
            f"attn_implementation={getattr(base.config, '_attn_implementation', '?')!r} over a static cache with a "
            "4-D mask; set sampling.decoder=dynamic (or auto), or load the model with sdpa attention"
        )
    return cfg.decoder == "static"


def _pad_to(t: torch.Tensor, width: int, value: int | float, left: bool) -> torch.Tensor:
    pad = width - t.shape[1]
    if pad == 0:
        return t
    filler = torch.full((t.shape[0], pad), value, dtype=t.dtype, device=t.device)
    return torch.cat([filler, t] if left else [t, filler], dim=1)


@torch.no_grad()
def _generate_chunk(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    cfg: SamplingConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    device = next(model.parameters()).device
    cache_name = cache_kwarg(model)
    if use_static(model, cfg, device):
        graphs = device.type == "cuda"
        backend = "inductor" if cfg.compile else None
        return static_decode.generate_chunk(model, tokenizer, prompts, cfg, generator, cache_name, graphs, backend)
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    prompt_ids, prompt_mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id
    batch = prompt_ids.shape[0]
    penalty = cfg.repetition_penalty
    temperature = cfg.temperature if cfg.temperature > 0 else 1.0

    attention = prompt_mask.clone()
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    groups = prompt_groups(prompt_ids, prompt_mask)  # samples of one prompt share its prefill
    out, cache = prefill(model, prompt_ids, attention, groups)
    if groups is not None:
        out.logits = out.logits[groups[1]]
    seen = seen_mask(prompt_ids, out.logits.shape[-1], penalty)
    position = positions[:, -1:]
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    sharded = sharding.is_sharded(model)
    tokens, logps, masks = [], [], []
    for _ in range(cfg.max_new_tokens):
        logits = out.logits[:, -1, :].float()
        scaled = logits / temperature if temperature != 1.0 else logits  # the policy at its temperature
        scores = penalise_repeats(logits, seen, penalty) / temperature if penalty != 1.0 else scaled
        if cfg.temperature == 0:
            token = scores.argmax(dim=-1)
        else:
            token = sample(torch.softmax(scores, dim=-1), cfg.top_p, generator)
        token = torch.where(finished, torch.full_like(token, pad), token)
        alive = (~finished).long()
        tokens.append(token)
        masks.append(alive)
        logps.append(token_logprob(scaled, token) * alive)
        finished = finished | (token == eos)
        done = bool(finished.all())
        if all_ranks_true(done) if sharded else done:  # sharded: every rank runs each forward, so all stop together
            break
        if penalty != 1.0:
            seen.scatter_(1, token[:, None], True)
        attention = torch.cat([attention, alive[:, None]], dim=1)
        position = position + 1
        out = model(
            input_ids=token[:, None],
            attention_mask=attention,
            position_ids=position,
            use_cache=True,
            **{cache_name: cache},
        )
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
    return prompt_ids, prompt_mask, torch.stack(tokens, 1), torch.stack(masks, 1), torch.stack(logps, 1)


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    cfg: SamplingConfig | None = None,
    seed: int = 0,
) -> Generation:
    """Sample one response per (already chat-formatted) prompt.

    The same seed gives the same tokens on the CPU: one ``torch.Generator`` drives every draw.
    """
    cfg = cfg or SamplingConfig()
    if not prompts:
        raise ValueError("generate() needs at least one prompt")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    parts = []
    try:
        # One autocast region for the whole call, so each weight is cast to bf16 once, not once per token.
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            for start in range(0, len(prompts), cfg.batch_size):
                chunk = prompts[start : start + cfg.batch_size]
                parts.append(_generate_chunk(model, tokenizer, chunk, cfg, generator))
    finally:
        model.train(was_training)
    pad = tokenizer.pad_token_id
    p_width = max(p[0].shape[1] for p in parts)
    r_width = max(p[2].shape[1] for p in parts)
    prompt_ids = torch.cat([_pad_to(p[0], p_width, pad, left=True) for p in parts])
    prompt_mask = torch.cat([_pad_to(p[1], p_width, 0, left=True) for p in parts])
    response_ids = torch.cat([_pad_to(p[2], r_width, pad, left=False) for p in parts])
    response_mask = torch.cat([_pad_to(p[3], r_width, 0, left=False) for p in parts])
    logprobs = torch.cat([_pad_to(p[4], r_width, 0.0, left=False) for p in parts])
    texts = [
        tokenizer.decode(ids[mask.bool()], skip_special_tokens=True).strip()
        for ids, mask in zip(response_ids, response_mask, strict=True)
    ]
    return Generation(texts, prompt_ids, prompt_mask, response_ids, response_mask, logprobs)
