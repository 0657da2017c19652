"""Where a game step's time goes, and the game's peak memory.

Usage: .venv/bin/python benchmarks/game_step.py [--steps 8] [overrides ...]

Plays the default game (bundled SmolLM2 players, bundled judge) with a short schedule -- four
defender steps, then four attacker steps, warm-up cut to 4 SFT steps each -- in a temporary
folder, and prints for each stage the median seconds of every phase (attacker generation,
defender generation, judge, diversity, intent gate, update) and its share of the step, then the peak RSS of
the whole process (models, warm-up, evaluation included) against the 6 GB target.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

from sparring.config import load_config
from sparring.game import Game

PHASES = ["attacker_generation", "defender_generation", "judge", "diversity", "gate", "update"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8, help="Game steps: half defender, half attacker.")
    ap.add_argument("--json", type=Path, help="Also write the medians and the peak RSS to this file.")
    ap.add_argument("overrides", nargs="*", help="Dotted config overrides.")
    args = ap.parse_args()
    half = max(1, args.steps // 2)
    with tempfile.TemporaryDirectory() as folder:
        cfg = load_config(
            None,
            [
                f"run.dir={folder}",
                "run.name=bench",
                f"schedule.steps={2 * half}",
                f"schedule.defender_steps={half}",
                f"schedule.attacker_steps={half}",
                "warmup.defender_steps=4",
                "warmup.attacker_steps=4",
                "data.eval_size=8",
                *args.overrides,
            ],
        )
        start = time.perf_counter()
        Game(cfg, Path(folder) / "bench").play()
        wall = time.perf_counter() - start
        metrics = [json.loads(line) for line in (Path(folder) / "bench" / "metrics.jsonl").read_text().splitlines()]
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    print(f"{len(metrics)} steps in {wall:.0f} s wall (warm-up and evaluations included)")
    report: dict = {"wall_s": wall, "peak_rss_gb": peak_gb, "stages": {}}
    for stage in ("defender", "attacker"):
        rows = [m for m in metrics if m["stage"] == stage]
        if not rows:
            continue
        medians = {p: statistics.median(m.get(f"time_{p}", 0.0) for m in rows) for p in PHASES}
        total = sum(medians.values())
        report["stages"][stage] = {"median_step_s": total, **{f"{p}_s": v for p, v in medians.items()}}
        print(f"{stage} stage ({len(rows)} steps), median step {total:.1f} s:")
        for phase, seconds in sorted(medians.items(), key=lambda kv: -kv[1]):
            print(f"  {phase:<20} {seconds:7.2f} s  {seconds / total:6.1%}")
    print(f"peak RSS {peak_gb:.2f} GB = {peak_gb / 6:.2f} x the 6 GB target")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
