"""What a run directory holds, read back: its players (the last iterate or the averaged defender, as
other runs, `eval`, `redteam` and `exploit` load them) and the summary of its metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.torch import load_file

from sparring.averaging import StageAverage
from sparring.errors import SparringError
from sparring.models import LoadedModel, add_lora, load_adapter, load_model, restore_weights


def player_model(settings, warm: Path):
    """A player's model: the configured one, or -- after a warm-up -- the SFT model merged into the
    base with a fresh adapter, so the frozen reference is the SFT policy as in the paper."""
    if not (warm / "complete.json").exists():
        loaded = load_model(settings.model)
        return loaded.model, loaded.tokenizer
    base = load_model(settings.model.model_copy(update={"lora": None}))
    if settings.model.lora is None:
        base.model.load_state_dict(load_file(str(warm / "model.safetensors")), strict=False)
        return base.model, base.tokenizer
    merged = load_adapter(base.model, warm).merge_and_unload()
    return add_lora(merged, settings.model.lora), base.tokenizer


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc keeps them otherwise, so RSS
    would stay at the warm-up's high-water mark for the whole run)."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def frozen_start(settings, role: str):
    """A player taken from another run (``init_from``): that run's model merged, with a fresh adapter,
    so its weights are this game's start and reference."""
    source = Path(settings.init_from)
    if not (source / "config.yaml").exists():
        raise SparringError(f"{role}.init_from: '{source}' is not a run directory (no config.yaml)")
    loaded = load_run_player(source, role, averaged=settings.init_averaged)
    model = loaded.model.merge_and_unload() if hasattr(loaded.model, "merge_and_unload") else loaded.model
    if settings.model.lora is not None:
        model = add_lora(model, settings.model.lora)
    return model, loaded.tokenizer


def load_run_player(run_dir: Path, role: str = "defender", averaged: bool = False) -> LoadedModel:
    """A trained player from a run directory: its model as of the latest checkpoint, or with ``averaged``
    the defender averaged over its stage ends (averaging.py)."""
    from sparring.config import load_config
    from sparring.runlog import Checkpoints

    cfg = load_config(run_dir / "config.yaml")
    settings = getattr(cfg, role)
    model, tokenizer = player_model(settings, run_dir / "warmup" / role)
    latest = Checkpoints(run_dir / "checkpoints", cfg.run.keep_checkpoints).latest()
    if latest is None:
        raise SparringError(f"run '{run_dir}' has no complete checkpoint yet")
    if not (latest / role).exists():
        raise SparringError(f"run '{run_dir}' has no {role} (mode {cfg.mode})")
    restore_weights(model, latest / role)
    name = f"{run_dir}#{role}"
    if averaged:
        meta = json.loads((latest / "game.json").read_text())
        if role != "defender" or not meta.get("average_count"):
            raise SparringError(
                f"run '{run_dir}' has no averaged {role}: only the defender is averaged, at the end of each of its "
                "stages, and this checkpoint has none yet", hint="drop --averaged to use the last iterate"
            )  # fmt: skip
        StageAverage.load(latest / role, meta["average_count"]).apply(model)
        name += "#averaged"
    return LoadedModel(model.eval(), tokenizer, next(model.parameters()).device, name)


def stage_blocks(metrics: list[dict]) -> list[list[dict]]:
    """Split the step metrics into contiguous blocks of one stage (D steps, then A steps, ...)."""
    blocks: list[list[dict]] = []
    for m in metrics:
        if not blocks or blocks[-1][0]["stage"] != m["stage"]:
            blocks.append([])
        blocks[-1].append(m)
    return blocks


def summarise(metrics: list[dict], evals: dict) -> dict:
    """Held-out evaluations, and for each stage the in-training ASR at the start and end of its blocks."""
    summary: dict = {
        "steps": len(metrics),
        "eval": {
            k: {kk: v[kk] for kk in ("asr", "over_refusal", "over_refusal_ordinary") if kk in v}
            for k, v in evals.items()
        },
    }
    if "end" in evals and "end_averaged" in evals:  # negative: the averaged defender did better on that measure
        last, avg = evals["end"], evals["end_averaged"]
        summary["averaged_minus_last"] = {
            **{f"asr_{k}": round(avg["asr"][k] - last["asr"][k], 6) for k in last["asr"]},
            **{k: round(avg[k] - last[k], 6) for k in ("over_refusal", "over_refusal_ordinary") if k in last},
        }
    for stage in ("defender", "attacker"):
        blocks = [b for b in stage_blocks(metrics) if b[0]["stage"] == stage]
        if not blocks:
            continue
        third = [max(len(b) // 3, 1) for b in blocks]
        summary[stage] = {
            "steps": sum(len(b) for b in blocks),
            "blocks": len(blocks),
            # ASR of the training batches in the first and the last third of each block, averaged over blocks
            "asr_block_start": float(np.mean([m["asr"] for b, t in zip(blocks, third, strict=True) for m in b[:t]])),
            "asr_block_end": float(np.mean([m["asr"] for b, t in zip(blocks, third, strict=True) for m in b[-t:]])),
            "diversity_within_batch": float(np.mean([m["diversity_within_batch"] for b in blocks for m in b])),
            "self_bleu_vs_history": float(np.mean([m["self_bleu"] for b in blocks for m in b])),
        }
    return summary
