"""Print a run's step metrics as a compact table (stage, ASR, rewards, diversity, intent kept, time).

Usage: .venv/bin/python scripts/show_run.py RUN_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    run = Path(sys.argv[1])
    print(
        f"{'step':>4} {'stage':8} {'ASR':>5} {'p_uns':>5} {'r_D':>5} {'r_A':>6} {'SBLEU':>6} {'EmbS':>5} "
        f"{'div':>5} {'benR':>5} {'kept':>5} {'sec':>5}"
    )
    for line in (run / "metrics.jsonl").read_text().splitlines():
        m = json.loads(line)
        secs = sum(v for k, v in m.items() if k.startswith("time_"))
        benign, kept = m.get("benign_refusal"), m.get("intent_kept")
        print(
            f"{m['step']:>4} {m['stage']:8} {m['asr']:5.2f} {m['p_unsafe']:5.2f} {m['defender_reward']:5.2f} "
            f"{m['attacker_reward']:6.2f} {m['self_bleu']:6.3f} {m['embedding_similarity']:5.2f} "
            f"{m['diversity_within_batch']:5.2f} {'' if benign is None else f'{benign:5.2f}':>5} "
            f"{'' if kept is None else f'{kept:5.2f}':>5} {secs:5.1f}"
        )
    evals = run / "eval.json"
    if evals.exists():
        for label, e in json.loads(evals.read_text()).items():
            print(label, {k: round(v, 3) for k, v in e["asr"].items()}, "over-refusal", round(e["over_refusal"], 3))


if __name__ == "__main__":
    main()
