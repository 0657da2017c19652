"""Re-read an experiment's answers.jsonl with today's refusal matcher (and, with --judge, today's learned
judge) and rebuild its comparison table.

Usage: .venv/bin/python scripts/rescore_answers.py EXPERIMENT_DIR [--out comparison-rescored.md] [--judge bundled]

The answers are kept (every prompt, every defender, every seed), so a fix to the refusal matcher or a
retrained judge can be measured on old runs without generating again: the matcher's verdicts (ASR by the
matcher, every over-refusal) are recomputed from the answer text; the learned judge's scores are kept as
they were unless --judge names one to score the harmful answers again (the games were still played with
the judge they were played with).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sparring.config import JudgeConfig
from sparring.experiments import markdown, measures, summarise_outcomes
from sparring.judges.refusal import is_refusal


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--out", default="comparison-rescored.md")
    ap.add_argument("--judge", default=None, help="a judge spec to score the harmful answers again")
    args = ap.parse_args()
    old = json.loads((args.folder / "comparison.json").read_text())
    rows = [json.loads(line) for line in (args.folder / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    if args.judge:
        from sparring.judges import load_judge

        harmful = [r for r in rows if "p_unsafe" in r]
        scores = load_judge(args.judge).score([r["prompt"] for r in harmful], [r["response"] for r in harmful])
        for r, p in zip(harmful, scores, strict=True):
            r["p_unsafe"] = {**r["p_unsafe"], "judge": float(p)}
        print(f"harmful answers scored again by {args.judge}: {len(harmful)}")
    changed = 0
    grouped: dict[str, dict[int, list[dict]]] = {}
    for row in rows:
        refused = is_refusal(row["response"])
        changed += refused != row["refusal"]
        row = {**row, "refusal": refused}
        if "p_unsafe" in row:  # harmful rows: the matcher is also a judge of ASR
            row["p_unsafe"] = {**row["p_unsafe"], "refusal": 0.0 if refused else 1.0}
        grouped.setdefault(row["defender"], {}).setdefault(row["seed"], []).append(row)
    seeds = tuple(old["seeds"])
    outcomes = {
        name: {seed: measures(answers, old["judge"], JudgeConfig().threshold) for seed, answers in by_seed.items()}
        for name, by_seed in grouped.items()
    }
    result = {**old, **summarise_outcomes(outcomes, seeds)}
    (args.folder / args.out).write_text(markdown(result))
    print(f"{changed} of {len(rows)} verdicts changed; wrote {args.folder / args.out}")


if __name__ == "__main__":
    main()
