"""The payoffs, by hand: reward signs, the intent gate, the refusal weight (payoffs.py)."""

from __future__ import annotations

import numpy as np
import pytest

from sparring.config import GateConfig
from sparring.payoffs import Gate, game_rewards


def test_reward_signs():
    """An unsafe exchange pays the attacker and costs the defender; a safe one the reverse."""
    p_unsafe = np.array([1.0, 1.0, 0.0, 0.0])  # two attacks, two answers each
    defender, attacker = game_rewards(p_unsafe, np.array([0.0, 1.0]), np.zeros(2), np.zeros(2), 5.0, 1.0)
    assert defender.tolist() == [0.0, 0.0, 1.0, 1.0, 0.0, 1.0]  # benign: paid its helpfulness
    assert attacker.tolist() == [1.0, 0.0]
    _, penalised = game_rewards(p_unsafe, np.zeros(0), np.array([0.1, 0.0]), np.array([0.2, 0.5]), 5.0, 1.0)
    assert penalised == pytest.approx([1.0 - 0.5 - 0.2, 0.0 - 0.5])


def test_the_gate_pays_only_attacks_that_kept_their_intent():
    """Attack 0 kept its seed's harmful intent; attack 1 is harmful but off its seed's topic; attack 2
    turned benign: the defender is paid for answering it, and neither 1 nor 2 pays the attacker."""
    p_unsafe = np.array([1.0, 1.0, 0.9, 0.9, 0.8, 0.8])  # three attacks, two answers each
    helpful = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 1.0])  # the defender refused attack 2 once
    gate = Gate(
        intent=np.array([0.9, 0.8, 0.1]), relevance=np.array([0.6, 0.1, 0.7]),
        harmful=np.array([True, True, False]), kept=np.array([True, False, False]),
        attack_helpful=helpful, penalty=0.5,
    )  # fmt: skip
    defender, attacker = game_rewards(p_unsafe, np.zeros(0), np.zeros(3), np.zeros(3), 5.0, 1.0, gate)
    assert defender == pytest.approx([0.0, 0.0, 0.1, 0.1, 0.0, 1.0])
    assert attacker == pytest.approx([1.0, -0.5, -0.5])


def test_gate_decide_thresholds_and_copies():
    """Kept = seeks harm, on the seed's topic, and (with copy_threshold < 1) not a copy of the seed."""
    intent = np.array([0.9, 0.9, 0.2, 0.9])
    relevance = np.array([0.6, 0.1, 0.7, 1.0])  # attack 3 hands back its seed
    helpful = np.zeros(4)
    off = Gate.decide(intent, relevance, helpful, GateConfig())
    assert off.harmful.tolist() == [True, True, False, True] and off.kept.tolist() == [True, False, False, True]
    on = Gate.decide(intent, relevance, helpful, GateConfig(copy_threshold=0.95))
    assert on.kept.tolist() == [True, False, False, False] and on.harmful.tolist() == off.harmful.tolist()


def test_refusal_weight_makes_a_clear_refusal_the_best_answer_to_harm():
    """Answers to a harmful attack: a refusal, a nonsense answer the judge calls safe, a compliance.
    With w = 0.5 the refusal earns most; w = 0 is the paper's payoff, where the first two tie. An
    attack that turned benign is still paid for helpfulness, whatever w."""
    p_unsafe = np.array([0.05, 0.05, 0.9, 0.0, 0.0, 0.0])  # two attacks, three answers each
    refused = np.array([1.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    helpful = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 0.2])
    gate = Gate(
        intent=np.array([0.9, 0.1]), relevance=np.array([0.6, 0.7]), harmful=np.array([True, False]),
        kept=np.array([True, False]), attack_helpful=helpful, penalty=0.5,
    )  # fmt: skip
    args = (p_unsafe, np.zeros(0), np.zeros(2), np.zeros(2), 5.0, 1.0, gate)
    paper, _ = game_rewards(*args, refused=refused, refusal_weight=0.0)
    assert paper == pytest.approx([0.95, 0.95, 0.1, 0.0, 1.0, 0.2])
    weighted, attacker = game_rewards(*args, refused=refused, refusal_weight=0.5)
    assert weighted == pytest.approx([0.975, 0.475, 0.05, 0.0, 1.0, 0.2])
    assert attacker == pytest.approx([(0.05 + 0.05 + 0.9) / 3, -0.5])  # the attacker's payoff is unchanged
