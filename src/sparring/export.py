"""A trained player as a plain Hugging Face model directory: what a user takes away from a run.

The directory holds merged weights (safetensors), the tokenizer with its chat template, a generation
config with the run's sampling settings and a model card with the run's config and held-out evaluation,
so ``AutoModelForCausalLM.from_pretrained(DIR)`` loads it without sparring installed. With a warm-up the
trained adapter sits on the warm-up's merged weights, not on the original model, so an adapter alone
would not load on the base the user has: an adapter-only export is offered only for runs without one.
"""

from __future__ import annotations

import json
from pathlib import Path

from sparring.errors import SparringError

CARD = """---
library_name: transformers
tags: [sparring, gpo, safety]
---
# {name}

The {role} of the sparring run `{run}` ({mode}, {steps} game steps, seed {seed}){averaged}, exported by
`sparring export`. sparring trains an attacker and a defender against each other (GPO, arXiv 2406.10977);
the base model is `{base}`.

## Held-out evaluation of this run
{evaluation}

## Use
```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("{out}")
tokenizer = AutoTokenizer.from_pretrained("{out}")
```

## The run's configuration
```yaml
{config}
```
"""


def _evaluation(run_dir: Path, averaged: bool) -> str:
    """The run's held-out figures as a Markdown table (eval.json: ASR by each judge, over-refusal)."""
    path = run_dir / "eval.json"
    evals = json.loads(path.read_text()) if path.exists() else {}
    rows = []
    for label, result in evals.items():
        if not isinstance(result, dict) or "asr" not in result:
            continue
        asr = ", ".join(f"{judge} {value:.3f}" for judge, value in result["asr"].items())
        refusal = f"{result.get('over_refusal', float('nan')):.3f}"
        ordinary = result.get("over_refusal_ordinary")
        mark = " (this model)" if label == ("end_averaged" if averaged else "end") else ""
        rows.append(f"| {label}{mark} | {result.get('n_harmful', '')} | {asr} | {refusal} | "
                    f"{'' if ordinary is None else f'{ordinary:.3f}'} |")  # fmt: skip
    if not rows:
        return "The run kept no held-out evaluation (`run.eval_at_end=false`); measure it with `sparring eval`."
    head = "| when | harmful prompts | ASR by judge | over-refusal (edgy) | over-refusal (ordinary) |"
    return "\n".join([head, "|---|---|---|---|---|", *rows])


def export_player(run_dir: Path, out: Path, role: str = "defender", averaged: bool = False,
                  adapter_only: bool = False) -> Path:  # fmt: skip
    """Write ``run_dir``'s ``role`` (its latest checkpoint, or the averaged defender) to ``out``."""
    from transformers import GenerationConfig

    from sparring.averaging import is_lora
    from sparring.config import dump_config, load_config
    from sparring.runlog import check_writable
    from sparring.runs import load_run_player

    if not (run_dir / "config.yaml").exists():
        raise SparringError(f"'{run_dir}' is not a run directory (no config.yaml)", hint="pass the run's folder")
    if out.exists() and any(out.iterdir()):
        raise SparringError(f"'{out}' already exists and is not empty", hint="choose a new --out folder")
    cfg = load_config(run_dir / "config.yaml")
    settings = getattr(cfg, role)
    warmed = (run_dir / "warmup" / role / "complete.json").exists()
    if adapter_only and (warmed or settings.model.lora is None or averaged):
        why = ("the adapter was trained on the warm-up's merged weights, which the base model lacks" if warmed
               else "the run trained the full model" if settings.model.lora is None
               else "the averaged defender is a rank n*r adapter built at load time")  # fmt: skip
        raise SparringError(
            f"cannot export only the adapter: {why}", hint="drop --adapter-only to export merged weights"
        )
    loaded = load_run_player(run_dir, role, averaged=averaged)
    check_writable(out)  # creates it
    model = loaded.model
    if is_lora(model) and not adapter_only:
        model = model.merge_and_unload(adapter_names=[model.active_adapter])
    model.save_pretrained(out, safe_serialization=True)
    loaded.tokenizer.save_pretrained(out)
    s = settings.sampling
    GenerationConfig(
        do_sample=s.temperature > 0, temperature=s.temperature if s.temperature > 0 else None,
        top_p=s.top_p, repetition_penalty=s.repetition_penalty, max_new_tokens=cfg.run.eval_max_new_tokens,
        eos_token_id=loaded.tokenizer.eos_token_id, pad_token_id=loaded.tokenizer.pad_token_id,
    ).save_pretrained(out)  # fmt: skip
    card = CARD.format(
        name=out.name, role=role, run=run_dir.name, mode=cfg.mode, steps=cfg.schedule.steps, seed=cfg.run.seed,
        averaged=", averaged over its defender stages" if averaged else "", base=settings.model.spec,
        evaluation=_evaluation(run_dir, averaged), out=out, config=dump_config(cfg).strip(),
    )  # fmt: skip
    (out / "README.md").write_text(card, encoding="utf-8")
    return out
