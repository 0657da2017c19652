"""The player on a tiny model: it learns, it is deterministic, and its batching and skips behave."""

from __future__ import annotations

import math

import pytest
import torch

from sparring import rl
from sparring.generation import SamplingConfig, generate
from sparring.models import LoraSettings, ModelConfig, chat_prompt, load_model
from sparring.player import Player, RLConfig


def t(x):
    return torch.tensor(x, dtype=torch.float32)


def rollout(player, prompts, k, max_new_tokens, seed, target):
    many = [p for p in prompts for _ in range(k)]
    gen = generate(player.model, player.tokenizer, many, SamplingConfig(max_new_tokens=max_new_tokens), seed=seed)
    hit = ((gen.response_ids == target) & gen.response_mask.bool()).float()
    scores = hit.sum(1) / gen.response_mask.sum(1).clamp(min=1)
    return player.make_batch(gen, scores, group_size=k), float(scores.mean())


def train_to_emit(algo: str, steps: int, seed: int = 0, micro: int = 32, **overrides):
    loaded = load_model("tiny")
    tok = loaded.tokenizer
    target = tok("A", add_special_tokens=False)["input_ids"][0]
    cfg = RLConfig(
        algo=algo,
        lr=3e-3,
        value_lr=1e-2,
        minibatch_size=32,
        micro_batch_size=micro,
        epochs=2 if algo == "ppo" else 1,
        kl_coef=0.0,
        **overrides,
    )
    torch.manual_seed(seed)
    player = Player(loaded.model, tok, cfg)
    prompts = [chat_prompt(tok, f"prompt {i}") for i in range(8)]
    shuffle = torch.Generator().manual_seed(seed)
    curve = []
    for step in range(steps):
        batch, mean = rollout(player, prompts, 4, 4, seed * 1000 + step, target)
        curve.append(mean)
        if mean > 0.9:
            break
        stats = player.update(batch, shuffle)
        assert not stats.skipped
    return player, curve


@pytest.mark.parametrize("algo", ["ppo", "rloo", "grpo"])
def test_learns_to_emit_a_chosen_token(algo):
    _, curve = train_to_emit(algo, steps=80)
    assert curve[0] < 0.05, "should start at chance (~1/259)"
    assert curve[-1] > 0.9, f"{algo} did not learn: {curve}"


def test_same_seed_same_weights():
    a, _ = train_to_emit("ppo", steps=4, seed=3)
    b, _ = train_to_emit("ppo", steps=4, seed=3)
    for (name, x), (_, y) in zip(a.trainable_state().items(), b.trainable_state().items(), strict=True):
        assert torch.equal(x, y), name


def test_micro_batching_is_gradient_accumulation():
    a, _ = train_to_emit("rloo", steps=2, micro=32)
    b, _ = train_to_emit("rloo", steps=2, micro=4)
    for (name, x), (_, y) in zip(a.trainable_state().items(), b.trainable_state().items(), strict=True):
        assert torch.allclose(x, y, atol=1e-5), name


def test_gradient_checkpointing_changes_memory_not_gradients(monkeypatch):
    monkeypatch.setattr(Player, "_prompt_groups", lambda *_: None)  # checkpointing runs whole sequences: compare like
    a, _ = train_to_emit("rloo", steps=2)
    b, _ = train_to_emit("rloo", steps=2, gradient_checkpointing=True)
    for (name, x), (_, y) in zip(a.trainable_state().items(), b.trainable_state().items(), strict=True):
        assert torch.allclose(x, y, atol=1e-6), name


def test_lora_player_reference_is_the_base_model():
    loaded = load_model(ModelConfig(spec="tiny", lora=LoraSettings(rank=4)))
    player = Player(loaded.model, loaded.tokenizer, RLConfig(algo="ppo", lr=1e-2, kl_coef=0.1))
    assert player.reference is None  # no second copy of the weights
    prompts = [chat_prompt(loaded.tokenizer, "hello")] * 4
    gen = generate(loaded.model, loaded.tokenizer, prompts, SamplingConfig(max_new_tokens=5), seed=0)
    batch = player.make_batch(gen, torch.ones(4))
    # A fresh adapter is the identity: reference, old and sampling log-probs all agree.
    assert torch.allclose(batch.ref_logprobs, batch.old_logprobs, atol=1e-5)
    assert torch.allclose(batch.old_logprobs, gen.logprobs, atol=1e-4)
    stats = player.update(batch)
    after = player.make_batch(gen, torch.ones(4))
    assert not torch.allclose(after.old_logprobs, batch.old_logprobs)  # the adapter moved
    assert torch.equal(after.ref_logprobs, batch.ref_logprobs)  # the reference did not
    assert math.isfinite(stats.grad_norm) and stats.tokens_per_s > 0


def test_non_finite_rewards_skip_the_update():
    loaded = load_model("tiny")
    player = Player(loaded.model, loaded.tokenizer, RLConfig(algo="rloo"))
    prompts = [chat_prompt(loaded.tokenizer, "x")] * 4
    gen = generate(loaded.model, loaded.tokenizer, prompts, SamplingConfig(max_new_tokens=3), seed=0)
    before = {k: v.clone() for k, v in player.trainable_state().items()}
    stats = player.update(player.make_batch(gen, t([1.0, float("nan"), 0.0, 1.0]), group_size=4))
    assert stats.skipped and "non-finite" in stats.extra["skip_reason"]
    assert all(torch.equal(before[k], v) for k, v in player.trainable_state().items())


def test_kl_as_loss_term_pulls_towards_reference():
    """kl_mode='loss' with no reward signal: updates on a batch shrink that batch's KL to the reference."""
    loaded = load_model(ModelConfig(spec="tiny", lora=LoraSettings(rank=4)))
    with torch.no_grad():
        for name, p in loaded.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    player = Player(loaded.model, loaded.tokenizer, RLConfig(algo="rloo", lr=3e-3, kl_coef=1.0, kl_mode="loss"))
    prompts = [chat_prompt(loaded.tokenizer, f"x{i}") for i in range(16)]
    gen = generate(loaded.model, loaded.tokenizer, prompts, SamplingConfig(max_new_tokens=6), seed=0)
    batch = player.make_batch(gen, torch.zeros(16), group_size=4)
    mask = gen.response_mask.float()

    def kl_to_reference() -> float:
        with torch.no_grad():
            return float(rl.masked_mean(rl.k3_kl(player.forward(player.model, gen)[0], batch.ref_logprobs), mask))

    start = kl_to_reference()
    for _ in range(5):
        player.update(batch)
    assert kl_to_reference() < 0.5 * start


def test_non_finite_gradients_skip_the_update():
    loaded = load_model(ModelConfig(spec="tiny", lora=LoraSettings(rank=2)))
    player = Player(loaded.model, loaded.tokenizer, RLConfig(algo="rloo"))
    prompts = [chat_prompt(loaded.tokenizer, "x")] * 4
    gen = generate(loaded.model, loaded.tokenizer, prompts, SamplingConfig(max_new_tokens=3), seed=0)
    batch = player.make_batch(gen, t([1.0, 0.0, 0.0, 1.0]), group_size=4)
    with torch.no_grad():  # poison one adapter weight after the rollout: the backward pass turns NaN
        next(p for n, p in loaded.model.named_parameters() if "lora_A" in n)[0, 0] = float("inf")
    before = {k: v.clone() for k, v in player.trainable_state().items()}
    stats = player.update(batch)
    assert stats.skipped and stats.extra["skip_reason"] == "non-finite gradient"
    after = player.trainable_state()
    assert all(torch.equal(before[k], after[k]) or not torch.isfinite(before[k]).all() for k in before)


def test_ppo_with_a_separate_critic_model():
    """The value head can sit on a separate critic model; it trains (value_lr) while the policy learns."""
    loaded = load_model("tiny")
    critic = load_model("tiny:layers=1,hidden=32,seed=5").model
    tok = loaded.tokenizer
    target = tok("A", add_special_tokens=False)["input_ids"][0]
    player = Player(
        loaded.model,
        tok,
        RLConfig(algo="ppo", lr=3e-3, value_lr=1e-2, minibatch_size=32, micro_batch_size=32, epochs=2, kl_coef=0.0),
        critic=critic,
    )
    assert player.value_head.linear.in_features == 32  # sized to the critic, not the policy (64)
    before = {n: p.clone() for n, p in critic.named_parameters()}
    prompts = [chat_prompt(tok, f"prompt {i}") for i in range(8)]
    shuffle = torch.Generator().manual_seed(0)
    curve = []
    for step in range(80):
        batch, mean = rollout(player, prompts, 4, 4, step, target)
        curve.append(mean)
        if mean > 0.9:
            break
        stats = player.update(batch, shuffle)
    assert curve[-1] > 0.9, curve
    assert any(not torch.equal(before[n], p) for n, p in critic.named_parameters())
    assert math.isfinite(stats.value_loss)
    assert any(k.startswith("critic.") for k in player.trainable_state())


@pytest.mark.parametrize("lora", [True, False])
def test_repeated_prompts_run_once_with_the_same_logprobs_and_gradients(lora):
    """Samples of one prompt share its pass (cache copied per sample): reference log-probs, policy
    log-probs and their gradients equal those of full passes over every sequence."""
    loaded = load_model(ModelConfig(spec="tiny", lora=LoraSettings(rank=4) if lora else None))
    player = Player(loaded.model, loaded.tokenizer, RLConfig(algo="grpo", lr=1e-2), temperature=0.7)
    a, b = (chat_prompt(loaded.tokenizer, q) for q in ("hello", "a longer question than that"))
    gen = generate(loaded.model, loaded.tokenizer, [a, a, a, b, b, b], SamplingConfig(max_new_tokens=6), seed=0)
    player.update(player.make_batch(gen, torch.arange(6.0), group_size=3))  # policy and reference now differ
    assert player._prompt_groups(player.model, gen) is not None
    mask = gen.response_mask.float()

    def passes():
        with torch.no_grad(), player.reference_model() as ref:
            reference = player.forward(ref, gen)[0] * mask
        player.model.train()
        player.model.zero_grad()
        policy = player.forward(player.model, gen)[0] * mask
        (policy.sum() * 0.1).backward()
        grads = [p.grad.clone() for p in player.model.parameters() if p.requires_grad]
        return reference, policy.detach(), grads

    shared = passes()
    player._prompt_groups = lambda *_: None  # every sequence whole
    full = passes()
    assert torch.allclose(shared[0], full[0], atol=1e-5) and torch.allclose(shared[1], full[1], atol=1e-5)
    assert all(torch.allclose(g, h, atol=1e-5, rtol=1e-4) for g, h in zip(shared[2], full[2], strict=True))


def test_minibatches_hold_whole_groups(monkeypatch):
    """The update shuffles groups, not samples, so each prompt's samples share one pass."""
    loaded = load_model(ModelConfig(spec="tiny", lora=LoraSettings(rank=2)))
    player = Player(loaded.model, loaded.tokenizer, RLConfig(algo="grpo", minibatch_size=6, micro_batch_size=6))
    prompts = [chat_prompt(loaded.tokenizer, q) for q in "abcd" for _ in range(3)]
    gen = generate(loaded.model, loaded.tokenizer, prompts, SamplingConfig(max_new_tokens=3), seed=0)
    seen: list[list[int]] = []
    monkeypatch.setattr(player, "_minibatch_step", lambda batch, adv, ret, idx, *_: seen.append(idx.tolist()) or {})
    player.update(player.make_batch(gen, torch.arange(12.0), group_size=3), torch.Generator().manual_seed(1))
    assert sorted(i for idx in seen for i in idx) == list(range(12))
    assert all({i // 3 for i in idx} == {idx[0] // 3, idx[3] // 3} and len(idx) == 6 for idx in seen)
    assert [idx[0] // 3 for idx in seen] != [0, 2]  # groups were shuffled


@pytest.mark.parametrize("coef", [0.0, 1.0])
def test_the_anchor_teaches_its_answers_and_nothing_without_it(coef):
    """PPO-ptx: with equal scores RLOO's advantages are zero, so only the anchor term can move the policy."""
    from sparring.sft import sft_loss

    loaded = load_model("tiny")
    tok = loaded.tokenizer
    torch.manual_seed(0)
    player = Player(loaded.model, tok, RLConfig(algo="rloo", lr=3e-3, kl_coef=0.0, anchor_coef=coef))
    player.anchor = [(chat_prompt(tok, "name a colour"), "blue blue blue")]
    prompts = [chat_prompt(tok, f"prompt {i}") for i in range(4)]
    gen = generate(player.model, tok, [p for p in prompts for _ in range(2)], SamplingConfig(max_new_tokens=4), seed=0)
    batch = player.make_batch(gen, torch.ones(8), group_size=2)
    with torch.no_grad():
        before = float(sft_loss(player.model, tok, player.anchor))
    weights = {k: v.clone() for k, v in player.trainable_state().items()}
    stats = [player.update(batch, torch.Generator().manual_seed(0)) for _ in range(5)][-1]
    with torch.no_grad():
        after = float(sft_loss(player.model, tok, player.anchor))
    if coef:
        assert after < before - 0.1 and stats.extra["anchor_loss"] > 0
    else:
        assert all(torch.equal(weights[k], v) for k, v in player.trainable_state().items())
        assert "anchor_loss" not in stats.extra
