"""A short supervised warm-up: teach a player a behaviour by cross-entropy on target responses.

The paper starts both players from SFT checkpoints; our bundled SmolLM2 has never been taught to
refuse (nor to write questions), so a few steps of this stand in for that stage.
"""

from __future__ import annotations

import random

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


def sft_batch(
    tokenizer: PreTrainedTokenizerBase, pairs: list[tuple[str, str]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(chat-formatted prompt, target) pairs as one left-padded batch: ids, attention mask, position ids and
    labels (-100 outside the targets, so the loss is -log p(target | prompt) alone)."""
    eos = tokenizer.eos_token or ""
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p, _ in pairs]
    target_ids = [tokenizer(t + eos, add_special_tokens=False)["input_ids"] for _, t in pairs]
    width = max(len(p) + len(t) for p, t in zip(prompt_ids, target_ids, strict=True))
    ids = torch.full((len(pairs), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for row, (p, t) in enumerate(zip(prompt_ids, target_ids, strict=True)):
        seq = p + t
        start = width - len(seq)  # left padding, as in generation
        ids[row, start:] = torch.tensor(seq)
        mask[row, start:] = 1
        labels[row, start + len(p) :] = torch.tensor(t)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions, labels


def sft_loss(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: list[tuple[str, str]]) -> torch.Tensor:
    """Mean -log p(target token | prompt, earlier target tokens) over the pairs' target tokens."""
    device = next(model.parameters()).device
    ids, mask, positions, labels = (t.to(device) for t in sft_batch(tokenizer, pairs))
    return model(input_ids=ids, attention_mask=mask, position_ids=positions, labels=labels, use_cache=False).loss


def sampled_batches(
    pairs: list[tuple[str, str]], steps: int, batch_size: int, seed: int
) -> list[list[tuple[str, str]]]:
    """``steps`` batches, each ``batch_size`` distinct pairs drawn at random (repeats across batches)."""
    rng = random.Random(seed)
    return [rng.sample(pairs, min(batch_size, len(pairs))) for _ in range(steps)] if pairs else []


def sft(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batches: list[list[tuple[str, str]]], lr: float
) -> list[float]:
    """Minimise -log p(target | prompt), one AdamW step per batch of (chat-formatted prompt, target) pairs;
    returns the losses. The caller composes the batches (the defender's keep a fixed refusal share)."""
    if not batches:
        return []
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), eps=1e-6)
    losses = []
    model.train()
    for batch in batches:
        loss = sft_loss(model, tokenizer, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses
