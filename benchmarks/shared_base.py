"""Peak memory and step time of the default game with a model per player and with one shared base.

Usage: .venv/bin/python benchmarks/shared_base.py [--steps 4] [--repeats 1] [overrides ...]

Runs benchmarks/game_step.py in a fresh process per setting (peak RSS is a process's high-water
mark), alternating ``shared_base=false`` and ``shared_base=true`` ``--repeats`` times, and prints the
medians of each and their ratios (shared / own). Same seed, same schedule, same machine, one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

STEP = Path(__file__).with_name("game_step.py")


def one(shared: bool, steps: int, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "report.json"
        command = [sys.executable, str(STEP), "--steps", str(steps), "--json", str(out),
                   "run.eval_at_start=false", f"shared_base={str(shared).lower()}", *overrides]  # fmt: skip
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4, help="Game steps per run: half defender, half attacker.")
    ap.add_argument("--repeats", type=int, default=1, help="Runs per setting, alternating.")
    ap.add_argument("overrides", nargs="*", help="Dotted config overrides for both settings.")
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {"own": [], "shared": []}
    for _ in range(args.repeats):
        for name in runs:
            runs[name].append(one(name == "shared", args.steps, args.overrides))
            print(f"{name}: peak RSS {runs[name][-1]['peak_rss_gb']:.2f} GB", flush=True)
    rows = [("peak RSS (GB)", lambda r: r["peak_rss_gb"])]
    rows += [(f"{stage} step, median (s)", lambda r, s=stage: r["stages"][s]["median_step_s"])
             for stage in ("defender", "attacker")]  # fmt: skip
    print(f"{'':<28}{'own base each':>14}{'shared base':>14}{'shared / own':>14}")
    for label, get in rows:
        own = statistics.median(get(r) for r in runs["own"])
        shared = statistics.median(get(r) for r in runs["shared"])
        print(f"{label:<28}{own:>14.2f}{shared:>14.2f}{shared / own:>14.2f}")


if __name__ == "__main__":
    main()
