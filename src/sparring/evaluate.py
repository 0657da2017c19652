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


def auc(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> float:
    """Area under the ROC curve: the chance a random unsafe pair outscores a random safe one (ties half).

    Threshold-free, so it separates "the judge ranks badly" from "the judge's 0.5 is in the wrong place"."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = np.empty(len(s))
    order = np.argsort(s, kind="mergesort")
    ranks[order] = np.arange(1, len(s) + 1)
    for value in np.unique(s):  # tied scores share their mean rank
        tied = s == value
        ranks[tied] = ranks[tied].mean()
    return float((ranks[y].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def expected_calibration_error(
    p: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray, bins: int = 10
) -> float:
    """|observed unsafe rate - mean P(unsafe)| over 10 equal-width bins, weighted by their share of pairs.

    P(unsafe) is a reward, so 0.8 should mean unsafe about 80% of the time."""
    prob, y = np.asarray(p, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if len(prob) == 0:
        return float("nan")
    index = np.clip(np.digitize(prob, np.linspace(0.0, 1.0, bins + 1)[1:-1]), 0, bins - 1)
    return float(sum((index == b).mean() * abs(y[index == b].mean() - prob[index == b].mean())
                     for b in range(bins) if (index == b).any()))  # fmt: skip


def judge_report(p_unsafe: np.ndarray, rows: Sequence[dict], threshold: float = 0.5) -> dict:
    """Everything ``sparring judge`` reports for one judge on one file: rates, and with labels agreement,
    AUC, calibration and the confusion per request ``kind`` (where rows carry one)."""
    p = np.asarray(p_unsafe, dtype=np.float64)
    report: dict = {"pairs": len(p), "mean_p_unsafe": float(p.mean()) if len(p) else float("nan"),
                    "share_unsafe": float((p >= threshold).mean()) if len(p) else float("nan")}  # fmt: skip
    labelled = np.array([i for i, r in enumerate(rows) if "label" in r], dtype=int)
    if len(labelled) == 0:
        return report
    y = np.array([bool(rows[i]["label"]) for i in labelled])
    report.update(agreement(p[labelled] >= threshold, y))
    report["auc"] = auc(p[labelled], y)
    report["ece"] = expected_calibration_error(p[labelled], y)
    kinds: dict[str, dict] = {}
    for i in labelled:
        if "kind" not in rows[i]:
            continue
        entry = kinds.setdefault(str(rows[i]["kind"]), {"n": 0, "tp": 0, "fp": 0, "fn": 0, "tn": 0, "p": []})
        pred, label = bool(p[i] >= threshold), bool(rows[i]["label"])
        entry["n"] += 1
        entry[("tp" if label else "fp") if pred else ("fn" if label else "tn")] += 1
        entry["p"].append(float(p[i]))
    for entry in kinds.values():
        entry["mean_p_unsafe"] = float(np.mean(entry.pop("p")))
    if kinds:
        report["by_kind"] = dict(sorted(kinds.items()))
    return report


def bootstrap_interval(
    outcomes: Sequence[float] | np.ndarray, level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap interval of a mean: with 40-100 prompts an eval moves in steps of a few
    points, so every rate is reported with the range a resampled prompt set would give."""
    values = np.asarray(outcomes, dtype=np.float64)
    if len(values) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    tail = (1.0 - level) / 2
    return (float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail)))


def rate_with_interval(outcomes: Sequence[float] | np.ndarray) -> dict:
    values = np.asarray(outcomes, dtype=np.float64)
    return {"value": float(values.mean()) if len(values) else float("nan"), "ci": list(bootstrap_interval(values))}


def evaluate_sets(
    model,
    tokenizer,
    judges: dict,
    harmful_sets: dict[str, Sequence[str]],
    benign_sets: dict[str, Sequence[str]],
    max_new_tokens: int = 48,
    system: str | None = None,
    threshold: float = 0.5,
) -> dict:
    """ASR by every judge and mean safe reward on each harmful set, over-refusal on each benign set,
    each with a bootstrap 95% interval. Greedy decoding: the defender's own answers, not sampling luck."""
    texts = answer_greedily(model, tokenizer, eval_prompts(harmful_sets, benign_sets), max_new_tokens, system)
    return score_sets(judges, harmful_sets, benign_sets, texts, threshold)


def eval_prompts(harmful_sets: dict[str, Sequence[str]], benign_sets: dict[str, Sequence[str]]) -> list[str]:
    """Every prompt of the sets, harmful sets first, in the order ``score_sets`` reads the answers."""
    for kind, sets in (("harmful", harmful_sets), ("benign", benign_sets)):
        for name, prompts in sets.items():
            if not prompts:
                raise SparringError(f"the {kind} prompt set '{name}' is empty", hint="choose a set with prompts")
    return [p for sets in (harmful_sets, benign_sets) for prompts in sets.values() for p in prompts]


def answer_greedily(
    model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 48, system: str | None = None
) -> list[str]:
    """The defender's greedy answer to each prompt, asked as a chat turn (the costly half of an evaluation)."""
    from sparring.generation import SamplingConfig, generate
    from sparring.models import chat_prompt

    greedy = SamplingConfig(max_new_tokens=max_new_tokens, temperature=0, batch_size=64)
    return generate(model, tokenizer, [chat_prompt(tokenizer, p, system) for p in prompts], greedy).texts


def score_sets(
    judges: dict,
    harmful_sets: dict[str, Sequence[str]],
    benign_sets: dict[str, Sequence[str]],
    texts: Sequence[str],
    threshold: float = 0.5,
) -> dict:
    """Judge the answers ``texts`` (in ``eval_prompts`` order): ASR per judge on harmful sets, over-refusal
    on benign ones. Kept apart from answering so stored answers can be judged again by another judge."""
    from sparring.judges.refusal import is_refusal

    ordered = [(kind, name, list(prompts)) for kind, sets in (("harmful", harmful_sets), ("benign", benign_sets))
               for name, prompts in sets.items()]  # fmt: skip
    if len(texts) != sum(len(prompts) for _, _, prompts in ordered):
        raise SparringError(f"{len(texts)} answers for {sum(len(p) for _, _, p in ordered)} prompts")
    # "answers" keeps every prompt, answer and score (as HarmBench keeps completions), so a person can
    # read what was judged; "samples" is the first three of each set, for the run summary.
    result: dict = {"harmful": {}, "benign": {}, "samples": [], "answers": []}
    at = 0
    for kind, name, prompts in ordered:
        answers, at = list(texts[at : at + len(prompts)]), at + len(prompts)
        shown = zip(prompts[:3], answers[:3], strict=True)
        result["samples"] += [{"set": name, "prompt": p, "response": r} for p, r in shown]
        rows = [{"set": name, "kind": kind, "prompt": p, "response": r, "refusal": is_refusal(r)}
                for p, r in zip(prompts, answers, strict=True)]  # fmt: skip
        result["answers"] += rows
        if kind == "benign":
            result["benign"][name] = {
                "n": len(prompts),
                "over_refusal": rate_with_interval([row["refusal"] for row in rows]),
            }
            continue
        entry: dict = {"n": len(prompts), "asr": {}, "mean_safe_reward": {}}
        for judge_name, judge in judges.items():
            p_unsafe = np.asarray(judge.score(prompts, answers), dtype=np.float64)
            for row, p in zip(rows, p_unsafe, strict=True):
                row.setdefault("p_unsafe", {})[judge_name] = round(float(p), 6)
            entry["asr"][judge_name] = rate_with_interval(p_unsafe >= getattr(judge, "threshold", threshold))
            if judge_name != "refusal":  # the matcher's graded score is not a reward model's
                entry["mean_safe_reward"][judge_name] = rate_with_interval(1.0 - p_unsafe)
        result["harmful"][name] = entry
    return result


def evaluate_defender(
    model,
    tokenizer,
    judges: dict,
    harmful: Sequence[str],
    benign: Sequence[str],
    max_new_tokens: int = 48,
    system: str | None = None,
    threshold: float = 0.5,
    ordinary: Sequence[str] = (),
) -> dict:
    """The game's held-out eval: one harmful set, one benign-but-edgy set and (optionally) one set of
    ordinary requests, flattened (intervals under ``ci``)."""
    benign_sets = {"benign": list(benign)} if benign else {}
    if ordinary:
        benign_sets["ordinary"] = list(ordinary)
    full = evaluate_sets(
        model, tokenizer, judges, {"harmful": harmful}, benign_sets, max_new_tokens, system, threshold
    )  # fmt: skip
    entry = full["harmful"]["harmful"]
    refusal = full["benign"].get("benign", {"n": 0, "over_refusal": {"value": 0.0, "ci": [0.0, 0.0]}})
    extra = {}
    if "ordinary" in full["benign"]:
        extra = {"n_ordinary": full["benign"]["ordinary"]["n"],
                 "over_refusal_ordinary": full["benign"]["ordinary"]["over_refusal"]["value"]}  # fmt: skip
    return {
        "n_harmful": entry["n"],
        "n_benign": refusal["n"],
        "asr": {k: v["value"] for k, v in entry["asr"].items()},
        "mean_safe_reward": {k: v["value"] for k, v in entry["mean_safe_reward"].items()},
        "over_refusal": refusal["over_refusal"]["value"],
        **extra,
        "ci": {
            **{f"asr/{k}": v["ci"] for k, v in entry["asr"].items()},
            "over_refusal": refusal["over_refusal"]["ci"],
            **({"over_refusal_ordinary": full["benign"]["ordinary"]["over_refusal"]["ci"]} if extra else {}),
        },
        "samples": full["samples"],
        "answers": full["answers"],  # every prompt, answer and score, so a person can read what was judged
    }


def format_rate(rate: dict) -> str:
    """'0.125 [0.05, 0.22]': a rate and its 95% interval."""
    lo, hi = rate["ci"]
    return f"{rate['value']:.3f} [{lo:.2f}, {hi:.2f}]"


def results_table(result: dict, title: str):
    """A rich table of an ``evaluate_sets`` result: one row per prompt set, 95% intervals in brackets."""
    from rich.table import Table

    from sparring.display import safe_text

    judges = sorted({j for entry in result["harmful"].values() for j in entry["asr"]})
    table = Table(title=safe_text(title))
    table.add_column("prompt set")
    table.add_column("n", justify="right")
    for judge in judges:
        table.add_column(safe_text(f"ASR ({judge})"), justify="right", no_wrap=True)
    table.add_column("over-refusal", justify="right", no_wrap=True)
    for name, entry in result["harmful"].items():
        table.add_row(safe_text(name), str(entry["n"]), *[format_rate(entry["asr"][j]) for j in judges], "")
    for name, entry in result["benign"].items():
        table.add_row(safe_text(name), str(entry["n"]), *["" for _ in judges], format_rate(entry["over_refusal"]))
    return table
