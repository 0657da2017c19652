"""The refusal bias on a tiny model: read right through left padding, and held by the defender's RL update."""

from __future__ import annotations

import pytest
import torch

from sparring.generation import SamplingConfig, generate
from sparring.models import chat_prompt, load_model
from sparring.player import Player, RLConfig
from sparring.refusal_bias import OPENINGS, opening_ids, opening_logprob, unpadded
from sparring.sft import sft


def test_opening_logprob_is_the_openings_summed_token_logprobs_whatever_the_padding_or_pass(tiny):
    model, tok = tiny.model, tiny.tokenizer
    prompts = [tok(chat_prompt(tok, p), add_special_tokens=False)["input_ids"] for p in ("hi", "a much longer prompt")]
    openings = opening_ids(tok)
    got = opening_logprob(model, prompts, openings, tok.pad_token_id)
    whole = opening_logprob(model, prompts, openings, tok.pad_token_id, shared_prefix=False)
    assert torch.allclose(got, whole, atol=1e-4), "the shared prompt pass must score as the whole rows do"
    for row, prompt in enumerate(prompts):  # each (prompt, opening) alone, unpadded
        per_opening = []
        for opening in openings:
            ids = torch.tensor([prompt + opening])
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
            targets = ids[0, 1:]
            per_opening.append(logp[torch.arange(len(targets)), targets][-len(opening) :].sum())
        assert torch.allclose(got[row], torch.logsumexp(torch.stack(per_opening), 0), atol=1e-4)


def _drifted_player(coef: float, space: str = "probability", rows: str = "all") -> tuple[Player, list[str]]:
    """A full fine-tune player whose policy was pushed toward refusing after its reference was frozen."""
    loaded = load_model("tiny")
    tok = loaded.tokenizer
    cfg = RLConfig(
        algo="rloo",
        lr=1e-2,
        kl_coef=0.0,
        minibatch_size=16,
        micro_batch_size=4,
        refusal_hold_coef=coef,
        refusal_hold_space=space,
        refusal_hold_rows=rows,
    )
    torch.manual_seed(0)
    player = Player(loaded.model, tok, cfg)
    prompts = [chat_prompt(tok, f"question {i}") for i in range(4)]
    sft(player.model, tok, [[(p, OPENINGS[0]) for p in prompts]] * 25, lr=1e-2)
    return player, prompts


def _per_prompt_gap(player: Player, prompts: list[str]) -> torch.Tensor:
    ids = [player.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    pad = player.tokenizer.pad_token_id
    with torch.no_grad():
        return (
            opening_logprob(player.model, ids, player.openings, pad).exp()
            - opening_logprob(player.reference, ids, player.openings, pad).exp()
        )


def _gap(player: Player, prompts: list[str]) -> float:
    return float(_per_prompt_gap(player, prompts).mean())  # mean now - mean ref = mean of the per-prompt gaps


def _update_with_equal_scores(player: Player, prompts: list[str]):
    many = [p for p in prompts for _ in range(4)]
    gen = generate(player.model, player.tokenizer, many, SamplingConfig(max_new_tokens=3), seed=0)
    batch = player.make_batch(gen, torch.full((len(many),), 0.5), group_size=4)  # no advantage: the hold alone
    return player.update(batch, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("space", ["probability", "log"])
def test_the_refusal_hold_pulls_the_mean_refusal_opening_back_to_the_reference(space):
    player, prompts = _drifted_player(coef=10.0, space=space)
    before = _gap(player, prompts)
    assert before > 0.2, f"the SFT should have raised P(refusal opening) well above the reference's: {before}"
    stats = None
    for _ in range(3):
        stats = _update_with_equal_scores(player, prompts)
    assert stats is not None and "refusal_hold_gap" in stats.extra
    after = _gap(player, prompts)
    assert after < before / 2, f"the hold should close most of the gap: {before:.3f} -> {after:.3f}"


def test_the_benign_only_hold_pulls_back_the_marked_groups_and_needs_the_marks():
    player, prompts = _drifted_player(coef=10.0, rows="benign")
    with pytest.raises(ValueError, match="hold_groups"):
        _update_with_equal_scores(player, prompts)  # the game marks which groups are benign; nothing marked, no update
    player.hold_groups = [False, False, True, True]  # the last two prompts play the benign diet
    before = _per_prompt_gap(player, prompts)
    for _ in range(3):
        stats = _update_with_equal_scores(player, prompts)
    after = _per_prompt_gap(player, prompts)
    assert stats.extra["refusal_hold_gap"] != 0.0
    assert after[2:].mean() < before[2:].mean() / 2, f"the held prompts' gap should close: {before} -> {after}"


def test_without_the_hold_the_same_updates_leave_the_gap():
    player, prompts = _drifted_player(coef=0.0)
    before = _gap_with_openings(player, prompts)
    for _ in range(3):
        stats = _update_with_equal_scores(player, prompts)
        assert "refusal_hold_gap" not in stats.extra
    assert abs(_gap_with_openings(player, prompts) - before) < 0.05


def _gap_with_openings(player: Player, prompts: list[str]) -> float:
    player.openings = opening_ids(player.tokenizer)  # the hold is off, so the player did not tokenise them
    return _gap(player, prompts)


def test_unpadded_drops_left_padding():
    ids = torch.tensor([[0, 0, 5, 6], [7, 8, 9, 1]])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert unpadded(ids, mask) == [[5, 6], [7, 8, 9, 1]]
