"""`sparring plan`: the memory a game needs, per device, from its config alone -- before anything loads.

Shapes come from each model's config (read from a local directory or the Hugging Face cache, never the
weights) and parameters are counted on PyTorch's meta device, so a 7B plan costs nothing. The estimate
is what a careful engineer would write on paper: weights, gradients, AdamW state, fp32 masters, the frozen
reference and the judge and embedder stay for the whole run; activations of one micro-batch (Korthikanti et
al. 2022 with fused attention, 16-bit: 34·s·b·h bytes per layer; 2·s·b·h with gradient checkpointing) plus
the logits, and the KV cache of one generation batch, come and go by phase, so a device needs its resident
parts plus its largest transient one. Allocator slack and framework overhead are not in it: leave 10-20 %.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import torch

from sparring.config import GameConfig, PlayerConfig
from sparring.errors import SparringError

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
MINILM_PARAMS = 22_713_216  # all-MiniLM-L6-v2: the bundled judge's encoder and the diversity embedder
# SmolLM2-135M-Instruct (the bundled GGUF's config.json once converted), so a plan needs no conversion
SMOLLM2 = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
           "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152,
           "tie_word_embeddings": True, "max_position_embeddings": 8192}  # fmt: skip


@dataclass
class Shape:
    """What the arithmetic needs of one model."""

    params: int
    lora_params: dict[int, int]  # rank -> adapter parameters over every linear layer but the head
    layers: int
    hidden: int
    heads: int
    kv_dim: int  # key/value width per layer: kv_heads * head_dim
    vocab: int


@dataclass
class Line:
    device: str
    part: str
    bytes: int
    how: str
    transient: bool = False  # held during one phase only (an update's activations, a generation's cache)


def model_config(spec: str, trust_remote_code: bool = False):
    """A model's transformers config without its weights: tiny and bundled from code, else config.json."""
    from transformers import AutoConfig, LlamaConfig

    if spec == "tiny" or spec.startswith("tiny:"):
        from sparring.models import tiny_config

        return tiny_config(spec.removeprefix("tiny").removeprefix(":"))
    if spec == "bundled:smollm2-135m-instruct":
        return LlamaConfig(**{k: v for k, v in SMOLLM2.items() if k != "model_type"})
    if spec.endswith(".gguf"):
        raise SparringError(f"plan reads a config.json; '{spec}' is a GGUF file", hint="pass its converted directory")
    try:
        return AutoConfig.from_pretrained(str(Path(spec).expanduser()) if Path(spec).expanduser().is_dir() else spec,
                                          trust_remote_code=trust_remote_code)  # fmt: skip
    except (OSError, ValueError) as exc:
        raise SparringError(
            f"could not read the config of '{spec}' ({exc.__class__.__name__})",
            hint="plan needs the model's config.json: a local directory, the Hugging Face cache, or network",
        ) from exc


def shape(spec: str, ranks: tuple[int, ...] = (), trust_remote_code: bool = False) -> Shape:
    """Count a model's parameters (and its LoRA adapters' at each rank) on the meta device."""
    from transformers import AutoModelForCausalLM

    config = model_config(spec, trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    linears = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in name]
    text = config.get_text_config()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return Shape(
        params=sum(p.numel() for p in model.parameters()),
        lora_params={r: sum(r * (m.in_features + m.out_features) for m in linears) for r in ranks},
        layers=text.num_hidden_layers,
        hidden=text.hidden_size,
        heads=text.num_attention_heads,
        kv_dim=getattr(text, "num_key_value_heads", text.num_attention_heads) * head_dim,
        vocab=text.vocab_size,
    )


def _device(device: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def player_lines(
    role: str, p: PlayerConfig, prompt_tokens: int, batch: int, sampled: int, processes: int = 1
) -> list[Line]:
    """One player's memory on each device: model, training state, activations of one micro-batch, generation
    KV cache. A sharded player (``rl.shard=fsdp``) keeps 1/``processes`` of its fp32 weights (the masters),
    gradients, AdamW state and reference, plus one decoder layer gathered at a time."""
    m, rl = p.model, p.rl
    device, width = _device(m.device), BYTES[m.dtype]
    s = shape(m.spec, (m.lora.rank,) if m.lora else (), m.trust_remote_code)
    if rl.shard == "fsdp" and not m.lora:
        n = processes
        layer = s.params // max(s.layers, 1)
        lines = [
            Line(device, f"{role}: fp32 weights (masters), 1/{n}", s.params * 4 // n,
                 f"{s.params / 1e6:,.1f}M x 4 B / {n}"),
            Line(device, f"{role}: gradients, 1/{n}", s.params * 4 // n, f"fp32, reduce-scattered, / {n}"),
            Line(device, f"{role}: AdamW state, 1/{n}", s.params * 8 // n, f"two fp32 moments / {n}"),
            Line(device, f"{role}: frozen reference, 1/{n}", s.params * width // n, f"{width} B per param / {n}"),
            Line(device, f"{role}: gathered layers", 2 * 2 * layer * width, f"two layers at a time x ({m.dtype}), "
                 "policy and reference"),
        ]  # fmt: skip
        lines += _transient_lines(role, p, s, device, width, prompt_tokens, batch, sampled)
        return lines
    how = f"{s.params / 1e6:,.1f}M params x {width} B ({m.dtype})"
    lines = [Line(device, f"{role}: weights", s.params * width, how)]
    if m.lora:
        trained = s.lora_params[m.lora.rank]
        lines.append(
            Line(
                device,
                f"{role}: LoRA adapter + grads + AdamW",
                trained * 16,
                f"{trained / 1e6:,.2f}M params x (4 + 4 + 8) B, fp32; the reference is the adapter off",
            )
        )
    else:
        trained = s.params
        masters = width < 4 and rl.master_weights == "fp32"
        state = 8 if (masters or width == 4) else 2 * width
        lines += [
            Line(device, f"{role}: gradients", trained * width, f"{width} B per trained param"),
            Line(device, f"{role}: AdamW state", trained * state, f"two moments x {state // 2} B"),
            Line(device, f"{role}: frozen reference", s.params * width, "a second copy (full fine-tuning)"),
        ]
        if masters:
            lines.append(Line(device, f"{role}: fp32 master weights", trained * 4, "rl.master_weights=fp32"))
    if rl.algo == "ppo" and rl.critic_model:
        c = shape(rl.critic_model)
        lines.append(Line(device, f"{role}: critic (weights, grads, AdamW)", c.params * (width * 2 + 8),
                          f"{c.params / 1e6:,.1f}M params, trained fully"))  # fmt: skip
    return lines + _transient_lines(role, p, s, device, width, prompt_tokens, batch, sampled)


def _transient_lines(
    role: str, p: PlayerConfig, s: Shape, device: str, width: int, prompt_tokens: int, batch: int, sampled: int
) -> list[Line]:
    """Activations of one micro-batch and the KV cache of one generation batch: they come and go by phase."""
    rl, lines = p.rl, []
    seq, b = prompt_tokens + p.sampling.max_new_tokens, rl.micro_batch_size
    per_layer = (2 if rl.gradient_checkpointing else 34) * seq * b * s.hidden
    act_bytes = int(per_layer * s.layers * width / 2) + 3 * b * seq * s.vocab * 4  # + fp32 logits, log-softmax, grad
    how = f"{b} seqs x {seq} tokens" + (", checkpointed" if rl.gradient_checkpointing else "")
    lines.append(Line(device, f"{role}: activations (one micro-batch)", act_bytes, how, True))
    rows = min(p.sampling.batch_size, batch * sampled)
    kv = 2 * s.layers * s.kv_dim * (prompt_tokens + p.sampling.max_new_tokens) * rows * width
    lines.append(Line(device, f"{role}: KV cache (generation)", kv, f"{rows} rows x {seq} tokens", True))
    return lines


def plan(cfg: GameConfig, prompt_tokens: int = 128, processes: int = 1) -> list[Line]:
    """Every component of the game's memory, by device, for one of ``processes`` launched processes."""
    d = cfg.data
    lines = player_lines("defender", cfg.defender, prompt_tokens,
                         d.seeds_per_step + d.benign_per_step, cfg.defender.samples_per_prompt, processes)  # fmt: skip
    if cfg.mode not in ("rlhf",):
        attacker_prompt = prompt_tokens + 64  # the rewriting template around a seed
        attacker = player_lines("attacker", cfg.attacker, attacker_prompt, d.attacker_seeds_per_step,
                                cfg.attacker.samples_per_prompt, processes)  # fmt: skip
        if cfg.shared_base:  # one base under both adapters (shared_base.py); each warm-up stays as a frozen adapter
            shared = Line(attacker[0].device, "attacker: weights", 0, "shared with the defender (shared_base)")
            attacker = [shared if line.part == "attacker: weights" else line for line in attacker]
            m = cfg.defender.model
            adapter = shape(m.spec, (m.lora.rank,), m.trust_remote_code).lora_params[m.lora.rank] if m.lora else 0
            warmed = [
                r for r, n in (("defender", cfg.warmup.defender_steps), ("attacker", cfg.warmup.attacker_steps)) if n
            ]
            lines += [Line(_device(m.device), f"{r}: frozen warm-up adapter", adapter * 4,
                           f"{adapter / 1e6:,.2f}M params x 4 B, fp32") for r in warmed]  # fmt: skip
        lines += attacker
    spec = cfg.judge.spec
    if spec.startswith("guard:") or spec.startswith("reward:"):
        target, _, query = spec.split(":", 1)[1].partition("?")
        g = shape(target)
        device = _device(cfg.defender.model.device)  # the game puts its judge beside the defender
        dtype = dict(parse_qsl(query)).get("dtype", "auto")
        if dtype == "auto":  # as judges.judge_dtype decides
            dtype = "bf16" if device == "cuda" else "fp32"
        width = 4 if dtype == "fp32" else 2
        lines.append(Line(device, f"judge {spec}", g.params * width,
                          f"{g.params / 1e6:,.1f}M params x {width} B ({dtype})"))  # fmt: skip
    elif spec in ("bundled", "bundled-v2", "bundled-v1"):
        lines.append(Line("cpu", "judge (bundled MiniLM)", MINILM_PARAMS * 4, "22.7M params x 4 B"))
    lines.append(Line("cpu", "diversity embedder (MiniLM)", MINILM_PARAMS * 4, "22.7M params x 4 B"))
    return lines


def available(device: str) -> int | None:
    """Bytes this machine has on ``device`` (None if it has no such device)."""
    if device == "cuda":
        return torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else None
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def totals(lines: list[Line]) -> dict[str, int]:
    """Per device: resident parts plus the largest transient one (phases do not overlap)."""
    out: dict[str, int] = {}
    for device in dict.fromkeys(line.device for line in lines):
        mine = [line for line in lines if line.device == device]
        peak = max((line.bytes for line in mine if line.transient), default=0)
        out[device] = sum(line.bytes for line in mine if not line.transient) + peak
    return out
