"""The defender's refusal bias: how likely its answer is to open as a refusal, read straight off the policy.

A greedy answer refuses when the refusal mode wins its first tokens, so
log P(refusal opening | prompt) = log sum_j p(OPENINGS[j] | prompt) is the quantity a defender stage moves
when it slides toward answering (scripts/refusal_shift.py reads it per prompt). The player's refusal hold
(``rl.refusal_hold_coef``) uses it during RL: the mean P(refusal opening), or of its log
(``rl.refusal_hold_space``), over each minibatch's prompts is held at the reference's (the warm-up's) on
the same prompts, so RL may move refusals from one prompt to another -- sharpen the
harmful/harmless line -- but not shift them all toward answering.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sparring.generation import cache_kwarg, prefill

OPENINGS = ("I can't", "I cannot", "I'm sorry", "Sorry", "I won't", "I'm unable")  # how most project refusals begin


def opening_ids(tokenizer: PreTrainedTokenizerBase, openings: tuple[str, ...] = OPENINGS) -> list[list[int]]:
    """Each opening as the tokens an answer starts with (tokenised on its own, as ``sft_batch`` tokenises targets)."""
    return [tokenizer(o, add_special_tokens=False)["input_ids"] for o in openings]


def opening_logprob(
    model: PreTrainedModel,
    prompts: list[list[int]],
    openings: list[list[int]],
    pad_id: int,
    shared_prefix: bool = True,
) -> torch.Tensor:
    """log P(the answer opens as a refusal | prompt) per prompt (token ids of the chat-formatted prompt): the
    summed token log-probs of each opening, then a logsumexp over the openings. Differentiable; the caller
    picks no_grad or not. With ``shared_prefix`` each prompt runs once and its key/value cache is copied to
    its openings (gradients flow through the copies), a sixth of the memory of running every (prompt,
    opening) row whole; gradient checkpointing keeps no cache, so its callers pass False."""
    if not shared_prefix:
        return _whole_rows(model, prompts, openings, pad_id)
    device = next(model.parameters()).device
    n, k, width = len(prompts), len(openings), max(len(o) for o in openings)
    head_ids, head_mask = _left_padded(prompts, pad_id)
    tail_ids = torch.full((n * k, width), pad_id, dtype=torch.long)
    tail_mask = torch.zeros_like(tail_ids)
    for j, o in enumerate(openings * n):  # row i * k + j: prompt i, opening j; right padding, after the opening
        tail_ids[j, : len(o)] = torch.tensor(o)
        tail_mask[j, : len(o)] = 1
    head_ids, head_mask, tail_ids, tail_mask = (t.to(device) for t in (head_ids, head_mask, tail_ids, tail_mask))
    rows = torch.arange(n, device=device).repeat_interleave(k)
    head, cache = prefill(model, head_ids, head_mask, None)
    cache.reorder_cache(rows)  # each prompt's cache, once per opening
    lengths = head_mask.sum(1)[rows]
    tail = model(
        input_ids=tail_ids,
        attention_mask=torch.cat([head_mask[rows], tail_mask], dim=1),
        position_ids=lengths[:, None] + torch.arange(width, device=device),
        use_cache=True,
        **{cache_kwarg(model): cache},
    )
    # the prompt's last position predicts an opening's first token; the opening's token t predicts token t + 1
    logits = torch.cat([head.logits[rows, -1:], tail.logits[:, :-1]], dim=1).float()
    logp = torch.log_softmax(logits, -1).gather(-1, tail_ids[:, :, None]).squeeze(-1)
    return torch.logsumexp((logp * tail_mask).sum(1).view(n, k), dim=1)


def _left_padded(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, p in enumerate(prompts):
        ids[r, width - len(p) :] = torch.tensor(p)
        mask[r, width - len(p) :] = 1
    return ids, mask


def _whole_rows(model: PreTrainedModel, prompts: list[list[int]], openings: list[list[int]], pad_id: int):
    """``opening_logprob`` with every (prompt, opening) pair run whole as one left-padded row."""
    rows = [(p, o) for p in prompts for o in openings]
    ids, mask = _left_padded([p + o for p, o in rows], pad_id)
    width = ids.shape[1]
    scored = torch.zeros_like(ids, dtype=torch.bool)  # positions whose token is an opening's
    for r, (_, o) in enumerate(rows):
        scored[r, width - len(o) :] = True
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    device = next(model.parameters()).device
    ids, mask, positions, scored = ids.to(device), mask.to(device), positions.to(device), scored.to(device)
    keep = max(len(o) for o in openings)  # the openings sit at the end: only their logits are needed
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False, logits_to_keep=keep + 1)
    logp = torch.log_softmax(out.logits[:, :-1].float(), -1).gather(-1, ids[:, -keep:, None]).squeeze(-1)
    per_row = (logp * scored[:, -keep:]).sum(1)
    return torch.logsumexp(per_row.view(len(prompts), len(openings)), dim=1)


def unpadded(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> list[list[int]]:
    """The rows of a left-padded prompt batch as token lists, padding dropped."""
    rows = zip(prompt_ids.tolist(), prompt_mask.tolist(), strict=True)
    return [[i for i, m in zip(ids, mask, strict=True) if m] for ids, mask in rows]
