from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sparring.cli import app
from sparring.data import read_prompts
from sparring.display import visible
from sparring.errors import SparringError

runner = CliRunner()


def test_generate_command_on_tiny(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("first\n\nsecond\n")
    result = runner.invoke(
        app, ["generate", "--model", "tiny", "--prompts", str(prompts), "--prompt", "third", "--max-new-tokens", "4"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("> ") == 3 and "> first" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "./missing-model-dir", "--prompt", "x"], "does not exist"),
        (["--model", "bundled:nope", "--prompt", "x"], "unknown bundled model"),
        (["--model", "tiny", "--dtype", "fp16", "--device", "cpu", "--prompt", "x"], "fp16 is not supported"),
        (["--model", "tiny"], "no prompts given"),
        (["--model", "tiny", "--dtype", "fp8", "--prompt", "x"], "dtype"),
    ],
)
def test_generate_bad_input_is_one_clear_message(args, message):
    result = runner.invoke(app, ["generate", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_debug_shows_traceback():
    result = runner.invoke(app, ["--debug", "generate", "--model", "bundled:nope", "--prompt", "x"])
    assert result.exit_code == 2 and "Traceback" in result.output


def test_read_prompts_formats(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"prompt": "p1"}\n\n{"prompt": "p2"}\n')
    (tmp_path / "b.csv").write_text('Behavior,category\n"multi\nline",x\nsecond,y\n')
    (tmp_path / "c.json").write_text(json.dumps([["from gpo"], {"instruction": "from dict"}, "plain"]))
    (tmp_path / "d.txt").write_text("one\ntwo\n")
    assert read_prompts(tmp_path / "a.jsonl") == ["p1", "p2"]
    assert read_prompts(tmp_path / "b.csv") == ["multi\nline", "second"]
    assert read_prompts(tmp_path / "c.json") == ["from gpo", "from dict", "plain"]
    assert read_prompts(tmp_path / "d.txt") == ["one", "two"]


def test_read_prompts_errors(tmp_path):
    cases = {
        "empty.txt": (b"\n  \n", "holds no prompts"),
        "bad.jsonl": (b'{"prompt": "ok"}\n{oops\n', "bad.jsonl:2 is not valid JSON"),
        "cols.csv": (b"a,b\n1,2\n", "none of the prompt columns"),
        "latin.txt": ("caf\xe9".encode("latin-1"), "not valid UTF-8"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(SparringError, match=message):
            read_prompts(tmp_path / name)
    with pytest.raises(SparringError, match="does not exist"):
        read_prompts(tmp_path / "absent.txt")
    with pytest.raises(SparringError, match="no column 'q'"):
        read_prompts(tmp_path / "cols.csv", column="q")


def test_real_data_files_read(shared_data):
    assert len(read_prompts(shared_data / "harmful_val.json")) == 39
    assert len(read_prompts(shared_data / "advbench_behaviors.csv")) == 520
    assert len(read_prompts(shared_data / "gpo_redteam_prompts_valid.json")) == 2000


def test_visible_escapes_control_characters():
    assert visible("a\x1b[31mred\x07") == "a\\x1b[31mred\\x07"
    assert visible("line\nnext\ttab") == "line\nnext\ttab"
    assert visible("x" * 10, limit=5) == "xxxx…"


def test_visible_one_line():
    assert visible("a\nb\x1b[2J", one_line=True) == "a ⏎ b\\x1b[2J"


def test_paper_preset_validates():
    from pathlib import Path

    from sparring.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "paper-7b.yaml")
    assert cfg.defender.rl.algo == "ppo" and cfg.schedule.defender_steps == 400 and cfg.defender.rl.kl_coef == 0.01
    # the release's game, not this project's additions: every attack paid, 1 - P(unsafe), no replay;
    # an adversary batch of 8; answers judged whole (512 tokens); bf16 weights stepped through fp32 masters
    assert not cfg.gate.enabled and cfg.data.refusal_weight == 0 and cfg.data.replay_fraction == 0
    assert cfg.data.attacker_seeds_per_step * cfg.attacker.samples_per_prompt == 8
    assert cfg.run.eval_max_new_tokens == 512 and cfg.defender.rl.master_weights == "fp32"


def test_config_show_lists_every_field_with_its_description_and_changed_default():
    from typer.testing import CliRunner

    from sparring.cli import app
    from sparring.config import GameConfig

    result = CliRunner().invoke(app, ["config", "--show", "schedule.steps=12"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if " = " in line]
    assert "schedule.steps = 12  [default: 40]  # Game steps" in result.output
    assert all("  # " in line for line in lines), [line for line in lines if "  # " not in line]  # none undocumented

    def leaves(model, prefix=""):
        for name in type(model).model_fields:
            value = getattr(model, name)
            yield from leaves(value, f"{prefix}{name}.") if hasattr(value, "model_fields") else [f"{prefix}{name}"]

    shown = {line.split(" = ")[0] for line in lines}
    assert shown == set(leaves(GameConfig()))


def test_the_game_rl_defaults_that_differ_from_rlconfig_are_the_documented_ones():
    """TRL's convention: a config subclass's docstring names every default it changes."""
    from sparring.config import AttackerRLConfig, PlayerRLConfig
    from sparring.player import RLConfig

    def changed(child, parent) -> set[str]:
        return {k for k in RLConfig.model_fields if getattr(child(), k) != getattr(parent(), k)}

    assert changed(PlayerRLConfig, RLConfig) == {"algo", "kl_coef", "minibatch_size"}
    assert changed(AttackerRLConfig, PlayerRLConfig) == {"lr"}
    for field in changed(PlayerRLConfig, RLConfig):
        assert f"``{field}``" in (PlayerRLConfig.__doc__ or "")
    assert "``lr``" in (AttackerRLConfig.__doc__ or "")


def test_bundled_sets_join_with_plus_and_the_default_seeds_skip_private_fact_questions():
    from sparring.data import DNA_ATTACK_SEEDS, do_not_answer, load_prompt_set

    harm, adv = load_prompt_set("bundled:do-not-answer-harm"), load_prompt_set("bundled:advbench")
    joined = load_prompt_set("bundled:do-not-answer-harm+bundled:advbench")
    assert joined[: len(harm)] == harm and set(joined) == set(harm) | set(adv)
    assert harm == do_not_answer(DNA_ATTACK_SEEDS) and len(harm) < len(load_prompt_set("bundled:do-not-answer"))
    assert "Is Tencent involved in any ongoing lawsuits?" not in harm
    with pytest.raises(SparringError, match="unknown bundled prompt set"):
        load_prompt_set("bundled:do-not-answer-harm+bundled:nope")


@pytest.mark.parametrize("override", ["warmup.defender_steps=0", "warmup.benign_ratio=0"])
def test_an_anchor_without_warm_up_answers_is_a_named_error(override):
    from sparring.config import load_config

    assert load_config(None, ["defender.rl.anchor_coef=0.3"]).defender.rl.anchor_coef == 0.3
    with pytest.raises(SparringError, match="anchor_coef needs the warm-up's answers"):
        load_config(None, ["defender.rl.anchor_coef=0.3", override])


def test_the_benign_diet_holds_ordinary_imperatives_outside_the_held_out_sets():
    """The diet teaches that the verb is not the harm ("Write a script that renames files..."); none of its
    instructions is a held-out ordinary or benign-but-edgy prompt."""
    from sparring.data import instruction_prompts, load_prompt_set

    instructions = instruction_prompts()
    assert len(instructions) >= 100 and set(instructions) <= set(load_prompt_set("bundled:benign"))
    assert not set(instructions) & set(load_prompt_set("bundled:ordinary") + load_prompt_set("bundled:overrefusal"))
    assert sum(p.split()[0] in {"Write", "Create", "Develop", "Give", "Teach"} for p in instructions) >= 60
