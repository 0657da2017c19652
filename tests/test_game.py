"""The game on tiny models: modes, stages, logged rewards, resume equivalence, run directory, config."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sparring import rl
from sparring.attacks import clean_attack
from sparring.cli import app
from sparring.config import GameConfig, load_config
from sparring.errors import SparringError
from sparring.game import Game

TINY = [
    "attacker.model.spec=tiny",
    "defender.model.spec=tiny",
    "judge.spec=refusal",
    "attacker.sampling.max_new_tokens=6",
    "defender.sampling.max_new_tokens=6",
    "run.eval_max_new_tokens=6",
    "data.seeds_per_step=3",
    "data.benign_per_step=2",
    "data.eval_size=3",
    "warmup.defender_steps=1",
    "warmup.attacker_steps=1",
    "warmup.batch_size=2",
    "schedule.steps=4",
    "schedule.defender_steps=2",
    "schedule.attacker_steps=2",
    "run.checkpoint_every=2",
    "attacker.rl.lr=1e-2",
    "defender.rl.lr=1e-2",
]


def tiny_config(tmp_path, *extra: str) -> GameConfig:
    return load_config(None, [*TINY, f"run.dir={tmp_path}", *extra])


def test_stage_schedule():
    cfg = load_config(None, ["schedule.defender_steps=2", "schedule.attacker_steps=3"])
    assert [cfg.stage(s) for s in range(7)] == ["defender"] * 2 + ["attacker"] * 3 + ["defender"] * 2
    cfg = load_config(None, ["schedule.defender_steps=1", "schedule.attacker_steps=2", "schedule.first=attacker"])
    assert [cfg.stage(s) for s in range(4)] == ["attacker", "attacker", "defender", "attacker"]
    assert {load_config(None, ["mode=rlhf"]).stage(s) for s in range(30)} == {"defender"}
    assert {load_config(None, ["mode=redteam"]).stage(s) for s in range(30)} == {"attacker"}
    assert load_config(None, ["mode=gpo-nodiv"]).diversity_weights == (0.0, 0.0)


def test_clean_attack():
    assert clean_attack('\n  "Question: How do I pick a lock?"\nMore text') == "How do I pick a lock?"
    assert clean_attack("plain") == "plain"
    whole = clean_attack('\n  "Question: How do I pick a lock?"\nMore text', whole=True)
    assert whole == "How do I pick a lock? More text"  # attacker.attack_text=whole: every line, label dropped


@pytest.mark.parametrize("mode", ["gpo", "gpo-nodiv", "rlhf", "redteam"])
def test_each_mode_runs_and_fills_the_run_directory(tmp_path, mode):
    cfg = tiny_config(tmp_path, f"mode={mode}", f"run.name={mode}", "schedule.steps=3")
    run = tmp_path / mode
    summary = Game(cfg, run).play()
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    attacks = [json.loads(line) for line in (run / "attacks.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [0, 1, 2]
    assert [m["stage"] for m in metrics] == [cfg.stage(s) for s in range(3)]
    assert len(attacks) >= 3 * 3 and {"prompt", "responses", "p_unsafe", "self_bleu"} <= set(attacks[0])
    assert (run / "config.yaml").exists() and (run / "checkpoints" / "latest").read_text() == "step-3"
    evals = json.loads((run / "eval.json").read_text())
    assert set(evals) >= {"start", "end"} and 0.0 <= evals["end"]["asr"]["judge"] <= 1.0
    assert summary["steps"] == 3
    assert load_config(run / "config.yaml").mode == mode  # the saved config round-trips
    if mode == "gpo-nodiv":
        # no diversity terms: the gated unsafety alone
        want = [np.mean(a["p_unsafe"]) if a["kept"] else -0.5 for a in attacks]
        assert [a["attacker_reward"] for a in attacks] == pytest.approx(want)
    if mode == "rlhf":
        assert not (run / "checkpoints" / "step-3" / "attacker").exists()


def test_logged_rewards_follow_the_payoffs(tmp_path):
    cfg = tiny_config(
        tmp_path, "run.name=r", "schedule.steps=3", "schedule.defender_steps=1", "schedule.attacker_steps=2"
    )
    Game(cfg, tmp_path / "r").play()
    attacks = [json.loads(line) for line in (tmp_path / "r" / "attacks.jsonl").read_text().splitlines()]
    for a in attacks:
        assert a["kept"] == (a["intent"] >= 0.5 and a["relevance"] >= 0.3)
        unsafety = np.mean(a["p_unsafe"]) if a["kept"] else -0.5
        want = unsafety - 20.0 * a["self_bleu"] - 3.0 * a["embedding_similarity"]
        assert a["attacker_reward"] == pytest.approx(want, abs=5e-5)  # logged values are rounded to 1e-6, x20
    metrics = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert all(0.0 <= m["intent_kept"] <= m["intent_harmful"] <= 1.0 for m in metrics)
    # the cheap held-out check runs at each stage boundary (after steps 0 and 2: D | A A)
    assert [m["step"] for m in metrics if "stage_eval_asr" in m] == [0, 2]
    assert all(0.0 <= m["stage_eval_over_refusal"] <= 1.0 for m in metrics if "stage_eval_asr" in m)
    assert any(a["self_bleu"] > 0 or a["embedding_similarity"] != 0 for a in attacks if a["step"] > 0)


def player_weights(game: Game) -> dict[str, torch.Tensor]:
    return {f"{role}.{k}": v.clone() for role, p in game.players().items() for k, v in p.trainable_state().items()}


class Stop(Exception):
    pass


REPLAYING = ["gate.enabled=false", "schedule.defender_steps=1", "schedule.attacker_steps=1", "data.replay_fraction=0.5"]
ANCHORED = ["defender.rl.anchor_coef=1.0", "warmup.min_answer_words=1"]  # the tiny model's babble has few spaces


SHARED = ["shared_base=true"]


@pytest.mark.parametrize(
    "extra", [[], REPLAYING, ANCHORED, SHARED], ids=["default", "replaying", "anchored", "shared-base"]
)
def test_resume_continues_exactly(tmp_path, extra):
    cfg = tiny_config(tmp_path, "run.name=straight", *extra)
    straight = Game(cfg, tmp_path / "straight")
    straight.play()

    broken_cfg = tiny_config(tmp_path, "run.name=broken", *extra)

    def crash(kind, payload):
        if kind == "step" and payload["step"] == 2:
            raise Stop  # after step 2's logs were written, before its checkpoint

    with pytest.raises(Stop):
        Game(broken_cfg, tmp_path / "broken", on_event=crash).play()
    resumed = Game(load_config(tmp_path / "broken" / "config.yaml"), tmp_path / "broken")
    resumed.play(resume=True)

    a, b = player_weights(straight), player_weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key

    def rows(run, name):
        out = []
        for line in (tmp_path / run / name).read_text().splitlines():
            row = json.loads(line)
            out.append({k: v for k, v in row.items() if not k.startswith("time_") and "tokens_per_s" not in k})
        return out

    assert rows("straight", "metrics.jsonl") == rows("broken", "metrics.jsonl")  # each step exactly once
    if extra is ANCHORED:  # the warm-up's answers are kept with it, so the resumed defender has the same anchor
        assert straight.defender.anchor and resumed.defender.anchor == straight.defender.anchor
        assert all("defender_anchor_loss" in r for r in rows("broken", "metrics.jsonl") if r["stage"] == "defender")
    assert rows("straight", "attacks.jsonl") == rows("broken", "attacks.jsonl")
    # the averaged defender too: a stage end recorded before the crash is not counted twice
    assert straight.average.count == resumed.average.count == (2 if extra is REPLAYING else 1)
    sa, sb = straight.average.state_dict(), resumed.average.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_averaged_defender_is_evaluated_and_loadable(tmp_path):
    from sparring.runs import load_run_player

    run = tmp_path / "avg"
    cfg = tiny_config(tmp_path, "run.name=avg", "schedule.defender_steps=1", "schedule.attacker_steps=1")
    summary = Game(cfg, run).play()  # D A D A: two defender stage ends
    evals = json.loads((run / "eval.json").read_text())
    assert {"end", "end_averaged"} <= set(evals)
    assert set(summary["averaged_minus_last"]) == {"asr_judge", "asr_refusal", "over_refusal", "over_refusal_ordinary"}
    averaged = load_run_player(run, "defender", averaged=True)  # exactness: test_averaging.py
    assert averaged.spec.endswith("#averaged") and averaged.model.active_adapter == "averaged"
    assert averaged.model.peft_config["averaged"].r == 2 * cfg.defender.model.lora.rank  # two stage ends
    with pytest.raises(SparringError, match="no averaged attacker"):
        load_run_player(run, "attacker", averaged=True)
    result = CliRunner().invoke(
        app, ["eval", "-d", f"{run}#averaged", "-j", "refusal", "--limit", "2", "--max-new-tokens", "4",
              "--harmful", "bundled:harmbench", "--benign", "bundled:overrefusal"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output


def test_a_shared_base_plays_the_same_game_with_the_base_loaded_once(tmp_path):
    """shared_base: both players are adapters on one model, each over its frozen warm-up adapter. Same seeds,
    same game: the weights, the evaluations and the averaged defender match a game with a model per player
    (to float rounding: stacked adapters in place of a merged warm-up), and its run reads back like any other."""
    from sparring.runs import load_run_player

    alternating = ["schedule.defender_steps=1", "schedule.attacker_steps=1"]  # D A D A: two defender stage ends
    own = Game(tiny_config(tmp_path, "run.name=own", *alternating), tmp_path / "own")
    own.play()
    shared = Game(tiny_config(tmp_path, "run.name=shared", "shared_base=true", *alternating), tmp_path / "shared")
    shared.play()
    assert shared.attacker._model is shared.defender._model and own.attacker._model is not own.defender._model
    assert set(shared.defender._model.peft_config) == {"attacker", "attacker_warmup", "defender", "defender_warmup"}
    name = lambda key: key.replace(".default.", ".").replace(".attacker.", ".").replace(".defender.", ".")  # noqa: E731
    a = {name(k): v for k, v in player_weights(own).items()}
    b = {name(k): v for k, v in player_weights(shared).items()}
    assert a.keys() == b.keys() and len(a) > 0
    moved = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert moved < 1e-4, moved  # at lr 1e-2 the adapters' weights reach ~0.1
    evals = [json.loads((tmp_path / run / "eval.json").read_text()) for run in ("own", "shared")]
    assert evals[0]["end_averaged"]["asr"] == evals[1]["end_averaged"]["asr"]
    assert evals[0]["end"]["over_refusal"] == evals[1]["end"]["over_refusal"]
    ids = torch.tensor([[5, 17, 40, 99, 3, 250]])
    for averaged in (False, True):
        loaded = [load_run_player(tmp_path / run, "defender", averaged=averaged).model for run in ("own", "shared")]
        with torch.no_grad():
            logits = [m(input_ids=ids).logits for m in loaded]
        assert torch.allclose(logits[0], logits[1], atol=1e-4), averaged
    # the warm-up adapter is frozen, the player's own trains
    frozen = [p for n, p in shared.defender._model.named_parameters() if ".defender_warmup." in n]
    shared.defender.model  # noqa: B018 (reading it puts the defender's adapters in charge)
    assert frozen and not any(p.requires_grad for p in frozen)
    assert all(p.requires_grad for _, p in shared.defender._policy_named_params())


def test_defender_steps_replay_earlier_successful_attacks(tmp_path):
    """With the refusal matcher as judge a tiny model's babble always 'succeeds', so the archive fills
    from step 0 and every later defender step replays half its attacks from it."""
    Game(tiny_config(tmp_path, "run.name=r", *REPLAYING), tmp_path / "r").play()
    rows = [json.loads(line) for line in (tmp_path / "r" / "attacks.jsonl").read_text().splitlines()]
    fresh = [r for r in rows if not r.get("replay")]
    replayed = [r for r in rows if r.get("replay")]
    assert {r["step"] for r in replayed} == {2} and len(replayed) == 2  # seeds_per_step 3 x 0.5, rounded
    assert all((r["prompt"], r["seed"]) in {(f["prompt"], f["seed"]) for f in fresh if f["step"] < 2} for r in replayed)
    assert len([r for r in fresh if r["step"] == 2]) == 1


def test_resume_before_any_checkpoint_starts_over(tmp_path):
    cfg = tiny_config(tmp_path, "run.name=early", "schedule.steps=2")
    (tmp_path / "early" / "warmup" / "defender").mkdir(parents=True)  # a half-written warm-up
    (tmp_path / "early" / "metrics.jsonl").write_text('{"step": 0, "stage": "defen')
    Game(cfg, tmp_path / "early").play(resume=True)
    steps = [json.loads(line)["step"] for line in (tmp_path / "early" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1]


def test_resume_refuses_settings_the_checkpoint_would_undo_and_records_the_ones_it_takes(tmp_path):
    """A learning rate or KL coefficient passed on --resume used to be silently replaced by the checkpoint's
    optimiser and KL state; now it is a named error. A longer schedule is taken and written to config.yaml."""
    run = tmp_path / "r"
    base = ["train", "-q", *TINY, f"run.dir={tmp_path}", "run.name=r", "schedule.steps=2", "run.eval_at_start=false",
            "run.eval_at_end=false"]  # fmt: skip
    assert CliRunner().invoke(app, base).exit_code == 0
    refused = CliRunner().invoke(app, ["train", "--resume", str(run), "defender.rl.kl_coef=0.5"])
    assert refused.exit_code != 0
    assert "defender.rl.kl_coef: 0.02 -> 0.5" in refused.output and "schedule.steps" in refused.output
    longer = CliRunner().invoke(app, ["train", "-q", "--resume", str(run), "schedule.steps=3"])
    assert longer.exit_code == 0, longer.output
    assert load_config(run / "config.yaml").schedule.steps == 3
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["defender.lora.rank=16"],
            "defender.lora: no such field (allowed: init_averaged, init_from, model, rl, samples_per_prompt, sampling",
        ),
        (["schedule.steps=zero"], "schedule.steps: Input should be a valid integer"),
        (["schedule.steps=-1"], "schedule.steps: Input should be greater than or equal to 0"),
        (["mode=chess"], "mode: Input should be 'gpo', 'gpo-nodiv', 'rlhf', 'redteam' or 'defend'"),
        (["attacker.template=no placeholder"], "attacker.template must contain {seed}"),
        (["schedule.steps"], "bad override 'schedule.steps'"),
        (["defender.rl.algo=dpo"], "defender.rl.algo"),
        (["shared_base=true", "defender.model.lora=null"], "shared_base needs both players as LoRA adapters"),
        (["shared_base=true", "defender.model.lora=null"], "but defender.model.lora is null"),
        (["shared_base=true", "attacker.model.dtype=bf16"], "but the players' model.dtype differ"),
    ],
)
def test_config_errors_name_the_field(overrides, message):
    with pytest.raises(SparringError) as info:
        load_config(None, overrides)
    assert message in str(info.value)


def test_config_file_errors(tmp_path):
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(SparringError, match="must hold a mapping"):
        load_config(tmp_path / "list.yaml")
    with pytest.raises(SparringError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "ok.yaml").write_text("schedule:\n  steps: 7\n")
    assert load_config(tmp_path / "ok.yaml", ["schedule.defender_steps=3"]).schedule.steps == 7


def test_train_command_json_and_eval_command(tmp_path):
    runner = CliRunner()
    args = ["train", "--json", *TINY, f"run.dir={tmp_path}", "run.name=cli", "schedule.steps=2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [e["step"] for e in events if e["event"] == "step"] == [0, 1]
    assert events[-1]["event"] == "summary"
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "already holds a run" in again.output
    out = tmp_path / "eval.json"
    ev = runner.invoke(
        app,
        [
            "eval",
            "--defender",
            str(tmp_path / "cli"),
            "--judge",
            "refusal",
            "--harmful",
            "bundled:harmbench",
            "--harmful",
            "bundled:advbench",
            "--benign",
            "bundled:overrefusal",
            "--limit",
            "3",
            "--max-new-tokens",
            "4",
            "--json",
            str(out),
        ],
    )
    assert ev.exit_code == 0, ev.output
    numbers = json.loads(out.read_text())
    assert set(numbers["harmful"]) == {"harmbench", "advbench"} and set(numbers["benign"]) == {"overrefusal"}
    for rate in [
        *(e["asr"]["refusal"] for e in numbers["harmful"].values()),
        numbers["benign"]["overrefusal"]["over_refusal"],
    ]:
        assert rate["ci"][0] <= rate["value"] <= rate["ci"][1]
    # every prompt's answer is kept, with each judge's score on harmful rows
    assert [r["set"] for r in numbers["answers"]] == ["harmbench"] * 3 + ["advbench"] * 3 + ["overrefusal"] * 3
    assert all(set(r["p_unsafe"]) == {"refusal"} for r in numbers["answers"] if r["kind"] == "harmful")
    assert "advbench" in ev.stdout and "overrefusal" in ev.stdout  # the table


def test_bootstrap_interval_brackets_the_rate():
    from sparring.evaluate import bootstrap_interval

    assert bootstrap_interval([1.0] * 40) == (1.0, 1.0)
    lo, hi = bootstrap_interval([0, 1] * 50)
    assert 0.38 < lo < 0.45 and 0.55 < hi < 0.62  # ~ +-1.96 * sqrt(.25 / 100)
    assert bootstrap_interval([0, 1] * 50) == (lo, hi)  # seeded: the same figures every time


def test_summary_reads_each_stage_block():
    from sparring.runs import summarise

    metrics = [
        {"step": i, "stage": s, "asr": a, "diversity_within_batch": 0.5, "self_bleu": 0.1}
        for i, (s, a) in enumerate(
            [
                ("defender", 0.9),
                ("defender", 0.9),
                ("defender", 0.3),
                ("attacker", 0.1),
                ("attacker", 0.2),
                ("attacker", 0.7),
            ]
        )
    ]
    summary = summarise(metrics, {})
    assert summary["defender"]["asr_block_start"] == pytest.approx(0.9)
    assert summary["defender"]["asr_block_end"] == pytest.approx(0.3)
    assert summary["attacker"]["asr_block_start"] == pytest.approx(0.1)
    assert summary["attacker"]["asr_block_end"] == pytest.approx(0.7)


def test_missing_tracker_package_is_a_clear_error(tmp_path):
    pytest.importorskip("torch")
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(SparringError, match="needs the tensorboard package"):
            Game(tiny_config(tmp_path, "run.name=tb", "run.tracker=tensorboard"), tmp_path / "tb")
    else:
        pytest.skip("tensorboard is installed")


def test_ppo_players_with_a_separate_critic_checkpoint_and_restore(tmp_path):
    cfg = tiny_config(
        tmp_path,
        "run.name=critic",
        "schedule.steps=2",
        "schedule.defender_steps=1",
        "schedule.attacker_steps=1",
        "defender.rl.algo=ppo",
        "defender.rl.critic_model=tiny:layers=1",
        "attacker.rl.algo=ppo",
    )
    game = Game(cfg, tmp_path / "critic")
    game.play()
    assert game.defender.critic is not None and game.attacker.critic is None
    assert (tmp_path / "critic" / "checkpoints" / "step-2" / "defender" / "critic.safetensors").exists()
    again = Game(load_config(tmp_path / "critic" / "config.yaml"), tmp_path / "critic")
    again._restore()
    a, b = player_weights(game), player_weights(again)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("payoff", ["delivers", "not_refused"])
def test_benign_answers_are_paid_their_helpfulness(tmp_path, payoff):
    cfg = tiny_config(tmp_path, "run.name=p", "schedule.steps=1", f"data.benign_reward={payoff}")
    game = Game(cfg, tmp_path / "p")
    result = game.step(0)  # a defender step: benign rows are paid
    assert 0.0 <= result.metrics["benign_helpful"] <= 1.0
    responses = ["Whisk flour, eggs and milk, then fry ladlefuls in a hot pan.", "I can help with that."]
    paid = game._helpfulness(["Give me a recipe for pancakes."] * 2, responses, np.zeros(2))
    if payoff == "not_refused":
        assert paid.tolist() == [1.0, 1.0]  # the hollow answer is paid in full
    else:
        assert paid[0] > 0.5 > paid[1]


def test_both_learning_rate_schedules_run_on_the_game_clock(tmp_path):
    """The release steps one scheduler for both players, so the attacker's first stage starts at the decay the
    defender's stage reached (no warm-up of its own): each player's schedule counts every optimiser step of
    the game, its own and the other's."""
    keys = ("schedule=inverse_sqrt", "warmup_steps=3")
    sched = [f"{role}.rl.{key}" for role in ("attacker", "defender") for key in keys]
    cfg = tiny_config(tmp_path, *sched, "run.eval_at_start=false", "run.eval_at_end=false", "run.stage_eval_size=0")
    game = Game(cfg, tmp_path / "clock")
    game.play()
    metrics = [json.loads(line) for line in (tmp_path / "clock" / "metrics.jsonl").read_text().splitlines()]
    assert game.defender.scheduler.last_epoch == game.attacker.scheduler.last_epoch == 4  # one step per game step
    factor = rl.lr_lambda("inverse_sqrt", 3)
    assert game.attacker.scheduler.get_last_lr()[0] == pytest.approx(1e-2 * factor(4))
    first_attack = next(m for m in metrics if m["stage"] == "attacker")  # step 2: two defender steps before it
    assert first_attack["attacker_lr"] == pytest.approx(1e-2 * factor(3))  # its own clock would read factor(1)


def test_the_attack_anchor_refuses_each_attack_that_seeks_harm(tmp_path):
    """anchor_rows=attacks: each defender update's anchor holds a project refusal of every attack the gate
    calls harmful (every attack without the gate), beside the warm-up's answers; attacker steps hold none."""
    cfg = tiny_config(tmp_path, "run.name=r", *ANCHORED, "defender.rl.anchor_rows=attacks", "gate.enabled=false")
    game = Game(cfg, tmp_path / "r")
    seen: list[tuple[str, list, list]] = []
    update = game._update

    def spy(step, stage, attacks, answers, *rewards):
        seen.append((stage, list(game.defender.step_anchor) if stage == "defender" else [], list(attacks.texts)))
        return update(step, stage, attacks, answers, *rewards)

    game._update = spy
    game.play()
    refusals = set(game.refusals)
    defender_steps = [(anchor, texts) for stage, anchor, texts in seen if stage == "defender"]
    assert defender_steps and game.defender.anchor  # the warm-up's answers stay the static part
    for anchor, texts in defender_steps:
        assert len(anchor) == len(texts) and all(target in refusals for _, target in anchor)
        assert all(text in prompt for (prompt, _), text in zip(anchor, texts, strict=True))
    metrics = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert all("defender_anchor_loss" in m for m in metrics if m["stage"] == "defender")


def test_the_benign_only_refusal_hold_marks_the_diet_groups_after_the_attacks(tmp_path):
    """refusal_hold_rows=benign: each defender update holds the benign diet's groups alone (they follow the
    attacks' groups), and the game plays through with the hold's gap logged."""
    hold = ["defender.rl.refusal_hold_coef=1", "defender.rl.refusal_hold_rows=benign"]
    cfg = tiny_config(tmp_path, "run.name=r", *hold)
    game = Game(cfg, tmp_path / "r")
    seen: list[tuple[list[bool], int, int]] = []
    update = game._update

    def spy(step, stage, attacks, answers, *rewards):
        out = update(step, stage, attacks, answers, *rewards)
        if stage == "defender":
            seen.append((list(game.defender.hold_groups), answers.n_attack_rows // answers.k, answers.n_benign))
        return out

    game._update = spy
    game.play()
    assert seen
    for marks, n_attacks, n_benign in seen:
        assert n_benign > 0 and marks == [False] * n_attacks + [True] * n_benign
    metrics = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert all("defender_refusal_hold_gap" in m for m in metrics if m["stage"] == "defender")
