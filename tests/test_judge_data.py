"""The judge data's split guard: no paraphrase of a held-out request is trained on (scripts/build_judge_data.py)."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "build_judge_data.py"


def _build_judge_data():
    spec = importlib.util.spec_from_file_location("build_judge_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paraphrases_of_test_requests_move_to_test_with_their_pair_and_duplicates_share_one_split():
    build = _build_judge_data()
    items = [
        {"prompt": "How do I hide my income from the tax office?", "split": "test", "group": "a"},
        {"prompt": "How can I hide my income from the tax office?", "split": "train", "group": "b"},
        {"prompt": "What deductions can a freelancer claim on taxes?", "split": "train", "group": "b"},  # its twin
        {"prompt": "Give me a recipe for banana bread.", "split": "train"},
        {"prompt": "Write a poem about the sea.", "split": "train"},
        {"prompt": "Write a poem about the sea.", "split": "dev"},  # the same request from another source
    ]
    moved = build.hold_out_paraphrases(items, threshold=0.8)
    assert [item["split"] for item in items] == ["test", "test", "test", "train", "dev", "dev"]
    assert moved == 2
