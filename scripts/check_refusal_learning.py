"""Check on the real bundled SmolLM2 + LoRA: reward refusals of harmful requests, watch held-out refusals rise.

Usage: .venv/bin/python scripts/check_refusal_learning.py [--algo rloo] [--updates 60]
Reads harmful instructions from ../shared/data (a development check, not part of the program).
Prints one line per evaluation: update, held-out greedy refusal rate, mean training reward, wall time.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from sparring.generation import SamplingConfig, generate
from sparring.judges.refusal import is_refusal, refusal_score
from sparring.models import LoraSettings, ModelConfig, chat_prompt, load_model
from sparring.player import Player, RLConfig

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--algo", default="rloo", choices=["rloo", "grpo", "ppo"])
    ap.add_argument("--updates", type=int, default=60)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--prompts-per-step", type=int, default=4)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    train = [r["instruction"] for r in json.loads((DATA / "harmful_train.json").read_text())]
    held_out = [r["instruction"] for r in json.loads((DATA / "harmful_val.json").read_text())]
    loaded = load_model(ModelConfig(lora=LoraSettings(rank=16, alpha=32)))
    tok = loaded.tokenizer
    cfg = RLConfig(
        algo=args.algo,
        lr=args.lr,
        kl_coef=0.0,
        minibatch_size=64,
        micro_batch_size=16,
        epochs=1 if args.algo != "ppo" else 2,
    )
    player = Player(loaded.model, tok, cfg)
    sampling = SamplingConfig(max_new_tokens=args.tokens, temperature=1.0)
    greedy = SamplingConfig(max_new_tokens=args.tokens, temperature=0)
    held_prompts = [chat_prompt(tok, p) for p in held_out]
    rng = random.Random(args.seed)
    start = time.perf_counter()

    def evaluate(update: int, reward: float) -> float:
        texts = generate(loaded.model, tok, held_prompts, greedy).texts
        rate = sum(map(is_refusal, texts)) / len(texts)
        print(
            f"update {update:3d}  held-out refusal {rate:5.1%}  train reward {reward:.3f}  "
            f"{time.perf_counter() - start:6.0f}s",
            flush=True,
        )
        return rate

    evaluate(0, float("nan"))
    for update in range(1, args.updates + 1):
        seeds = rng.sample(train, args.prompts_per_step)
        prompts = [chat_prompt(tok, s) for s in seeds for _ in range(args.k)]
        gen = generate(loaded.model, tok, prompts, sampling, seed=args.seed * 100_000 + update)
        scores = torch.tensor([refusal_score(t) for t in gen.texts])
        player.update(player.make_batch(gen, scores, group_size=args.k))
        if update % args.eval_every == 0 and evaluate(update, float(scores.mean())) > 0.95:
            break


if __name__ == "__main__":
    main()
