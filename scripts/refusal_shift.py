"""Where a run's defender stage moved its refusals: log P(the answer opens as a refusal) before and after.

    python scripts/refusal_shift.py RUN_DIR [--before step-0] [--after latest] [--set NAME=FILE ...]

Greedy evals flip few decisions per stage, so they show the slide late and noisily; this reads the bias
itself: per prompt, log P(the answer opens as a refusal) -- log sum_j p(opening_j | prompt) over the
openings of the project's refusals ("I can't", "I'm sorry", ...) -- under the checkpoint ``--before``
(step-0: the warm-up) and ``--after``. Groups: the run's own defender-stage attacks, split by what their
k sampled answers were (the refusal matcher): mixed groups are where RL had a refuse-vs-comply signal;
then each ``--set`` (held-out prompts). Prints the mean change per group with a 95% bootstrap interval
over prompts and the share of prompts that moved up; then, for the first set against each other one, the
AUC of log P(refusal) before and after -- whether the stage sharpened the line between them, whatever it
did to the bias.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from sparring.config import load_config
from sparring.data import read_prompts
from sparring.evaluate import auc, bootstrap_interval
from sparring.judges.refusal import is_refusal
from sparring.models import chat_prompt, restore_weights
from sparring.refusal_bias import opening_ids, opening_logprob
from sparring.runlog import Checkpoints
from sparring.runs import player_model


@torch.no_grad()
def refusal_logprob(model, tokenizer, prompts: list[str], system: str | None, batch: int = 8) -> np.ndarray:
    """log P(the answer opens as a refusal | chat(prompt)) per prompt (refusal_bias.py): a greedy answer refuses
    when this mode wins its first tokens, so it is the bias a stage moves."""
    ids = [tokenizer(chat_prompt(tokenizer, p, system), add_special_tokens=False)["input_ids"] for p in prompts]
    openings, pad = opening_ids(tokenizer), tokenizer.pad_token_id
    chunks = [opening_logprob(model, ids[i : i + batch], openings, pad) for i in range(0, len(ids), batch)]
    return torch.cat(chunks).double().numpy()


def attack_groups(run_dir: Path) -> dict[str, list[str]]:
    """The defender-stage attacks of the run, by how many of their sampled answers the matcher refused."""
    groups: dict[str, list[str]] = {"attacks, all answered": [], "attacks, mixed": [], "attacks, all refused": []}
    for line in (run_dir / "attacks.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["stage"] != "defender":
            continue
        refused = sum(is_refusal(r) for r in row["responses"])
        key = "all answered" if refused == 0 else "all refused" if refused == len(row["responses"]) else "mixed"
        groups[f"attacks, {key}"].append(row["prompt"])
    return groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--before", default="step-0")
    ap.add_argument("--after", default="latest")
    ap.add_argument("--set", action="append", default=[], help="NAME=FILE, a prompt set to read (repeatable)")
    ap.add_argument("--sets-only", action="store_true", help="Skip the run's own attacks (a third of the time)")
    args = ap.parse_args()
    cfg = load_config(args.run_dir / "config.yaml")
    checkpoints = Checkpoints(args.run_dir / "checkpoints", cfg.run.keep_checkpoints)
    groups = {} if args.sets_only else attack_groups(args.run_dir)
    if bad := [s for s in args.set if "=" not in s]:
        ap.error(f"--set takes NAME=FILE (e.g. harmful=runs/dev/harmful_train.txt), got {bad[0]!r}")
    named = dict(s.split("=", 1) for s in args.set)
    groups.update({name: read_prompts(Path(path)) for name, path in named.items()})
    model, tokenizer = player_model(cfg.defender, args.run_dir / "warmup" / "defender")
    model.eval()
    system = cfg.defender.system_prompt
    shifts = {}
    for tag in (args.before, args.after):
        directory = checkpoints.latest() if tag == "latest" else args.run_dir / "checkpoints" / tag
        restore_weights(model, directory / "defender")
        shifts[tag] = {name: refusal_logprob(model, tokenizer, ps, system) for name, ps in groups.items()}
    print(f"{'group':24s} {'n':>4s} {'log p before':>12s} {'after':>7s} {'change [95%]':>24s} {'up':>5s}")
    for name, prompts in groups.items():
        if not prompts:
            continue
        before, after = shifts[args.before][name], shifts[args.after][name]
        delta = after - before
        low, high = bootstrap_interval(delta)
        print(f"{name:24s} {len(prompts):4d} {before.mean():12.2f} {after.mean():7.2f} "
              f"{delta.mean():+8.2f} [{low:+.2f}, {high:+.2f}] {np.mean(delta > 0):5.2f}")  # fmt: skip
    sets = list(named)
    for negative in sets[1:]:  # does the bias tell the first set (harmful) from each other one, before and after?
        pairs = {tag: (shifts[tag][sets[0]], shifts[tag][negative]) for tag in (args.before, args.after)}
        readings = [
            auc(np.concatenate(pair), np.r_[np.ones(len(pair[0])), np.zeros(len(pair[1]))]) for pair in pairs.values()
        ]
        print(f"AUC of log P(refusal), {sets[0]} vs {negative}: {readings[0]:.3f} -> {readings[1]:.3f}")


if __name__ == "__main__":
    main()
