"""The update phase's achieved FLOP/s against this machine's own measured matrix-multiply peak.

Usage: .venv/bin/python benchmarks/hardware.py [--model bundled:smollm2-135m-instruct] [--repeats 5]

Peak: the median FLOP/s of a large square matmul (fp32, and bf16 where the CPU has native bf16
support) on all of torch's threads. Update: one RLOO update of the model with LoRA r16 on a
synthetic rollout batch (16 sequences, 96-token prompts, 64-token responses, one minibatch in
micro-batches of 16), in fp32 and with bf16 autocast. Its FLOPs are counted from the shapes:
forward 2·P·T over every matmul weight (attention scores included), backward 2·P·T for the
activation gradients (the frozen base needs no weight gradients) plus the LoRA weights' own.
Prints medians and the ratio to the same-dtype peak.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from sparring.models import LoraSettings, ModelConfig, load_model
from sparring.player import Player, RLConfig, RolloutBatch


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        times.append((time.perf_counter() - start) / 4)
    return 2 * n**3 / statistics.median(times)


def bf16_native() -> bool:
    """AVX512-BF16 or AMX: the CPU multiplies bf16 natively (elsewhere bf16 is emulated and slower)."""
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.exists() else ""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def update_flops(model, batch: RolloutBatch) -> float:
    """Matmul FLOPs of one forward+backward pass over the batch (no recomputation)."""
    cfg = model.config
    tokens = batch.prompt_ids.numel() + batch.response_ids.numel()
    seq = batch.prompt_ids.shape[1] + batch.response_ids.shape[1]
    dense = sum(
        m.weight.numel() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lora" not in n
    )
    lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    attention = 2 * 2 * cfg.num_hidden_layers * seq * cfg.hidden_size  # QK^T and AV per token
    forward = 2 * dense * tokens + 2 * lora * tokens + attention * tokens
    backward = forward + 2 * lora * tokens  # activation grads ~ forward, plus LoRA weight grads
    return float(forward + backward)


def synthetic_batch(vocab: int, rows: int = 16, prompt: int = 96, response: int = 64) -> RolloutBatch:
    g = torch.Generator().manual_seed(0)
    return RolloutBatch(
        prompt_ids=torch.randint(0, vocab, (rows, prompt), generator=g),
        prompt_mask=torch.ones(rows, prompt, dtype=torch.long),
        response_ids=torch.randint(0, vocab, (rows, response), generator=g),
        response_mask=torch.ones(rows, response, dtype=torch.long),
        old_logprobs=torch.full((rows, response), -5.0),
        ref_logprobs=torch.full((rows, response), -5.0),
        scores=torch.rand(rows, generator=g),
        group_size=4,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="bundled:smollm2-135m-instruct")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    dtypes = [("fp32", torch.float32)] + ([("bf16", torch.bfloat16)] if bf16_native() else [])
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, native bf16: {bf16_native()}")
    peaks = {name: matmul_peak(dtype) for name, dtype in dtypes}
    for name, peak in peaks.items():
        print(f"matmul peak {name}: {peak / 1e9:.1f} GFLOP/s (2048x2048, median of 5)")
    for name, _ in dtypes:
        loaded = load_model(ModelConfig(spec=args.model, lora=LoraSettings(rank=16, alpha=32)))
        config = RLConfig(algo="rloo", minibatch_size=16, micro_batch_size=16, epochs=1, autocast_bf16=name == "bf16")
        player = Player(loaded.model, loaded.tokenizer, config)
        batch = synthetic_batch(loaded.model.config.vocab_size)
        flops = update_flops(loaded.model, batch)
        player.update(batch)  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            player.update(batch)
            times.append(time.perf_counter() - start)
        achieved = flops / statistics.median(times)
        print(
            f"update {name}: median {statistics.median(times):.2f} s, {flops / 1e12:.2f} TFLOP per update, "
            f"{achieved / 1e9:.1f} GFLOP/s = {achieved / peaks[name]:.0%} of the {name} matmul peak"
            + (f" ({achieved / peaks['fp32']:.0%} of the fp32 peak)" if name != "fp32" else "")
        )


if __name__ == "__main__":
    main()
