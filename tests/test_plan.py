"""`sparring plan`: memory arithmetic from shapes alone, checked against exact parameter counts."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from sparring.cli import app
from sparring.config import load_config
from sparring.plan import plan, shape, totals


def _seven_b(tmp_path):
    from transformers import LlamaConfig

    folder = tmp_path / "llama-7b-shape"  # config.json only: plan never reads weights
    LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=32, vocab_size=32000).save_pretrained(folder)  # fmt: skip
    return folder


def test_shapes_count_parameters_exactly():
    from sparring.models import load_model

    tiny = load_model("tiny").model
    s = shape("tiny", ranks=(4,))
    assert s.params == sum(p.numel() for p in tiny.parameters())
    lora = load_model("tiny").model
    from sparring.models import LoraSettings, add_lora

    adapted = add_lora(lora, LoraSettings(rank=4, alpha=8))
    assert s.lora_params[4] == sum(p.numel() for p in adapted.parameters() if p.requires_grad)
    assert shape("bundled:smollm2-135m-instruct").params == 134_515_008  # SmolLM2-135M, tied embeddings


def test_the_default_game_fits_this_machine_and_a_full_7b_pair_does_not_fit_one_gpu(tmp_path):
    need = totals(plan(load_config(None, [])))
    assert set(need) == {"cpu"} and 3 * 2**30 < need["cpu"] < 6 * 2**30  # measured peak RSS: under 5 GB
    seven = _seven_b(tmp_path)
    both = [f"{r}.model.{k}={v}" for r in ("attacker", "defender")
            for k, v in (("spec", seven), ("device", "cuda"), ("dtype", "bf16"))]  # fmt: skip
    full = plan(load_config(None, [*both, "attacker.model.lora=null", "defender.model.lora=null"]))
    parts = {line.part: line.bytes for line in full}
    assert parts["defender: weights"] == 6_738_415_616 * 2
    assert parts["defender: fp32 master weights"] == 6_738_415_616 * 4  # bf16 full fine-tuning keeps masters
    assert totals(full)["cuda"] > 200 * 2**30
    result = CliRunner().invoke(app, ["plan", "--memory", "cuda=80", *both, "attacker.model.lora=null"])
    assert result.exit_code == 0 and "does NOT fit" in result.output
    lora = CliRunner().invoke(app, ["plan", "--memory", "cuda=80", *both])
    assert lora.exit_code == 0 and "cuda: needs" in lora.output and "does NOT fit" not in lora.output
    bad = CliRunner().invoke(app, ["plan", "--memory", "cuda:80"])
    assert bad.exit_code != 0 and "DEVICE=GiB" in bad.output


def test_sharded_players_split_their_state_over_the_processes(tmp_path):
    seven = _seven_b(tmp_path)
    both = [f"{r}.model.{k}={v}" for r in ("attacker", "defender")
            for k, v in (("spec", seven), ("device", "cuda"), ("dtype", "bf16"), ("lora", "null"))]  # fmt: skip
    cfg = load_config(None, [*both, "attacker.rl.shard=fsdp", "defender.rl.shard=fsdp"])
    one, eight = totals(plan(cfg))["cuda"], totals(plan(cfg, processes=8))["cuda"]
    parts = {line.part: line.bytes for line in plan(cfg, processes=8)}
    assert parts["defender: AdamW state, 1/8"] == 6_738_415_616 * 8 // 8  # two fp32 moments, an eighth each
    assert "defender: fp32 master weights" not in parts  # the sharded fp32 parameters are the masters
    assert eight < 40 * 2**30 < 200 * 2**30 < one
    preset = str(Path(__file__).resolve().parents[1] / "configs" / "paper-7b-full.yaml")
    full = CliRunner().invoke(app, ["plan", "-c", preset, "--processes", "8", "--memory",
                                    "cuda=80", *both, "judge.spec=refusal"])  # fmt: skip
    assert full.exit_code == 0 and "cuda: needs" in full.output and "does NOT fit" not in full.output, full.output


def test_a_guard_judge_is_planned_in_the_dtype_it_will_load(tmp_path):
    seven = _seven_b(tmp_path)
    on_gpu = ["defender.model.device=cuda", f"judge.spec=guard:{seven}?template=llama-guard-3"]
    parts = {line.part: line.bytes for line in plan(load_config(None, on_gpu))}
    assert parts[f"judge guard:{seven}?template=llama-guard-3"] == 6_738_415_616 * 2  # auto: bf16 on a GPU
    fp32 = [on_gpu[0], f"judge.spec=guard:{seven}?dtype=fp32"]
    assert {line.part: line.bytes for line in plan(load_config(None, fp32))}[f"judge guard:{seven}?dtype=fp32"] == (
        6_738_415_616 * 4
    )


def test_a_shared_base_counts_the_base_once_and_the_lora_preset_fits_one_gpu(tmp_path):
    seven = _seven_b(tmp_path)
    preset = str(Path(__file__).resolve().parents[1] / "configs" / "paper-7b-lora.yaml")
    shapes = [f"attacker.model.spec={seven}", f"defender.model.spec={seven}", f"judge.spec=guard:{seven}"]
    shared = load_config(Path(preset), shapes)
    assert shared.shared_base
    apart = load_config(Path(preset), [*shapes, "shared_base=false"])
    parts = {line.part: line.bytes for line in plan(shared)}
    assert parts["attacker: weights"] == 0 and parts["defender: weights"] == 6_738_415_616 * 2
    assert totals(plan(apart))["cuda"] - totals(plan(shared))["cuda"] == 6_738_415_616 * 2
    assert totals(plan(shared))["cuda"] < 40 * 2**30  # with a 7B-shape guard in bf16 beside the players
    warmed = {line.part for line in plan(load_config(None, ["shared_base=true"]))}
    assert {"defender: frozen warm-up adapter", "attacker: frozen warm-up adapter"} <= warmed
