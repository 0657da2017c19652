"""GPU generation: plain ``generate``, ``generate`` with a static cache, and sparring's decode loops.

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
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

from sparring import static_decode
from sparring.generation import SamplingConfig, cache_kwarg, generate
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
    if args.lora:  # as the game trains its players: LoRA r16 on every linear layer, adapters active
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear")).eval()
        shape = f"{shape}+lora"
    params = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()  # matmul'd
    common = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)
    common |= dict(pad_token_id=tok.pad_token_id, eos_token_id=None)
    paths = {"generate": lambda: model.generate(**enc, **common)}
    configs = {
        "sparring dynamic": SamplingConfig(decoder="dynamic"),
        "sparring static": SamplingConfig(decoder="static", compile=False),  # CUDA graph of the eager step
        "sparring static+compile": SamplingConfig(decoder="static", compile=True),  # graph of the compiled step
    }
    configs = {k: v.model_copy(update=dict(max_new_tokens=args.new_tokens, temperature=0, batch_size=args.batch))
               for k, v in configs.items() if k.split()[-1] in args.paths}  # fmt: skip
    for label, cfg in configs.items():
        paths[label] = lambda cfg=cfg: generate(model, tok, prompts, cfg)
    if not args.no_static:  # last: it compiles the model's forward, which takes a while
        paths["generate (static cache)"] = lambda: model.generate(**enc, **common, cache_implementation="static")
    base = None
    for label, fn in paths.items():
        with torch.no_grad():
            seconds = timed(fn, args.device, args.repeats)  # the warm-up call compiles, where a path compiles
            made = fn().num_tokens if label in configs else args.batch * args.new_tokens  # ours stops at EOS
        rate = made / seconds
        base = base or rate
        print(
            f"{shape:>9} {label:<24} {rate:10.0f} tok/s  {seconds / args.new_tokens * 1e3:7.2f} ms/step  "
            f"MFU {2 * params * rate / peak:6.1%}  {rate / base:5.2f}x generate",
            flush=True,
        )
    for label, cfg in configs.items():
        if cfg.decoder == "static":
            phases(model, tok, prompts, cfg, label)
    if not args.no_check:
        check(model, tok, prompts, enc, common, configs, args)
    if args.new_width and "sparring static+compile" in configs:  # the game's prompts change length every call
        cfg = configs["sparring static+compile"]
        other = [p + " y" * 8 for p in prompts]
        with torch.no_grad():
            phases(model, tok, other, cfg, "new width (dynamo recompiles once, with dynamic shapes)")
            third = [p + " z" * 20 for p in prompts]
            seconds = timed(lambda: generate(model, tok, third, cfg), args.device, args.repeats)
        rate = args.batch * args.new_tokens / seconds
        print(f"{shape:>9} {'static+compile, 3rd width':<24} {rate:10.0f} tok/s  {rate / base:5.2f}x generate")


@torch.no_grad()
def phases(model, tok, prompts: list[str], cfg: SamplingConfig, label: str) -> None:
    """Where one static-path call spends its time (the device synchronised at each phase boundary)."""
    stats: dict[str, float] = {}
    graphs = next(model.parameters()).device.type == "cuda"
    backend = "inductor" if cfg.compile else None
    static_decode.generate_chunk(model, tok, prompts, cfg, torch.Generator(next(model.parameters()).device),
                                 cache_kwarg(model), graphs, backend, stats=stats)  # fmt: skip
    parts = ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in stats.items())
    print(f"  phases of {label}: {parts}", flush=True)


@torch.no_grad()
def check(model, tok, prompts: list[str], enc, common: dict, configs: dict, args: argparse.Namespace) -> None:
    """How closely the static paths agree with plain generate, with the eager step and with a full forward."""
    device = torch.device(args.device)
    eager = SamplingConfig(decoder="static", compile=False, max_new_tokens=args.new_tokens, temperature=0)
    reference = static_decode.generate_chunk(
        model, tok, prompts, eager, torch.Generator(device), cache_kwarg(model), graphs=False
    )[2]  # the same step, never captured nor compiled
    theirs = model.generate(**enc, **common)[:, enc["input_ids"].shape[1] :]
    same = (reference[:, :16] == theirs[:, :16]).all(1).float().mean().item()
    print(f"check: eager static step: first 16 greedy tokens equal generate's in {same:.0%} of sequences", flush=True)
    for label, cfg in configs.items():
        if cfg.decoder != "static":
            continue
        ours = generate(model, tok, prompts, cfg).response_ids
        width = min(ours.shape[1], reference.shape[1])
        same = (ours[:, :width] == reference[:, :width]).float().mean().item()
        sampled = cfg.model_copy(update=dict(temperature=1.0, top_p=0.9, repetition_penalty=1.1))
        g = generate(model, tok, prompts, sampled, seed=1)
        ids, mask = torch.cat([g.prompt_ids, g.response_ids], 1), torch.cat([g.prompt_mask, g.response_mask], 1)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
        p = g.prompt_ids.shape[1]
        full = torch.log_softmax(logits[:, p - 1 : -1].float(), -1).gather(2, g.response_ids[..., None]).squeeze(2)
        err = ((full - g.logprobs) * g.response_mask).abs()
        print(
            f"check: {label}: greedy tokens equal the eager step's: {same:.1%}; sampled (top-p 0.9, penalty 1.1) "
            f"log-probs vs a full forward: max |diff| {err.max().item():.3g}, mean {err.mean().item():.2g}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", nargs="+", default=["135m", "1b", "7b"], choices=list(SHAPES))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-static", action="store_true", help="Skip generate with the static cache (it compiles).")
    ap.add_argument("--lora", action="store_true", help="Wrap each model in a LoRA adapter (r 16, all linear).")
    ap.add_argument("--no-check", action="store_true", help="Skip the agreement checks.")
    ap.add_argument("--paths", nargs="+", default=["dynamic", "static", "static+compile"], help="sparring's paths.")
    ap.add_argument("--new-width", action="store_true", help="Also time static+compile on changing prompt widths.")
    args = ap.parse_args(argv)
    dtype = torch.bfloat16
    # On a CPU this script is only a smoke test, and a CPU without AVX512-BF16 or AMX emulates bf16:
    # one 4096^2 product took minutes on a 2-core AMD EPYC without AVX-512, so the peak uses 512^2 there.
    peak = matmul_peak(args.device, dtype, n=4096 if args.device.startswith("cuda") else 512)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
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
