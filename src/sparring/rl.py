"""RL estimators and losses as plain tensor functions, every equation visible.

Shapes: B sequences, T response tokens. ``mask`` is 1 on real response tokens (padding may sit
anywhere: rows have different lengths). Everything here is differentiable where it should be and
free of model code, so it can be checked against hand-computed values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance of the masked entries (Bessel-corrected, as the usual whitening uses)."""
    mean = masked_mean(x, mask)
    n = mask.sum()
    var = masked_mean((x - mean) ** 2, mask)
    return var * n / (n - 1).clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / std over masked entries; padding stays 0."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def kl_penalised_rewards(
    scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, beta: float
) -> torch.Tensor:
    """Per-token rewards: r_t = -beta (log pi - log pi_ref) on every token, + score on the last one."""
    rewards = -beta * (logprobs - ref_logprobs) * mask
    last = last_index(mask)
    rewards[torch.arange(len(scores)), last] += scores
    return rewards


def last_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token (0 for an empty row)."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return (positions * mask.long()).max(dim=1).values


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over each row's real tokens.

    delta_t = r_t + gamma V_{t+1} - V_t ; A_t = delta_t + gamma lam A_{t+1}, with V and A beyond a
    row's last real token taken as 0. Returns (advantages, returns = A + V), 0 on padding.
    """
    mask = mask.to(values.dtype)
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = advantage * m
        # A padded position passes its successor's values through unchanged (padding in the middle).
        next_value = torch.where(m.bool(), values[:, t], next_value)
        next_advantage = torch.where(m.bool(), advantage, next_advantage)
    returns = (advantages + values) * mask
    return advantages, returns


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate: mean_t max(-A r_t, -A clip(r_t, 1-eps, 1+eps)), r_t = pi/pi_old.

    Returns (per-token loss, clipped-indicator, per-token approx KL to the old policy) for the
    caller to reduce over the batch. Approx KL is the k3 estimator (r - 1) - log r.
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = torch.maximum(unclipped, clipped)
    was_clipped = (clipped > unclipped).to(logprobs.dtype)
    approx_kl = (ratio - 1.0) - log_ratio
    return loss * mask, was_clipped * mask, approx_kl.detach() * mask


def token_weights(mask: torch.Tensor, n_sequences: int, n_tokens: torch.Tensor, aggregation: str) -> torch.Tensor:
    """Each response token's weight in a minibatch's mean loss, whatever its micro-batch split: token = 1 /
    (the minibatch's tokens), so a 32-token answer weighs five times a 6-token refusal; sequence = 1 / (its
    response's tokens x the minibatch's responses), so every response weighs alike (GRPO's original mean)."""
    if aggregation == "sequence":
        return mask / (mask.sum(1, keepdim=True).clamp(min=1) * n_sequences)
    return mask / n_tokens


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss 0.5 max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2) per token."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    unclipped = (values - returns) ** 2
    clipped = (clipped_values - returns) ** 2
    loss = 0.5 * torch.maximum(unclipped, clipped)
    return loss * mask, (clipped > unclipped).to(values.dtype) * mask


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token KL(pi || pi_ref) estimate, unbiased and >= 0: exp(ref - lp) - (ref - lp) - 1.
    Written expm1(d) - d: exp(d) - 1 cancels to 0 in float32 once |d| < ~1e-4, where the KL is ~d^2 / 2."""
    delta = ref_logprobs - logprobs
    return torch.expm1(delta) - delta


def rloo_advantages(scores: torch.Tensor) -> torch.Tensor:
    """Leave-one-out baseline for k samples per prompt, scores (N, k): A_i = s_i - mean_{j!=i} s_j."""
    k = scores.shape[1]
    if k < 2:
        raise ValueError("RLOO needs at least 2 samples per prompt")
    s = scores.double()  # float64: a group of equal rewards gets exactly 0, not float32 rounding residue
    baseline = (s.sum(dim=1, keepdim=True) - s) / (k - 1)
    return (s - baseline).to(scores.dtype)


def group_normalised_advantages(scores: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """GRPO's baseline: A_i = (s_i - mean(s)) / (std(s) + eps) within each prompt's group. In float64:
    in float32 seven rewards of 0.1 got -7.45e-5 each (a push from nothing); exactly 0 here."""
    s = scores.double()
    mean = s.mean(dim=1, keepdim=True)
    std = s.std(dim=1, keepdim=True) if s.shape[1] > 1 else torch.zeros_like(mean)
    return ((s - mean) / (std + eps)).to(scores.dtype)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(R - V) / Var(R): 1 is a perfect critic, 0 no better than a constant."""
    var_returns = masked_var(returns, mask)
    if float(var_returns) == 0.0:
        return float("nan")
    return float(1.0 - masked_var(returns - values, mask) / var_returns)


@dataclass
class AdaptiveKLController:
    """Ziegler et al.'s controller: move beta so that the observed KL tracks a target."""

    beta: float
    target: float
    horizon: int = 10_000

    def update(self, observed_kl: float, n_steps: int) -> float:
        error = max(min(observed_kl / self.target - 1.0, 0.2), -0.2)
        self.beta *= 1.0 + error * n_steps / self.horizon
        return self.beta


def lr_lambda(schedule: str, warmup: int):
    """Learning-rate multiplier at optimiser step t (0-based). ``constant``: linear warm-up (t + 1) / w, then 1.
    ``inverse_sqrt`` is the release's: max(t / w, 0.1) during the warm-up -- a floor of a tenth, so its first
    steps are not wasted -- then sqrt(w / t)."""

    def factor(step: int) -> float:
        if schedule == "inverse_sqrt":
            if warmup and step < warmup:
                return max(step / warmup, 0.1)
            return math.sqrt(max(warmup, 1) / max(step, 1))
        if warmup and step + 1 < warmup:
            return (step + 1) / warmup
        return 1.0

    return factor
