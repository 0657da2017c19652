"""The paper's comparison at small scale: GPO, GPO without diversity and RLHF, same budget and seed.

Each mode trains into DIR/MODE (a finished run is reused, an interrupted one resumed); then every
final defender -- and the untrained starting model -- answers the same held-out harmful and
benign-but-edgy prompts (Table 1), and each GPO attacker rewrites the same held-out seeds, whose
transfer ASR against the starting model and diversity are measured (Table 2).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from sparring.config import GameConfig
from sparring.data import load_prompt_set
from sparring.diversity import load_embedder
from sparring.evaluate import evaluate_sets, format_rate
from sparring.game import held_out, load_run_player
from sparring.judges import RefusalJudge, load_judge
from sparring.models import load_model
from sparring.redteam import diversity, pick_seeds, transfer, write_attacks

MODES = ("gpo", "gpo-nodiv", "rlhf")


def train_all(base: GameConfig, folder: Path, modes: tuple[str, ...], play: Callable[[GameConfig, Path, bool], None]):
    """Train (or reuse, or resume) one run per mode; ``play(cfg, run_dir, resume)`` runs one game."""
    for mode in modes:
        run_dir = folder / mode
        if (run_dir / "summary.json").exists():
            continue
        cfg = base.model_copy(update={"mode": mode, "run": base.run.model_copy(update={"dir": folder, "name": mode})})
        play(cfg, run_dir, (run_dir / "config.yaml").exists())


def compare(base: GameConfig, folder: Path, modes: tuple[str, ...], eval_size: int, attacks: int) -> dict:
    """Table 1 (held-out ASR / over-refusal of each defender) and Table 2 (each attacker's transfer ASR
    and diversity), with bootstrap 95% intervals; written to DIR/comparison.json and .md."""
    seeds = set(load_prompt_set(base.data.harmful_seeds))
    benign_train = set(load_prompt_set(base.data.benign)) if base.data.benign_per_step else set()
    harmful = held_out(base.data.eval_harmful, seeds, eval_size, base.run.seed)
    edgy = held_out(base.data.eval_benign, benign_train, eval_size, base.run.seed)
    judges = {base.judge.spec: load_judge(base.judge.spec, threshold=base.judge.threshold), "refusal": RefusalJudge()}

    start = load_model(base.defender.model.model_copy(update={"lora": None}))  # the untrained defender
    defenders = {"start (untrained)": (start.model, start.tokenizer)}
    for mode in modes:
        loaded = load_run_player(folder / mode, "defender")
        defenders[mode] = (loaded.model, loaded.tokenizer)
    table1 = {
        name: evaluate_sets(
            model, tok, judges, {"harmful": harmful}, {"benign-edgy": edgy}, base.run.eval_max_new_tokens,
            base.defender.system_prompt, base.judge.threshold,
        )
        for name, (model, tok) in defenders.items()
    }  # fmt: skip

    red_seeds = pick_seeds(harmful, attacks, base.run.seed)
    embed = load_embedder(base.diversity.embedder)
    target = {"start": (start.model, start.tokenizer)}

    def measure(attack_set: list[str]) -> dict:
        asr = transfer(attack_set, target, judges, base.run.eval_max_new_tokens)["start"]["asr"]
        return {"transfer": asr, "diversity": diversity(attack_set, embed)}

    table2 = {"seeds themselves": measure(red_seeds)}
    for mode in (m for m in modes if m != "rlhf"):
        writer = load_run_player(folder / mode, "attacker")
        table2[mode] = measure(write_attacks(writer.model, writer.tokenizer, base.attacker, red_seeds, base.run.seed))
    result = {"modes": list(modes), "steps": base.schedule.steps, "seed": base.run.seed, "table1": table1}
    result["table2"] = table2
    (folder / "comparison.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    (folder / "comparison.md").write_text(markdown(result, base.judge.spec))
    return result


def markdown(result: dict, judge: str) -> str:
    """The two tables as Markdown, intervals in brackets."""
    lines = [
        f"Table 1 -- held-out defender evaluation ({result['steps']} steps, seed {result['seed']}; 95% bootstrap CI)",
        "",
        f"| defender | ASR ({judge}) | ASR (refusal matcher) | mean safe reward | over-refusal (benign-edgy) |",
        "|---|---|---|---|---|",
    ]
    for name, res in result["table1"].items():
        h, b = res["harmful"]["harmful"], res["benign"]["benign-edgy"]
        lines.append(
            f"| {name} | {format_rate(h['asr'][judge])} | {format_rate(h['asr']['refusal'])} | "
            f"{format_rate(h['mean_safe_reward'][judge]) if judge in h['mean_safe_reward'] else 'n/a'} | "
            f"{format_rate(b['over_refusal'])} |"
        )
    lines += [
        "",
        "Table 2 -- attackers on held-out seeds, against the untrained defender",
        "",
        f"| attacks by | transfer ASR ({judge}) | transfer ASR (refusal matcher) | 1 - SelfBLEU | embedding div. |",
        "|---|---|---|---|---|",
    ]
    for name, res in result["table2"].items():
        d = res["diversity"]
        lines.append(
            f"| {name} | {format_rate(res['transfer'][judge])} | {format_rate(res['transfer']['refusal'])} | "
            f"{d['one_minus_self_bleu']:.3f} | {d['embedding_diversity']:.3f} |"
        )
    return "\n".join(lines) + "\n"
