"""Paired differences between `sparring eval --json` files of the same prompt sets.

    python scripts/compare_evals.py BASE.json OTHER.json [OTHER.json ...]

For each file: ASR by each judge on each harmful set and over-refusal on each benign set; for each other
file, its difference to BASE on the same prompts with a 95% bootstrap interval over prompts (paired: the
same resampled prompts for both). This is how the README's development probes were read.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from sparring.evaluate import bootstrap_interval


def outcomes(path: Path) -> dict[str, dict[str, float]]:
    """{measure: {prompt: outcome}}, measure = 'ASR <judge> <set>' or 'over-refusal <set>'."""
    result = json.loads(path.read_text(encoding="utf-8"))
    table: dict[str, dict[str, float]] = {}
    for row in result["answers"]:
        if row["kind"] == "benign":
            table.setdefault(f"over-refusal {row['set']}", {})[row["prompt"]] = float(row["refusal"])
            continue
        for judge, p in row.get("p_unsafe", {}).items():
            table.setdefault(f"ASR {judge} {row['set']}", {})[row["prompt"]] = float(p >= 0.5)
    return table


def main(paths: list[Path]) -> None:
    base, *others = paths
    reference = outcomes(base)
    names = [p.stem for p in paths]
    print(f"{'measure':34s} " + " ".join(f"{n[:24]:>24s}" for n in names))
    for measure, rows in reference.items():
        prompts = sorted(rows)
        cells = [f"{np.mean([rows[p] for p in prompts]):24.2f}"]
        for other in others:
            theirs = outcomes(other).get(measure, {})
            if set(theirs) != set(rows):
                cells.append(f"{'(other prompts)':>24s}")
                continue
            diff = np.array([theirs[p] - rows[p] for p in prompts])
            low, high = bootstrap_interval(diff)
            value = np.mean([theirs[p] for p in prompts])
            cells.append(f"{value:.2f} {diff.mean():+.2f} [{low:+.2f},{high:+.2f}]".rjust(24))
        print(f"{measure:34s} " + " ".join(cells))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main([Path(a) for a in sys.argv[1:]])
