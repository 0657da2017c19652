"""The sampling kernel that both decode loops (generation.py, static_decode.py) and the player share.

One next-token choice is: repetition penalty on the logits -> softmax at the temperature -> the
top-p nucleus -> a draw; and its log-probability under the policy at its temperature (before the
penalty and the nucleus), which the PPO ratio is built from. Each piece is written once, here.
"""

from __future__ import annotations

import torch

NUCLEUS_CANDIDATES = 256  # most likely tokens searched first for the nucleus; widened x8 when it does not fit


def penalise_repeats(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """The CTRL repetition penalty (as transformers applies it): logits of tokens already ``seen``
    ((B, V) bool) are divided by ``penalty`` when positive and multiplied by it when negative."""
    hit = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, hit, logits)


def seen_mask(prompt_ids: torch.Tensor, vocab: int, penalty: float) -> torch.Tensor:
    """The tokens the repetition penalty applies to at the start, (B, V) bool: the prompt's, padding
    included, as transformers' processor does; a (B, 1) placeholder when the penalty is off. A decode
    loop then marks each token it emits (``seen.scatter_(1, token[:, None], True)``)."""
    seen = torch.zeros(prompt_ids.shape[0], vocab if penalty != 1.0 else 1, dtype=torch.bool, device=prompt_ids.device)
    if penalty != 1.0:
        seen.scatter_(1, prompt_ids, True)
    return seen


def nucleus(probs: torch.Tensor, top_p: float, exhaustive: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-p nucleus of each row of ``probs`` (B, V): the smallest set of most likely tokens whose
    mass reaches ``top_p`` (at least one). Returns (their probabilities, most likely first, with every
    token outside the nucleus zeroed; their vocabulary ids), both (B, K).

    ``exhaustive``: one full sort, with no data-dependent control flow, so a CUDA graph can hold it (a
    GPU sorts in microseconds); otherwise the nucleus is sought among the most likely few hundred
    tokens and widened until every row's fits (cheaper on a CPU)."""
    vocab = probs.shape[-1]
    k = vocab if exhaustive else min(NUCLEUS_CANDIDATES, vocab)
    while True:
        top, ids = probs.topk(k, dim=-1) if k < vocab else probs.sort(dim=-1, descending=True)
        if k == vocab or bool((top.sum(-1) >= top_p).all()):
            break
        k = min(k * 8, vocab)
    before = top.cumsum(-1) - top  # mass of the more likely tokens
    return torch.where(before < top_p, top, torch.zeros_like(top)), ids


def sample(probs: torch.Tensor, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """One token per row of ``probs`` (B, V) from the top-p nucleus, renormalised, drawn with ``generator``
    (the dynamic loop's draw)."""
    if top_p >= 1.0:  # inverse CDF: one cumulative sum instead of multinomial's exponential draws
        cdf = probs.cumsum(-1)
        u = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device) * cdf[:, -1:]
        return torch.searchsorted(cdf, u).squeeze(1).clamp(max=probs.shape[-1] - 1)
    kept, ids = nucleus(probs, top_p, exhaustive=False)
    return ids.gather(1, torch.multinomial(kept, 1, generator=generator)).squeeze(1)


def draw(probs: torch.Tensor, top_p: float, u: torch.Tensor, exhaustive: bool = True) -> torch.Tensor:
    """One token per row of ``probs`` (B, V) from uniforms ``u`` (B,) drawn up front, by the inverse CDF
    of the top-p nucleus (the static loop's draw: no generator call inside a captured step)."""
    ids = None
    if top_p < 1.0:
        probs, ids = nucleus(probs, top_p, exhaustive)
    cdf = probs.cumsum(-1)
    pick = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).clamp(max=probs.shape[-1] - 1)
    return (ids.gather(1, pick) if ids is not None else pick).squeeze(1)


def token_logprob(
    scaled_logits: torch.Tensor, tokens: torch.Tensor, log_partition: torch.Tensor | None = None
) -> torch.Tensor:
    """log pi(token) from logits already divided by the temperature, (..., V) and (...): the chosen logit
    minus the log-partition (pass it when already computed), so autograd keeps no (..., V) log-softmax
    output alive."""
    if log_partition is None:
        log_partition = torch.logsumexp(scaled_logits, dim=-1)
    return scaled_logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - log_partition
