"""Tokens/s of sparring's decode loop against plain ``model.generate``, same model, prompts and settings.

Usage: .venv/bin/python benchmarks/generation.py [--model bundled:smollm2-135m-instruct] [--batches 8 64] [--repeats 3]
Both sample at temperature 1 with top-p 0.9 for up to --new-tokens tokens and stop at EOS; tokens are
counted up to and including each sequence's EOS. Prints the median tokens/s and the ratio per batch size.
With --bf16 both run under bf16 autocast (our ``sampling.bf16``), fast on CPUs with AMX.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sparring.data import project_benign
from sparring.generation import SamplingConfig, generate
from sparring.models import chat_prompt, load_model


def count_tokens(new: torch.Tensor, eos: int, pad: int) -> int:
    total = 0
    for row in new:
        ended = (row == eos).nonzero()
        total += int(ended[0]) + 1 if len(ended) else int((row != pad).sum())
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="bundled:smollm2-135m-instruct")
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bf16", action="store_true", help="Both under bf16 autocast (sampling.bf16 for ours).")
    ap.add_argument("--decoder", choices=["dynamic", "static"], default="dynamic", help="sampling.decoder for ours.")
    ap.add_argument("--compile", action="store_true", help="sampling.compile for ours (with --decoder static).")
    args = ap.parse_args()
    loaded = load_model(args.model)
    model, tok = loaded.model.eval(), loaded.tokenizer
    questions = project_benign()
    cfg = SamplingConfig(
        max_new_tokens=args.new_tokens, temperature=1.0, top_p=0.9, batch_size=max(args.batches), bf16=args.bf16,
        decoder=args.decoder, compile=args.compile,
    )  # fmt: skip
    print(f"model {args.model}, {args.new_tokens} new tokens, torch threads {torch.get_num_threads()}")
    for batch in args.batches:
        prompts = [chat_prompt(tok, questions[i % len(questions)]) for i in range(batch)]
        ours, theirs = [], []
        if args.compile:  # compilation happens once per model and shape; keep it out of the timed calls
            t = time.perf_counter()
            generate(model, tok, prompts, cfg, seed=99)
            print(f"batch {batch:3d}: first call (compiles) {time.perf_counter() - t:.1f} s")
        for r in range(args.repeats):
            t = time.perf_counter()
            g = generate(model, tok, prompts, cfg, seed=r)
            ours.append(g.num_tokens / (time.perf_counter() - t))
            enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            torch.manual_seed(r)
            t = time.perf_counter()
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                out = model.generate(
                    **enc,
                    max_new_tokens=args.new_tokens,
                    do_sample=True,
                    temperature=1.0,
                    top_p=0.9,
                    top_k=0,  # the model's generation config would add top-k 50; sample exactly as ours does
                    pad_token_id=tok.pad_token_id,
                    eos_token_id=tok.eos_token_id,
                )
            theirs.append(
                count_tokens(out[:, enc["input_ids"].shape[1] :], tok.eos_token_id, tok.pad_token_id)
                / (time.perf_counter() - t)
            )
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f"batch {batch:3d}: sparring {a:7.1f} tok/s   model.generate {b:7.1f} tok/s   ratio {a / b:.2f}x")


if __name__ == "__main__":
    main()
