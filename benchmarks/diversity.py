"""Incremental vs naive diversity against a history of 10,000 prompts, batch of 64.

Usage: .venv/bin/python benchmarks/diversity.py [--history 10000] [--batch 64] [--repeats 5]
Prompts: every red-team/harmful prompt in ../shared/data, padded to the history size with
recombinations of their halves (realistic word overlap). Prints medians and the speed-up ratio,
and the largest difference between the two (target: >= 50x, equal to 1e-6).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import numpy as np

from sparring.data import read_prompts
from sparring.diversity import EmbeddingHistory, SelfBleuIndex, bleu_orders, words

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def corpus(size: int, rng: random.Random) -> list[str]:
    base: list[str] = []
    for name in [
        "gpo_redteam_prompts_valid.json",
        "advbench_behaviors.csv",
        "harmful_train.json",
        "harmful_val.json",
        "harmbench_behaviors_text_val.csv",
    ]:
        base += read_prompts(DATA / name)
    out = list(base)
    while len(out) < size:
        a, b = rng.choice(base).split(), rng.choice(base).split()
        out.append(" ".join(a[: len(a) // 2] + b[len(b) // 2 :]))
    rng.shuffle(out)
    return out


def naive(batch_tokens, history_tokens) -> np.ndarray:
    """The release's way: every candidate against every history item, every order."""
    return np.array([np.mean([bleu_orders(x, h) for h in history_tokens]) for x in batch_tokens])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--history", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--naive-repeats", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(0)
    texts = corpus(args.history + args.batch, rng)
    history, batch = texts[: args.history], texts[args.history :]

    index = SelfBleuIndex()
    index.add(history)
    fast_times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        fast = index.score(batch)
        fast_times.append(time.perf_counter() - t)

    history_tokens = [words(h) for h in history]
    batch_tokens = [words(x) for x in batch]
    naive_times = []
    for _ in range(args.naive_repeats):
        t = time.perf_counter()
        slow = naive(batch_tokens, history_tokens)
        naive_times.append(time.perf_counter() - t)

    emb_rng = np.random.default_rng(0)
    hist_emb, batch_emb = emb_rng.normal(size=(args.history, 384)), emb_rng.normal(size=(args.batch, 384))
    emb = EmbeddingHistory()
    emb.add(hist_emb)
    e_fast, e_slow = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        got = emb.score(batch_emb)
        e_fast.append(time.perf_counter() - t)
        t = time.perf_counter()
        h = hist_emb / np.linalg.norm(hist_emb, axis=1, keepdims=True)
        b = batch_emb / np.linalg.norm(batch_emb, axis=1, keepdims=True)
        want = (b @ h.T).mean(1)
        e_slow.append(time.perf_counter() - t)

    f, s = statistics.median(fast_times), statistics.median(naive_times)
    print(f"history {args.history}, batch {args.batch}")
    print(
        f"SelfBLEU  naive {s:8.3f} s   incremental {f:8.4f} s   speed-up {s / f:7.1f}x   "
        f"max |diff| {np.abs(fast - slow).max():.2e}   mean SelfBLEU {fast.mean():.4f}"
    )
    ef, es = statistics.median(e_fast), statistics.median(e_slow)
    print(
        f"EmbSim    naive {es:8.4f} s   incremental {ef:8.5f} s   speed-up {es / ef:7.1f}x   "
        f"max |diff| {np.abs(got - want).max():.2e}"
    )


if __name__ == "__main__":
    main()
