"""`sparring export`: a run's player as a plain Hugging Face directory that loads without sparring."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from sparring.cli import app
from sparring.errors import SparringError
from sparring.export import export_player
from sparring.runs import load_run_player
from tests.test_game import TINY

# Loads the export with transformers alone: importing sparring in the child is an ImportError.
CHILD = """
import json, sys
sys.modules["sparring"] = None
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder = sys.argv[1]
model = AutoModelForCausalLM.from_pretrained(folder).eval()
tokenizer = AutoTokenizer.from_pretrained(folder)
text = tokenizer.apply_chat_template([{"role": "user", "content": "How do I bake bread?"}], tokenize=False,
                                     add_generation_prompt=True)
ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
with torch.no_grad():
    print(json.dumps({"ids": ids[0].tolist(), "logits": model(ids).logits[0, -1].tolist()}))
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    args = ["train", "-q", *TINY, f"run.dir={root}", "run.name=r", "schedule.defender_steps=1",
            "schedule.attacker_steps=1"]  # fmt: skip  # two defender stage ends: an average of two
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return root / "r"


def _child_logits(folder) -> tuple[list[int], torch.Tensor]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(folder)], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return got["ids"], torch.tensor(got["logits"])


def _our_logits(run, ids: list[int], averaged: bool) -> torch.Tensor:
    loaded = load_run_player(run, "defender", averaged=averaged)
    with torch.no_grad():
        return loaded.model(torch.tensor([ids])).logits[0, -1].float()


@pytest.mark.parametrize("averaged", [False, True])
def test_the_export_loads_without_sparring_and_answers_as_the_run_does(run, tmp_path, averaged):
    args = ["export", str(run), "--out", str(tmp_path / "m")] + (["--averaged"] if averaged else [])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "m"
    assert (folder / "model.safetensors").exists() and not (folder / "adapter_config.json").exists()
    assert {"generation_config.json", "tokenizer_config.json", "README.md"} <= {p.name for p in folder.iterdir()}
    ids, logits = _child_logits(folder)
    assert torch.allclose(logits, _our_logits(run, ids, averaged), atol=1e-4)
    other = _our_logits(run, ids, not averaged)
    assert not torch.allclose(logits, other, atol=1e-4)  # the last iterate and the average are different models
    card = (folder / "README.md").read_text()
    assert "```yaml" in card and "mode: gpo" in card and "from_pretrained" in card


def test_export_errors_name_the_problem(run, tmp_path):
    with pytest.raises(SparringError, match="warm-up"):
        export_player(run, tmp_path / "a", adapter_only=True)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(SparringError, match="not empty"):
        export_player(run, tmp_path / "full")
    with pytest.raises(SparringError, match="not a run directory"):
        export_player(tmp_path, tmp_path / "b")
    bad = CliRunner().invoke(app, ["export", str(run), "--out", str(tmp_path / "c"), "--player", "judge"])
    assert bad.exit_code != 0 and "not a player" in bad.output
