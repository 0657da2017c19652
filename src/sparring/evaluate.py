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
