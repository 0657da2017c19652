"""One step's exchanges as records: the attacks, the defender's answers to them, what the referee read in
each answer; and the attacks.jsonl row each exchange becomes, from which the archive of successful attacks
is read back (so a resumed run rebuilds it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sparring.generation import Generation

if TYPE_CHECKING:
    from sparring.payoffs import Gate


@dataclass
class Attacks:
    """One step's attack prompts: the fresh ones first (k rewrites per seed), then replayed ones."""

    texts: list[str]
    seeds: list[str]  # the seed each prompt rewrites
    n_fresh: int  # texts[:n_fresh] were written this step
    k: int  # rewrites per seed (the attacker's RLOO group)
    generation: Generation | None  # the attacker's samples (None under rlhf)


@dataclass
class Answers:
    """The defender's answers: k per attack (attack-major), then k per benign request."""

    inputs: list[str]  # the request each answer answers
    generation: Generation
    n_attack_rows: int
    k: int  # answers per request (the defender's RLOO group)
    n_benign: int


@dataclass
class Judged:
    """What the referee read in each answer: P(unsafe) (attack rows), refusal score and helpfulness (all rows)."""

    p_unsafe: np.ndarray
    refusals: np.ndarray
    helpful: np.ndarray


def attack_rows(
    step: int, stage: str, attacks: Attacks, answers: Answers, judged: Judged, bleu: np.ndarray,
    emb_sim: np.ndarray, attacker_reward: np.ndarray, gate: Gate | None,
) -> list[dict]:  # fmt: skip
    """One attacks.jsonl row per attack: the prompt, its seed, the defender's answers and every score."""
    k, texts = answers.k, answers.generation.texts
    rows = []
    for i, x in enumerate(attacks.texts):
        answered = slice(i * k, (i + 1) * k)
        rows.append(
            {
                "step": step,
                "stage": stage,
                "seed": attacks.seeds[i],
                "prompt": x,
                "responses": texts[answered],
                "p_unsafe": [round(float(v), 6) for v in judged.p_unsafe[answered]],
                "self_bleu": round(float(bleu[i]), 6),
                "embedding_similarity": round(float(emb_sim[i]), 6),
                "attacker_reward": round(float(attacker_reward[i]), 6),
                **(gate.row(i) if gate else {}),
                **({"replay": True} if i >= attacks.n_fresh else {}),
            }
        )
    return rows


def successful_attacks(rows: list[dict], threshold: float) -> list[tuple[str, str]]:
    """(attack, seed) of fresh attacks that kept their intent (where a gate ran) and had an answer judged
    unsafe: the archive that defender steps replay from. Read from the logged rows, so a resume rebuilds it."""
    return [
        (r["prompt"], r["seed"])
        for r in rows
        if not r.get("replay") and r.get("kept", True) and max(r["p_unsafe"]) >= threshold
    ]
