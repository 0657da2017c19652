"""The same defender update with TRL's GRPOTrainer and with sparring's critic-free step.

Usage: python benchmarks/versus_trl.py [--steps 4] [--repeats 3]
Needs TRL (an optional benchmark dependency: ``pip install --no-deps trl==1.16.0 && pip install datasets``,
which leaves torch and transformers as they are).

Both sides: bundled SmolLM2-135M-Instruct with LoRA r16/alpha32 on all linear layers, 4 prompts x 4
samples per step, up to 32 new tokens at temperature 1, group-normalised advantages (GRPO), KL beta
0.02 to the adapter-free reference, lr 2e-4, one optimiser step per batch, the graded refusal
reward, fp32 on the CPU, gradient checkpointing on (TRL's default; --no-checkpointing turns it off on
both sides). Each side runs in its own process (so peak RSS is its own) for --steps
steps after one warm-up step; the figure is completion tokens per second of whole steps
(generation + reference pass + update). Prints medians over --repeats and the ratio.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time

MODEL = "bundled:smollm2-135m-instruct"
PROMPTS, SAMPLES, NEW_TOKENS, LR, BETA = 4, 4, 32, 2e-4, 0.02


def questions(steps: int) -> list[str]:
    from sparring.data import load_prompt_set

    return load_prompt_set("bundled:do-not-answer")[: PROMPTS * (steps + 1)]


def run_sparring(steps: int, checkpointing: bool) -> dict:
    import torch

    from sparring.generation import SamplingConfig, generate
    from sparring.judges.refusal import refusal_score
    from sparring.models import LoraSettings, ModelConfig, chat_prompt, load_model
    from sparring.player import Player, RLConfig

    loaded = load_model(ModelConfig(spec=MODEL, lora=LoraSettings(rank=16, alpha=32)))
    config = RLConfig(
        algo="grpo", lr=LR, kl_coef=BETA, kl_mode="loss", minibatch_size=16, micro_batch_size=16,
        gradient_checkpointing=checkpointing,
    )  # fmt: skip
    player = Player(loaded.model, loaded.tokenizer, config)
    sampling = SamplingConfig(max_new_tokens=NEW_TOKENS, temperature=1.0, batch_size=64)
    qs, times, tokens = questions(steps), [], []
    for step in range(steps + 1):
        batch_q = qs[step * PROMPTS : (step + 1) * PROMPTS]
        prompts = [chat_prompt(loaded.tokenizer, q) for q in batch_q for _ in range(SAMPLES)]
        start = time.perf_counter()
        g = generate(loaded.model, loaded.tokenizer, prompts, sampling, seed=step)
        scores = torch.tensor([refusal_score(t) for t in g.texts])
        player.update(player.make_batch(g, scores, group_size=SAMPLES))
        if step:  # the first step is a warm-up
            times.append(time.perf_counter() - start)
            tokens.append(g.num_tokens)
    return {
        "tokens_per_s": sum(tokens) / sum(times),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def run_trl(steps: int, checkpointing: bool) -> dict:
    import datasets
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from sparring.judges.refusal import refusal_score
    from sparring.models import load_model

    loaded = load_model(MODEL)
    qs = questions(steps)
    data = datasets.Dataset.from_dict({"prompt": [[{"role": "user", "content": q}] for q in qs]})

    def reward(completions, **_: object) -> list[float]:
        return [refusal_score(c[-1]["content"] if isinstance(c, list) else c) for c in completions]

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.marks.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append(time.perf_counter())

    clock = Clock()
    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(
            output_dir=out, per_device_train_batch_size=PROMPTS * SAMPLES, num_generations=SAMPLES,
            max_completion_length=NEW_TOKENS, temperature=1.0, learning_rate=LR, beta=BETA, max_steps=steps + 1,
            logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, bf16=False, seed=0,
            gradient_accumulation_steps=1, num_iterations=1, shuffle_dataset=False, dataloader_num_workers=0,
            gradient_checkpointing=checkpointing,
        )  # fmt: skip
        trainer = GRPOTrainer(
            model=loaded.model, reward_funcs=reward, args=args, train_dataset=data,
            processing_class=loaded.tokenizer, peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"),
            callbacks=[clock],
        )  # fmt: skip
        trainer.train()
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    durations = [clock.marks[i + 1] - clock.marks[i] for i in range(0, len(clock.marks) - 1, 2)]
    tokens = [n * PROMPTS * SAMPLES for n in lengths[1:]]
    return {
        "tokens_per_s": sum(tokens) / sum(durations[1:]),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--side", choices=["trl", "sparring"], help="Run one side in this process (internal).")
    ap.add_argument("--no-checkpointing", action="store_true", help="Gradient checkpointing off on both sides.")
    args = ap.parse_args()
    if args.side:
        result = (run_trl if args.side == "trl" else run_sparring)(args.steps, not args.no_checkpointing)
        print(json.dumps(result))
        return
    results: dict[str, list[dict]] = {"sparring": [], "trl": []}
    for _ in range(args.repeats):
        for side in results:  # alternate, so drift in machine load hits both sides alike
            done = subprocess.run(
                [sys.executable, __file__, "--side", side, "--steps", str(args.steps)]
                + (["--no-checkpointing"] if args.no_checkpointing else []),
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            results[side].append(json.loads(done.stdout.strip().splitlines()[-1]))
    med = {s: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for s, rs in results.items()}
    for side, m in med.items():
        print(f"{side:>8}: {m['tokens_per_s']:7.1f} completion tok/s, peak RSS {m['peak_rss_gb']:.2f} GB")
    ratio = med["sparring"]["tokens_per_s"] / med["trl"]["tokens_per_s"]
    memory = med["sparring"]["peak_rss_gb"] / med["trl"]["peak_rss_gb"]
    print(f"sparring / TRL: {ratio:.2f}x tokens/s, {memory:.2f}x peak memory (median of {args.repeats})")


if __name__ == "__main__":
    main()
