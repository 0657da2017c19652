"""RL maths against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from sparring import rl


def t(x):
    return torch.tensor(x, dtype=torch.float32)


def test_masked_whiten_by_hand():
    x, mask = t([[1, 2, 0], [3, 0, 0]]), t([[1, 1, 0], [1, 0, 0]])
    assert torch.allclose(rl.masked_whiten(x, mask), t([[-1, 0, 0], [1, 0, 0]]), atol=1e-6)


def test_kl_penalised_rewards_by_hand():
    rewards = rl.kl_penalised_rewards(
        scores=t([1.0, -2.0]),
        logprobs=t([[-1, -2, 0], [-0.5, 0, 0]]),
        ref_logprobs=t([[-1.5, -1, 0], [-0.5, 0, 0]]),
        mask=t([[1, 1, 0], [1, 0, 0]]),
        beta=0.1,
    )
    assert torch.allclose(rewards, t([[-0.05, 1.1, 0], [-2.0, 0, 0]]))


def test_gae_by_hand_with_padding_in_the_middle():
    adv, ret = rl.gae(t([[0, 1]]), t([[0.5, 0.2]]), t([[1, 1]]), gamma=1.0, lam=0.5)
    # t=1: delta = 1 - 0.2 = 0.8 ; t=0: delta = 0 + 0.2 - 0.5 = -0.3, A = -0.3 + 0.5 * 0.8 = 0.1
    assert torch.allclose(adv, t([[0.1, 0.8]])) and torch.allclose(ret, t([[0.6, 1.0]]))
    # A padded slot in the middle is skipped: same numbers, zeros in the hole.
    adv2, ret2 = rl.gae(
        t([[0, 9, 1], [0, 1, 0]]), t([[0.5, 7, 0.2], [0.5, 0.2, 3]]), t([[1, 0, 1], [1, 1, 0]]), 1.0, 0.5
    )
    assert torch.allclose(adv2, t([[0.1, 0, 0.8], [0.1, 0.8, 0]]))
    assert torch.allclose(ret2, t([[0.6, 0, 1.0], [0.6, 1.0, 0]]))
    # gamma discounts the bootstrap: gamma=0.5, lam=1 -> A1 = 0.8, A0 = 0 + 0.5*0.2 - 0.5 + 0.5*0.8 = 0
    adv3, _ = rl.gae(t([[0, 1]]), t([[0.5, 0.2]]), t([[1, 1]]), gamma=0.5, lam=1.0)
    assert torch.allclose(adv3, t([[0.0, 0.8]]), atol=1e-6)


def test_policy_loss_by_hand():
    old = t([[0.0, 0.0, 0.0, 0.0]])
    new = torch.log(t([[1.5, 1.5, 0.5, 1.0]]))
    adv = t([[1.0, -1.0, 1.0, 5.0]])
    mask = t([[1, 1, 1, 0]])
    loss, clipped, approx_kl = rl.policy_loss(new, old, adv, mask, clip=0.2)
    assert torch.allclose(loss, t([[-1.2, 1.5, -0.5, 0.0]]))
    assert torch.equal(clipped, t([[1, 0, 0, 0]]))
    assert math.isclose(float(approx_kl[0, 0]), 0.5 - math.log(1.5), rel_tol=1e-5)
    assert float(approx_kl[0, 3]) == 0.0


def test_value_loss_by_hand():
    loss, clipped = rl.value_loss(t([[1.0, 0.1]]), t([[0.0, 0.0]]), t([[0.5, 0.5]]), t([[1, 1]]), clip=0.2)
    # slot 0: max((1-0.5)^2, (0.2-0.5)^2) = 0.25 -> 0.125 ; slot 1: inside the clip, (0.1-0.5)^2/2 = 0.08
    assert torch.allclose(loss, t([[0.125, 0.08]])) and torch.equal(clipped, t([[0, 0]]))
    loss, clipped = rl.value_loss(t([[1.0]]), t([[0.0]]), t([[2.0]]), t([[1]]), clip=0.2)
    assert torch.allclose(loss, t([[0.5 * 1.8**2]])) and torch.equal(clipped, t([[1]]))


def test_k3_kl_by_hand():
    value = rl.k3_kl(torch.log(t([0.5])), torch.log(t([0.25])))
    assert math.isclose(float(value), 0.5 - math.log(0.5) - 1, rel_tol=1e-5)
    assert float(rl.k3_kl(t([-1.0]), t([-1.0]))) == 0.0
    # small differences: KL ~ d^2 / 2, which exp(d) - d - 1 loses to cancellation in float32 (gave 0 at 1e-4)
    for d in (1e-4, 1e-3):
        got = float(rl.k3_kl(t([-2.0]), t([-2.0 + d])))
        assert math.isclose(got, math.expm1(d) - d, rel_tol=1e-2), (d, got)


def test_rloo_and_group_normalised_by_hand():
    scores = t([[1, 0, 0, 1], [3, 3, 3, 3]])
    assert torch.allclose(rl.rloo_advantages(scores), t([[2 / 3, -2 / 3, -2 / 3, 2 / 3], [0, 0, 0, 0]]))
    std = math.sqrt(1 / 3)
    g = rl.group_normalised_advantages(scores)
    assert torch.allclose(g[0], t([0.5, -0.5, -0.5, 0.5]) / (std + 1e-4)) and torch.allclose(g[1], t([0, 0, 0, 0]))
    with pytest.raises(ValueError):
        rl.rloo_advantages(t([[1.0]]))
    # a group of equal rewards carries no signal: exactly 0 at any scale (float32 left ~1e-4 .. 1e-2)
    for value in (0.1, 0.7, 10.3):
        same = torch.full((2, 7), value)
        assert torch.equal(rl.group_normalised_advantages(same), torch.zeros(2, 7))
        assert torch.equal(rl.rloo_advantages(same), torch.zeros(2, 7))


def test_explained_variance_and_kl_controller_and_schedule():
    mask = t([[1, 1, 1]])
    assert math.isclose(rl.explained_variance(t([[1, 2, 3]]), t([[1, 2, 3]]), mask), 1.0)
    assert math.isclose(rl.explained_variance(t([[0, 0, 0]]), t([[1, 2, 3]]), mask), 0.0, abs_tol=1e-6)
    ctl = rl.AdaptiveKLController(beta=0.1, target=1.0, horizon=100)
    assert math.isclose(ctl.update(observed_kl=3.0, n_steps=10), 0.1 * (1 + 0.2 * 0.1))
    assert math.isclose(ctl.update(observed_kl=0.5, n_steps=10), 0.1 * 1.02 * (1 - 0.2 * 0.1))
    # the release's invsqrt_scheduler: max(t / w, 0.1) for t < w, then sqrt(w / t)
    f = rl.lr_lambda("inverse_sqrt", warmup=100)
    assert [f(t) for t in (0, 5, 10, 50, 99)] == [0.1, 0.1, 0.1, 0.5, 0.99]
    assert [f(t) for t in (100, 400, 600)] == [1.0, 0.5, math.sqrt(100 / 600)]
    assert rl.lr_lambda("inverse_sqrt", 0)(3) == math.sqrt(1 / 3)
    g = rl.lr_lambda("constant", warmup=4)
    assert [g(t) for t in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert rl.lr_lambda("constant", 0)(100) == 1.0


def test_token_weights_weigh_tokens_or_responses_alike():
    """rl.loss_aggregation: token weighs a long answer by its length; sequence weighs each response once,
    so a 2-token refusal counts as much as a 6-token answer."""
    mask = torch.tensor([[1.0, 1.0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    token = rl.token_weights(mask, 2, mask.sum(), "token")
    sequence = rl.token_weights(mask, 2, mask.sum(), "sequence")
    assert torch.allclose(token.sum(1), torch.tensor([2 / 8, 6 / 8]))
    assert torch.allclose(sequence.sum(1), torch.tensor([0.5, 0.5]))
    assert torch.equal(sequence * (1 - mask), torch.zeros_like(mask))  # padding weighs nothing
    half = rl.token_weights(mask[:1], 2, mask.sum(), "sequence")  # a micro-batch of the same minibatch
    assert torch.allclose(half, sequence[:1])
