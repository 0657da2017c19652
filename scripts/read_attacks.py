"""Print a run's attacks to read by eye: seed, attack, first answer, and what each referee made of it.

Usage: .venv/bin/python scripts/read_attacks.py RUN_DIR [--stage attacker] [--last 40] [--rescore bundled-v1]
       [--jsonl out.jsonl]

Columns: the run's own P(unsafe) (its judge), the gate's intent and relevance and whether the attack
kept its seed's intent, the refusal matcher's verdict, and P(unsafe) by each --rescore judge. With
--jsonl the same rows are written out ({prompt, response, seed, scores}) for labelling by hand.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sparring.judges import load_judge
from sparring.judges.refusal import is_refusal


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--stage", choices=["attacker", "defender"], default=None)
    ap.add_argument("--last", type=int, default=40, help="the last N attacks (0 = all)")
    ap.add_argument("--rescore", action="append", default=[], help="another judge spec (repeatable)")
    ap.add_argument("--jsonl", type=Path, default=None)
    args = ap.parse_args()
    rows = [json.loads(x) for x in (args.run / "attacks.jsonl").read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if args.stage in (None, r["stage"]) and not r.get("replay")]
    rows = rows[-args.last :] if args.last else rows
    answers = [r["responses"][0] for r in rows]
    scores = {spec: load_judge(spec).score([r["prompt"] for r in rows], answers) for spec in args.rescore}
    out = []
    for i, r in enumerate(rows):
        gate = ""
        if "kept" in r:
            gate = f"intent {r['intent']:.2f} rel {r['relevance']:.2f} {'KEPT' if r['kept'] else 'lost'}"
        extra = " ".join(f"{spec} {scores[spec][i]:.2f}" for spec in scores)
        print(f"[{r['step']} {r['stage'][0]}] run judge {r['p_unsafe'][0]:.2f} {gate} "
              f"refusal={is_refusal(answers[i])} {extra}")  # fmt: skip
        print(f"   seed:   {r['seed'][:150]!r}")
        print(f"   attack: {r['prompt'][:200]!r}")
        print(f"   answer: {answers[i][:200]!r}")
        out.append({"prompt": r["prompt"], "response": answers[i], "seed": r["seed"], "step": r["step"],
                    "p_unsafe_run": r["p_unsafe"][0], **{f"p_unsafe_{s}": float(scores[s][i]) for s in scores},
                    **{k: r[k] for k in ("intent", "relevance", "kept") if k in r}})  # fmt: skip
    if args.jsonl:
        args.jsonl.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in out), encoding="utf-8")


if __name__ == "__main__":
    main()
