"""fp32 master weights: a bf16 player's small steps accumulate instead of rounding away (precision.py)."""

from __future__ import annotations

import torch

from sparring.generation import SamplingConfig, generate
from sparring.models import ModelConfig, chat_prompt, load_model
from sparring.player import Player, RLConfig
from sparring.precision import MasterWeights


def _adamw_on(param: torch.Tensor, steps: int, masters: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` AdamW steps at lr 5e-7 with unit gradients; returns (model weights, optimiser's weights)."""
    p = torch.nn.Parameter(param.clone())
    keeper = MasterWeights([p]) if masters else None
    stepped = keeper.params_for_optimizer if keeper else [p]
    opt = torch.optim.AdamW(stepped, lr=5e-7, weight_decay=0.0)
    for _ in range(steps):
        p.grad = torch.ones_like(p)
        if keeper:
            keeper.take_grads()
        opt.step()
        if keeper:
            keeper.write_back()
    return p.detach(), stepped[0].detach()


def test_a_bf16_step_at_the_papers_learning_rate_survives_with_masters_and_not_without():
    """The issue's measurement: 100k bf16 weights ~ N(0, 0.02), lr 5e-7, unit gradients."""
    w = (torch.randn(100_000, generator=torch.Generator().manual_seed(0)) * 0.02).bfloat16()
    plain, _ = _adamw_on(w, 1, masters=False)
    assert (plain != w).float().mean() < 0.05  # without masters one step is rounded away for ~all weights
    model, master = _adamw_on(w, 1, masters=True)
    assert master.dtype == torch.float32 and (master != w.float()).float().mean() > 0.99
    # over many steps the bf16 model follows an fp32 run, rounded, where plain bf16 stays put
    steps = 300
    reference, _ = _adamw_on(w.float(), steps, masters=False)
    model, _ = _adamw_on(w, steps, masters=True)
    plain, _ = _adamw_on(w, steps, masters=False)
    assert (model == reference.bfloat16()).float().mean() > 0.99
    assert (model != w).float().mean() > 0.5 and (plain != w).float().mean() < 0.3


def _bf16_player(masters: str) -> Player:
    loaded = load_model(ModelConfig(spec="tiny", dtype="bf16"))
    torch.manual_seed(0)
    cfg = RLConfig(algo="rloo", lr=5e-7, kl_coef=0.0, whiten_advantages=False, master_weights=masters)
    return Player(loaded.model, loaded.tokenizer, cfg)


def _one_update(player: Player) -> None:
    tok = player.tokenizer
    prompts = [chat_prompt(tok, f"prompt {i}") for i in range(4)]
    gen = generate(player.model, tok, [p for p in prompts for _ in range(2)], SamplingConfig(max_new_tokens=4), seed=0)
    stats = player.update(player.make_batch(gen, torch.tensor([1.0, 0.0] * 4), group_size=2), torch.Generator())
    assert not stats.skipped


def test_a_bf16_player_steps_fp32_masters_and_a_checkpoint_keeps_them(tmp_path):
    player = _bf16_player("fp32")
    stepped = player.optimizer.param_groups[0]["params"]
    assert player.masters is not None and all(p.dtype == torch.float32 for p in stepped)
    before = [p.detach().clone() for p in stepped]
    _one_update(player)
    moved = sum(int((p != b).sum()) for p, b in zip(stepped, before, strict=True))
    assert moved / sum(b.numel() for b in before) > 0.5  # the step is kept, though bf16 cannot show it yet
    player.save_state(tmp_path)
    again = _bf16_player("fp32")
    again.load_state(tmp_path)
    for a, b in zip(again.optimizer.param_groups[0]["params"], stepped, strict=True):
        assert torch.equal(a, b)
    off = _bf16_player("none")
    assert off.masters is None and all(p.dtype == torch.bfloat16 for p in off.optimizer.param_groups[0]["params"])
