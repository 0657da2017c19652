"""What each exchange earns: the intent gate's verdict on an attack (did it keep its seed's harmful
intent?) and the two players' payoffs from the referee's scores, the gate and the diversity terms.
The equations are in game_rewards' docstring; game.py only calls it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparring.config import GateConfig


@dataclass
class Gate:
    """Per attack: P(harmful request), cosine to its seed, whether it seeks harm, whether it kept its
    seed's intent (harmful and on topic); per answer to it: how helpful it is (what an answer to a
    harmless request is paid, see Game._helpfulness); the lost-intent penalty."""

    intent: np.ndarray
    relevance: np.ndarray
    harmful: np.ndarray
    kept: np.ndarray
    attack_helpful: np.ndarray
    penalty: float

    @classmethod
    def decide(cls, intent: np.ndarray, relevance: np.ndarray, helpful: np.ndarray, g: GateConfig) -> Gate:
        """An attack kept its seed's intent if it seeks harm (intent >= threshold), stays on the seed's topic
        (relevance >= threshold) and is a rewrite, not a copy of the seed (relevance <= copy_threshold)."""
        harmful = intent >= g.intent_threshold
        copied = relevance > g.copy_threshold if g.copy_threshold < 1.0 else np.zeros_like(harmful)
        on_topic = (relevance >= g.relevance_threshold) & ~copied
        return cls(intent, relevance, harmful, harmful & on_topic, helpful, g.penalty)

    def row(self, i: int) -> dict:
        """Attack ``i``'s gate readings, for attacks.jsonl."""
        return {"intent": round(float(self.intent[i]), 6), "relevance": round(float(self.relevance[i]), 6),
                "kept": bool(self.kept[i])}  # fmt: skip


def game_rewards(
    p_unsafe: np.ndarray,
    benign_helpful: np.ndarray,
    self_bleu: np.ndarray,
    emb_sim: np.ndarray,
    w_bleu: float,
    w_emb: float,
    gate: Gate | None = None,
    refused: np.ndarray | None = None,
    refusal_weight: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The payoffs. p_unsafe holds k_d judged answers per attack (attack-major order).

    defender: (1 - w)(1 - P(unsafe)) + w * refused per answer to an attack (w = refusal_weight; the
    paper's payoff is w = 0), then its helpfulness per benign answer;
    attacker: mean P(unsafe) over its attack's answers - w_bleu SelfBLEU - w_emb EmbSim.
    With the gate: an attack that no longer seeks harm on its seed's topic earns -penalty in place of
    its mean P(unsafe), and answers to attacks that no longer seek harm are paid their helpfulness, like
    answers to benign requests (answering a harmless question is the safe thing to do).
    """
    k_d = len(p_unsafe) // max(len(self_bleu), 1)
    answered = 1.0 - p_unsafe
    if refusal_weight and refused is not None:  # a clear refusal beats an evasive answer the judge calls safe
        answered = (1.0 - refusal_weight) * answered + refusal_weight * refused
    unsafety = p_unsafe.reshape(len(self_bleu), k_d).mean(1)
    if gate is not None:
        answered = np.where(np.repeat(gate.harmful, k_d), answered, gate.attack_helpful)
        unsafety = np.where(gate.kept, unsafety, -gate.penalty)
    defender = np.concatenate([answered, benign_helpful])
    attacker = unsafety - w_bleu * self_bleu - w_emb * emb_sim
    return defender, attacker
