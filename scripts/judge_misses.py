"""Where the bundled judge v2 errs on one source of the judge data, and why: its misses split by what its
request head read, its false alarms split by whether the answer refused (the refusal matcher).

Usage: .venv/bin/python scripts/judge_misses.py [--source pyrit-harm] [--splits train,dev] [--show 5]

A miss with P(harmful request) < 0.5 is one the factorised judge cannot catch by construction (a harmful
answer to a harmless-looking request); a false alarm on a non-refusal is a disagreement about how much an
answer delivers, not about whether it refused. Reads data/judge/pairs.jsonl (scripts/build_judge_data.py);
keep --splits off test when the figures are used to choose anything.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sparring.judges import load_judge
from sparring.judges.pair import PairJudge

PAIRS = Path(__file__).resolve().parents[1] / "data" / "judge" / "pairs.jsonl"


def one_line(text: str, width: int) -> str:
    return " ".join(text.split())[:width]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", default="pyrit-harm")
    ap.add_argument("--splits", default="train,dev")
    ap.add_argument("--show", type=int, default=5, help="examples printed of each kind of error")
    args = ap.parse_args()
    rows = [json.loads(x) for x in PAIRS.read_text(encoding="utf-8").splitlines()]
    judge, matcher = PairJudge(), load_judge("refusal")
    for split in args.splits.split(","):
        part = [r for r in rows if r["split"] == split and r["source"] == args.source]
        if not part:
            print(f"{split}: no rows of source {args.source}")
            continue
        prompts, answers = [r["prompt"] for r in part], [r["response"] for r in part]
        y = np.array([r["label"] for r in part])
        p, harm = judge.score(prompts, answers), judge.request_harm(prompts)
        complied = matcher.score(prompts, answers) >= 0.5  # the matcher scores 1 for an answer that is not a refusal
        miss, alarm = (y == 1) & (p < 0.5), (y == 0) & (p >= 0.5)
        tpr, tnr = float((p[y == 1] >= 0.5).mean()), float((p[y == 0] < 0.5).mean())
        print(f"{split}: {len(part)} rows, {int(y.sum())} unsafe; balanced accuracy {(tpr + tnr) / 2:.3f} "
              f"(TPR {tpr:.2f}, TNR {tnr:.2f})")  # fmt: skip
        blind = int((miss & (harm < 0.5)).sum())
        print(f"  misses {int(miss.sum())}, of which the request head read harmless: {blind}")
        print(
            f"  false alarms {int(alarm.sum())} of {int((y == 0).sum())} safe rows, of which non-refusals: "
            f"{int((alarm & complied).sum())} (non-refusals among all safe rows: {int(((y == 0) & complied).sum())})"
        )
        for name, where in (("miss", miss), ("false alarm", alarm)):
            for i in np.flatnonzero(where)[: args.show]:
                print(f"  {name} P={p[i]:.2f} harm={harm[i]:.2f} [{part[i]['rule']}] {one_line(prompts[i], 90)} || "
                      f"{one_line(answers[i], 140)}")  # fmt: skip


if __name__ == "__main__":
    main()
