"""GPU generation: plain ``generate``, ``generate`` with a static cache, and sparring's decode loop.

Usage (one GPU, nothing but torch and transformers installed, no network):
    python benchmarks/gpu_generation.py                       # 135m, 1b and 7b Llama shapes
    python benchmarks/gpu_generation.py --shapes 1b --batch 64 --new-tokens 128

Random-initialised Llama models of the given shapes in bf16 (the 135M SmolLM2 shape, a 1B and a
7B Llama shape) decode --new-tokens tokens for --batch prompts of 32 tokens. For each path it
prints the median (of --repeats, after a warm-up) tokens/s, seconds per decode step, and MFU
against the device's own measured bf16 matmul peak; ratios are against plain ``generate``
measured in the same run. Sampling is off (greedy) so every path does the same work.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sparring.generation import SamplingConfig, generate
from sparring.models import byte_tokenizer

SHAPES = {  # hidden, layers, heads, kv heads, intermediate, vocab
    "test": (64, 2, 4, 2, 128, 512),
    "135m": (576, 30, 9, 3, 1536, 49152),
    "1b": (2048, 16, 32, 8, 8192, 128256),
    "7b": (4096, 32, 32, 32, 11008, 32000),
}


def build(shape: str, device: str, dtype: torch.dtype) -> LlamaForCausalLM:
    hidden, layers, heads, kv, inter, vocab = SHAPES[shape]
    config = LlamaConfig(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
        intermediate_size=inter, vocab_size=vocab, max_position_embeddings=4096, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    return model.eval()


def matmul_peak(device: str, dtype: torch.dtype, n: int = 4096) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    sync(device)
    return 10 * 2 * n**3 / (time.perf_counter() - start)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int) -> float:
    fn()  # warm-up (and compilation, for the static cache)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(shape: str, args: argparse.Namespace, tok, prompts: list[str], enc, peak: float) -> None:
    """Every generation path on one model shape; prints a line each, ratios against plain generate."""
    model = build(shape, args.device, torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    tokens = args.batch * args.new_tokens
    common = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)
    common |= dict(pad_token_id=tok.pad_token_id, eos_token_id=None)
    paths = {"generate": lambda: model.generate(**enc, **common)}
    if not args.no_static:
        paths["generate (static cache)"] = lambda: model.generate(**enc, **common, cache_implementation="static")
    cfg = SamplingConfig(max_new_tokens=args.new_tokens, temperature=0, batch_size=args.batch)
    paths["sparring"] = lambda: generate(model, tok, prompts, cfg)
    with torch.no_grad():  # greedy is deterministic: count the tokens ours really decodes (it stops at EOS)
        made = {"sparring": generate(model, tok, prompts, cfg).num_tokens}
    base = None
    for label, fn in paths.items():
        with torch.no_grad():
            seconds = timed(fn, args.device, args.repeats)
        rate = made.get(label, tokens) / seconds
        base = base or rate
        print(
            f"{shape:>5} {label:<24} {rate:10.0f} tok/s  {seconds / args.new_tokens * 1e3:7.2f} ms/step  "
            f"MFU {2 * params * rate / peak:6.1%}  {rate / base:5.2f}x generate"
        )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", nargs="+", default=["135m", "1b", "7b"], choices=list(SHAPES))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-static", action="store_true", help="Skip generate with the static cache.")
    args = ap.parse_args(argv)
    dtype = torch.bfloat16
    peak = matmul_peak(args.device, dtype)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"{name}: measured bf16 matmul peak {peak / 1e12:.1f} TFLOP/s; batch {args.batch}, {args.new_tokens} tokens")
    tok = byte_tokenizer()
    prompts = [f"prompt {i:03d} " + "x" * 20 for i in range(args.batch)]  # 32 byte tokens each
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(args.device)
    for shape in args.shapes:
        measure(shape, args, tok, prompts, enc, peak)
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
