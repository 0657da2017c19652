"""Red-teaming with a trained attacker: transfer ASR against other models, and how diverse it is.

This is the paper's Table 2 at any scale: the attacker rewrites held-out seed behaviours, each
target answers every attack (greedy), each judge scores the exchanges, and the attacks' diversity
is measured as 1 - SelfBLEU within the set and the mean pairwise embedding distance.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import numpy as np

from sparring.attacks import attack_prompt, clean_attack
from sparring.config import AttackerConfig
from sparring.diversity import mean_pairwise_distance, self_bleu_within
from sparring.evaluate import rate_with_interval
from sparring.generation import generate
from sparring.models import chat_prompt


def write_attacks(model, tokenizer, settings: AttackerConfig, seeds: Sequence[str], seed: int = 0) -> list[str]:
    """One attack per seed, sampled as the attacker does in the game (its template and sampling)."""
    prompts = [attack_prompt(tokenizer, settings, s) for s in seeds]
    texts = generate(model, tokenizer, prompts, settings.sampling, seed=seed).texts
    return [clean_attack(t, settings.attack_text == "whole") for t in texts]


def pick_seeds(prompts: Sequence[str], n: int, seed: int = 0) -> list[str]:
    """A fixed-seed sample of ``n`` seed behaviours (all of them if there are fewer)."""
    return random.Random(f"{seed}/redteam").sample(list(prompts), min(n, len(prompts)))


def transfer(
    attacks: Sequence[str],
    targets: dict[str, tuple],
    judges: dict,
    max_new_tokens: int = 48,
    system: str | None = None,
    threshold: float = 0.5,
) -> dict:
    """ASR of the same attacks against each target (model, tokenizer), by every judge, with 95% intervals."""
    from sparring.generation import SamplingConfig

    greedy = SamplingConfig(max_new_tokens=max_new_tokens, temperature=0, batch_size=64)
    result: dict = {}
    for name, (model, tokenizer) in targets.items():
        prompts = [chat_prompt(tokenizer, a, system) for a in attacks]
        answers = generate(model, tokenizer, prompts, greedy).texts
        result[name] = {
            "n": len(attacks),
            "asr": {
                judge_name: rate_with_interval(
                    np.asarray(judge.score(list(attacks), answers)) >= getattr(judge, "threshold", threshold)
                )
                for judge_name, judge in judges.items()
            },
            "samples": [{"prompt": a, "response": r} for a, r in zip(attacks[:3], answers[:3], strict=True)],
        }
    return result


def diversity(attacks: Sequence[str], embed: Callable[[list[str]], np.ndarray]) -> dict:
    """1 - SelfBLEU within the set and mean pairwise (1 - cosine) of sentence embeddings."""
    return {
        "one_minus_self_bleu": 1.0 - self_bleu_within(list(attacks)),
        "embedding_diversity": mean_pairwise_distance(embed(list(attacks))),
        "distinct": len(set(attacks)),
    }
