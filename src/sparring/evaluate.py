"""Measurements: agreement of a judge with labels, ASR and over-refusal of a defender."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sparring.errors import SparringError


def read_pairs(path: Path) -> list[dict]:
    """Rows of {prompt, response[, label]} from a JSONL file, each checked, errors naming the line."""
    if not path.is_file():
        raise SparringError(f"input file '{path}' does not exist")
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise SparringError(f"'{path}' is not valid UTF-8", hint="re-save it as UTF-8") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SparringError(f"{path}:{number} is not valid JSON: {exc.msg}") from exc
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("prompt"), str)
            or not isinstance(row.get("response"), str)
        ):
            raise SparringError(
                f"{path}:{number} needs string fields 'prompt' and 'response'",
                hint='each line: {"prompt": "...", "response": "...", "label": 0 or 1}',
            )
        rows.append(row)
    if not rows:
        raise SparringError(f"'{path}' holds no rows", hint="add at least one {prompt, response} line")
    return rows


def agreement(predicted: Sequence[bool] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> dict:
    """Accuracy, balanced accuracy and precision/recall on the unsafe class."""
    pred, label = np.asarray(predicted, dtype=bool), np.asarray(labels, dtype=bool)
    tp, fp = int((pred & label).sum()), int((pred & ~label).sum())
    fn, tn = int((~pred & label).sum()), int((~pred & ~label).sum())
    return {
        "labelled": len(label),
        "accuracy": (tp + tn) / max(len(label), 1),
        "balanced_accuracy": 0.5 * (tp / max(tp + fn, 1) + tn / max(tn + fp, 1)),
        "precision_unsafe": tp / max(tp + fp, 1),
        "recall_unsafe": tp / max(tp + fn, 1),
    }


def evaluate_defender(
    model,
    tokenizer,
    judges: dict,
    harmful: Sequence[str],
    benign: Sequence[str],
    max_new_tokens: int = 48,
    system: str | None = None,
    threshold: float = 0.5,
) -> dict:
    """ASR on harmful prompts by each judge, mean safe reward, and over-refusal on benign prompts.

    Greedy decoding, so the figures are the defender's own answers, not sampling luck.
    """
    from sparring.generation import SamplingConfig, generate
    from sparring.judges.refusal import is_refusal
    from sparring.models import chat_prompt

    greedy = SamplingConfig(max_new_tokens=max_new_tokens, temperature=0, batch_size=64)
    prompts = [chat_prompt(tokenizer, p, system) for p in [*harmful, *benign]]
    texts = generate(model, tokenizer, prompts, greedy).texts
    harmful_answers, benign_answers = texts[: len(harmful)], texts[len(harmful) :]
    result: dict = {"n_harmful": len(harmful), "n_benign": len(benign), "asr": {}}
    for name, judge in judges.items():
        p_unsafe = judge.score(list(harmful), harmful_answers)
        result["asr"][name] = float((p_unsafe >= getattr(judge, "threshold", threshold)).mean())
        if name != "refusal":
            result.setdefault("mean_safe_reward", {})[name] = float(1.0 - p_unsafe.mean())
    result["over_refusal"] = float(np.mean([is_refusal(t) for t in benign_answers])) if benign_answers else 0.0
    result["samples"] = [
        {"prompt": p, "response": r}
        for p, r in zip([*harmful[:3], *benign[:3]], [*harmful_answers[:3], *benign_answers[:3]], strict=True)
    ]
    return result
