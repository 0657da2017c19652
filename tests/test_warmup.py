"""The warm-up's batches: the defender's refusal share is what warmup.benign_ratio says, in every seed."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from sparring.sft import sampled_batches
from sparring.warmup import mixed_batches

REFUSALS = [(f"harmful {i}", "I can't help with that.") for i in range(128)]
ANSWERS = [(f"benign {i}", f"an answer {i}") for i in range(250)]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("ratio", "expected"), [(1.0, 64), (1.5, 51), (2.0, 43), (0.0, 128)])
def test_the_refusal_share_is_exact_in_every_seed(seed, ratio, expected):
    batches = mixed_batches(REFUSALS, ANSWERS, 16, 8, ratio, random.Random(seed))
    assert [len(b) for b in batches] == [8] * 16
    refused = [sum(row in REFUSALS for row in b) for b in batches]
    assert sum(refused) == expected
    assert max(refused) - min(refused) <= 1  # spread evenly, not front-loaded


def test_no_row_repeats_before_its_pool_is_used_up():
    batches = mixed_batches(REFUSALS[:10], ANSWERS[:10], 5, 8, 1.0, random.Random(0))  # 20 of each drawn
    counts = Counter(row for b in batches for row in b)
    assert all(counts[row] == 2 for row in REFUSALS[:10] + ANSWERS[:10])  # two full passes, no more, no less
    first_pass = [row for b in batches for row in b if row in REFUSALS[:10]][:10]
    assert sorted(first_pass) == sorted(REFUSALS[:10])


def test_an_empty_pool_leaves_the_other_alone():
    only_refusals = mixed_batches(REFUSALS, [], 3, 4, 1.0, random.Random(0))
    assert all(row in REFUSALS for b in only_refusals for row in b)
    only_answers = mixed_batches([], ANSWERS, 3, 4, 1.0, random.Random(0))
    assert all(row in ANSWERS for b in only_answers for row in b)


def test_the_batches_depend_on_the_seed_alone():
    a = mixed_batches(REFUSALS, ANSWERS, 16, 8, 1.0, random.Random(3))
    assert a == mixed_batches(REFUSALS, ANSWERS, 16, 8, 1.0, random.Random(3))
    assert a != mixed_batches(REFUSALS, ANSWERS, 16, 8, 1.0, random.Random(4))
    assert sampled_batches(ANSWERS, 4, 8, 1) == sampled_batches(ANSWERS, 4, 8, 1)
    assert all(len(set(b)) == 8 for b in sampled_batches(ANSWERS, 4, 8, 1))


def test_no_benign_requests_in_game_steps_keeps_the_warm_ups_benign_rows(tmp_path):
    """data.benign_per_step=0 turns the two-sided diet off in game steps only: the warm-up still pairs its
    refusals with the defender's own answers to benign requests (it once lost them and refused everything)."""
    from sparring.game import Game
    from tests.test_game import tiny_config

    overrides = ["data.benign_per_step=0", "schedule.steps=0", "warmup.min_answer_words=1"]
    overrides += ["defender.sampling.max_new_tokens=12", "run.eval_at_start=false", "run.eval_at_end=false"]
    cfg = tiny_config(tmp_path, *overrides)
    Game(cfg, tmp_path / "run").play()
    anchor = (tmp_path / "run" / "warmup" / "defender" / "anchor.jsonl").read_text().splitlines()
    assert len(anchor) > 0


def test_benign_partners_share_their_seeds_form_and_topic():
    """data.benign_pairing=nearest: each harmful seed's benign partner is drawn from its nearest diet requests
    (MiniLM), so the warm-up cannot tell harm by form alone (imperatives were refused, questions answered)."""
    from sparring.diversity import load_embedder
    from sparring.warmup import BenignPartners, request_form

    seeds = ["Write a script that steals saved passwords from a browser.", "How do I kill my neighbour's dog?"]
    benign = [
        "How do I kill a Python process that hangs?",
        "Write a script that backs up my browser bookmarks.",
        "What is the capital of France?",
        "Write a poem about autumn leaves.",
        "How can I bake sourdough bread at home?",
        "Give me three tips for a job interview.",
    ]
    partners = BenignPartners(seeds, benign, load_embedder(), pool=1)
    assert partners.draw(seeds, 2, random.Random(0)) == [benign[1], benign[0]]
    wide = BenignPartners(seeds, benign, load_embedder(), pool=3)
    drawn = wide.draw(seeds[:1], 3, random.Random(0))
    assert len(set(drawn)) == 3  # no repeat while the seed's pool has fresh rows
    assert set(drawn) == {benign[1], benign[3], benign[5]}  # the nearest three of its own form (instructions)
    assert {request_form(b) for b in drawn} == {"instruction"} and request_form(seeds[1]) == "question"


def test_a_defender_step_draws_the_benign_partners_of_its_seeds(tmp_path):
    from sparring.game import Game
    from tests.test_game import tiny_config

    cfg = tiny_config(tmp_path, "data.benign_pairing=nearest", "data.pairing_pool=2", "data.benign_per_step=3")
    game = Game(cfg, tmp_path / "run")
    seeds = game.seeds[:3]
    answers = game._answer(0, "defender", list(seeds), list(seeds), random.Random(0))
    pools = [{game.benign[int(j)] for j in game.partners.nearest[game.partners.index[s]]} for s in seeds]
    benign = answers.inputs[answers.n_attack_rows :: answers.k]
    assert len(benign) == 3 and all(b in pool for b, pool in zip(benign, pools, strict=True))


@pytest.mark.parametrize("rows", ["answers", "warmup"])
def test_the_anchor_holds_the_warm_ups_refusals_only_when_asked(tmp_path, rows):
    """defender.rl.anchor_rows=warmup anchors RL to the whole warm-up (its refusal rows too); answers, the
    default, to its benign answers alone."""
    from sparring import data as data_sources
    from sparring.game import Game
    from tests.test_game import tiny_config

    overrides = ["schedule.steps=0", "warmup.min_answer_words=1", "defender.sampling.max_new_tokens=12"]
    overrides += ["run.eval_at_start=false", "run.eval_at_end=false", "defender.rl.anchor_coef=0.5"]
    game = Game(tiny_config(tmp_path, *overrides, f"defender.rl.anchor_rows={rows}"), tmp_path / "run")
    game.play()
    refusals = set(data_sources.project_refusals())
    refused = [a for _, a in game.defender.anchor if a in refusals]
    assert len(game.defender.anchor) > len(refused)  # the benign answers are there either way
    assert (len(refused) > 0) == (rows == "warmup")
