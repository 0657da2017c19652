"""The ``sparring`` command line: thin wrappers that parse options and call the library."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from sparring.defaults import DEFAULT_MODEL
from sparring.errors import SparringError

app = typer.Typer(
    name="sparring",
    help="Align a chat model by a two-player game (GPO): an attacker LLM against a defender LLM.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()
_state = {"debug": False}


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for errors.")] = False,
) -> None:
    """sparring: GPO training, evaluation and red-teaming."""
    _state["debug"] = debug
    quiet_libraries()


def quiet_libraries() -> None:
    """Hide transformers' per-load progress bars and info logs: our own display says what happens."""
    import warnings

    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore", category=FutureWarning)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _fail(error: Exception) -> None:
    if _state["debug"]:
        console.print_exception()
    console.print(Text.assemble(("error: ", "bold red"), str(error)), soft_wrap=True, highlight=False)
    raise typer.Exit(code=2)


@app.command()
def generate(
    model: Annotated[
        str, typer.Option("--model", "-m", help="Model spec: bundled:NAME, tiny, DIR, FILE.gguf or Hub id.")
    ] = DEFAULT_MODEL,
    prompt: Annotated[list[str] | None, typer.Option("--prompt", "-p", help="A prompt (repeatable).")] = None,
    prompts: Annotated[
        Path | None, typer.Option("--prompts", help="File of prompts (.txt, .csv, .jsonl, .json).")
    ] = None,
    column: Annotated[str | None, typer.Option(help="Column/field holding the prompt in csv/jsonl files.")] = None,
    system: Annotated[str | None, typer.Option(help="System message.")] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 128,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 = greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0)] = 1.0,
    repetition_penalty: Annotated[float, typer.Option(min=0.0)] = 1.0,
    seed: int = 0,
    dtype: Annotated[str, typer.Option(help="fp32, bf16 or fp16.")] = "fp32",
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
    lora: Annotated[Path | None, typer.Option(help="Directory of a saved PEFT adapter to apply.")] = None,
) -> None:
    """Print a model's answers to prompts: the quick way to look at any model or checkpoint."""
    try:
        from sparring.data import read_prompts
        from sparring.display import safe_text
        from sparring.generation import SamplingConfig
        from sparring.generation import generate as run_generate
        from sparring.models import ModelConfig, chat_prompt, load_adapter, load_model

        items = list(prompt or [])
        if prompts is not None:
            items += read_prompts(prompts, column)
        if not items:
            raise SparringError("no prompts given", hint='use --prompt "..." or --prompts FILE')
        config = _validated(ModelConfig, spec=model, dtype=dtype, device=device)
        sampling = _validated(
            SamplingConfig,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
        )
        start = time.perf_counter()
        with console.status(f"loading {model}"):
            loaded = load_model(config)
            if lora is not None:
                loaded.model = load_adapter(loaded.model, lora)
        loaded_at = time.perf_counter()
        formatted = [chat_prompt(loaded.tokenizer, p, system) for p in items]
        with console.status(f"generating {len(items)} answer(s)"):
            result = run_generate(loaded.model, loaded.tokenizer, formatted, sampling, seed=seed)
        done = time.perf_counter()
        for text_in, text_out in zip(items, result.texts, strict=True):
            out.print(safe_text("> " + text_in, style="bold cyan"))
            out.print(safe_text(text_out))
            out.print()
        console.print(
            f"[dim]load {loaded_at - start:.1f}s · generate {done - loaded_at:.1f}s · "
            f"{result.num_tokens / max(done - loaded_at, 1e-9):.0f} tok/s[/]"
        )
    except SparringError as error:
        _fail(error)


@app.command()
def judge(
    input: Annotated[Path, typer.Option("--input", "-i", help="JSONL of {prompt, response[, label][, kind]} rows.")],
    judge_spec: Annotated[
        str, typer.Option("--judge", "-j", help="Judge spec: bundled, bundled-v1, refusal, guard:M, reward:M, remote:…")
    ] = "bundled",
    compare: Annotated[
        list[str] | None,
        typer.Option("--compare", "-c", help="Another judge to score the same rows beside it (repeatable)."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the rows back with p_unsafe (and p_unsafe_by_judge) added."),
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write every figure as JSON.")] = None,
    threshold: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.5,
    device: str = "cpu",
) -> None:
    """Score a file of prompt/response pairs with one judge or several side by side.

    Rows with a label get agreement, AUC and calibration error; rows with a kind also get the
    confusion per kind (how many of each kind each judge flags, and how many of those calls are wrong).
    """
    try:
        import json

        from rich.table import Table

        from sparring.display import safe_text
        from sparring.evaluate import judge_report, read_pairs
        from sparring.judges import load_judge

        rows = read_pairs(input)
        specs = list(dict.fromkeys([judge_spec, *(compare or [])]))
        scores, reports, seconds = {}, {}, {}
        for spec in specs:
            with console.status(f"loading judge {spec}"):
                scorer = load_judge(spec, device=device, threshold=threshold)
            with console.status(f"scoring {len(rows)} pairs with {spec}"):
                start = time.perf_counter()
                scores[spec] = scorer.score([r["prompt"] for r in rows], [r["response"] for r in rows])
                seconds[spec] = time.perf_counter() - start
            reports[spec] = {**judge_report(scores[spec], rows, threshold), "seconds": seconds[spec]}
        table = Table(title=safe_text(f"{input.name}: {len(rows)} pairs"))
        table.add_column("metric")
        for spec in specs:
            table.add_column(safe_text(spec), justify="right", no_wrap=True)
        metrics = ["mean_p_unsafe", "share_unsafe", "labelled", "accuracy", "balanced_accuracy",
                   "precision_unsafe", "recall_unsafe", "auc", "ece", "seconds"]  # fmt: skip
        for key in metrics:
            if key in reports[specs[0]]:
                cells = [reports[s][key] for s in specs]
                name = key.replace("_", " ") + (f" (>= {threshold})" if key == "share_unsafe" else "")
                table.add_row(name, *[f"{c:.3f}" if isinstance(c, float) else str(c) for c in cells])
        kinds = reports[specs[0]].get("by_kind", {})
        for kind, first in kinds.items():
            labelled_unsafe = first["tp"] + first["fn"]
            cells = []
            for spec in specs:
                e = reports[spec]["by_kind"][kind]
                cells.append(f"{e['tp'] + e['fp']}/{e['n']} flagged, {e['fp'] + e['fn']} wrong")
            table.add_row(safe_text(f"kind {kind} ({labelled_unsafe}/{first['n']} unsafe)"), *cells)
        out.print(table)
        if output is not None:
            with output.open("w", encoding="utf-8") as handle:
                for i, row in enumerate(rows):
                    extra = {"p_unsafe": round(float(scores[specs[0]][i]), 6)}
                    if len(specs) > 1:
                        extra["p_unsafe_by_judge"] = {s: round(float(scores[s][i]), 6) for s in specs}
                    handle.write(json.dumps({**row, **extra}, ensure_ascii=False) + "\n")
            console.print(f"wrote {output}")
        if json_path is not None:
            json_path.write_text(json.dumps({"input": str(input), "threshold": threshold, "judges": reports},
                                            indent=2) + "\n", encoding="utf-8")  # fmt: skip
            console.print(f"wrote {json_path}")
    except SparringError as error:
        _fail(error)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def train(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue the run in this directory from its last checkpoint.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display; print the summary only.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object per event on stdout.")] = False,
) -> None:
    """Play the GPO game. Extra arguments are dotted overrides, e.g. schedule.steps=20 defender.rl.lr=1e-4."""
    try:
        import json
        import time as _time

        from sparring.config import check_resumable, dump_config, load_config
        from sparring.game import Game
        from sparring.runlog import atomic_write

        overrides = list(ctx.args)
        if resume is not None:
            if not (resume / "config.yaml").exists():
                raise SparringError(f"'{resume}' is not a run directory (no config.yaml)", hint="pass the run's folder")
            stored = load_config(resume / "config.yaml")
            cfg = load_config(resume / "config.yaml", overrides)
            run_dir = resume
            check_resumable(stored, cfg, run_dir)
            if overrides:  # the run's config.yaml says what it is now playing to
                atomic_write(run_dir / "config.yaml", dump_config(cfg))
        else:
            cfg = load_config(config, overrides)
            name = cfg.run.name or f"{cfg.mode}-seed{cfg.run.seed}-{_time.strftime('%Y%m%d-%H%M%S')}"
            run_dir = cfg.run.dir / name
            if (run_dir / "config.yaml").exists():
                raise SparringError(
                    f"run directory '{run_dir}' already holds a run",
                    hint=f"resume it with --resume {run_dir}, or choose another run.name",
                )
        import os

        from sparring.distributed import leave, shut_down

        try:
            if int(os.environ.get("RANK", "0")) != 0:  # a data-parallel launch: rank 0 alone reports
                Game(cfg, run_dir).play(resume=resume is not None)
            else:
                summary, display = _play(
                    cfg, run_dir, resume is not None, "json" if json_output else "quiet" if quiet else "live"
                )
                if json_output:
                    print(json.dumps({"event": "summary", "run_dir": str(run_dir), **summary}), flush=True)
                else:
                    display.summary(summary, run_dir)
        finally:
            shut_down()
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            leave(0)
    except SparringError as error:
        _fail(error)


def _play(cfg, run_dir: Path, resume: bool, mode: str):
    """Play one game under the progress display (live, quiet or json); returns its summary and the display."""
    from sparring.game import Game
    from sparring.progress import GameDisplay

    display = GameDisplay(cfg, mode=mode, console=console, out=out)
    with display:
        summary = Game(cfg, run_dir, on_event=display.event).play(resume=resume)
    return summary, display


@app.command(name="config", context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def show_config(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")] = None,
    show: Annotated[
        bool, typer.Option("--show", help="Every field with its value, default (where changed) and description.")
    ] = False,
) -> None:
    """Print the resolved configuration (defaults + file + overrides) as YAML, validated."""
    try:
        from sparring.config import describe_config, dump_config, load_config

        resolved = load_config(config, list(ctx.args))
        text = describe_config(resolved) if show else dump_config(resolved)
        out.print(text, markup=False, highlight=False, soft_wrap=True)
    except SparringError as error:
        _fail(error)


AVERAGED_SUFFIX = "#averaged"  # RUN_DIR#averaged: that run's averaged defender instead of its last iterate


def _load_model_or_run(spec: str, role: str, averaged: bool = False):
    """A model spec, or a run directory (that player as of its last checkpoint; with ``averaged`` or a
    ``#averaged`` suffix, its defender averaged over the ends of its stages)."""
    if spec.endswith(AVERAGED_SUFFIX):
        spec, averaged = spec.removesuffix(AVERAGED_SUFFIX), True
    if (Path(spec) / "config.yaml").exists():
        from sparring.runs import load_run_player

        return load_run_player(Path(spec), role, averaged=averaged)
    if averaged:
        raise SparringError(f"'{spec}' is not a run directory: only a run has an averaged defender")
    from sparring.models import load_model

    return load_model(spec)


def _set_name(spec: str) -> str:
    return spec.removeprefix("bundled:") if spec.startswith("bundled:") else Path(spec).name or spec


@app.command(name="eval")
def evaluate(
    defender: Annotated[
        str, typer.Option("--defender", "-d", help="Model spec, or a run directory (its last checkpoint).")
    ] = DEFAULT_MODEL,
    lora: Annotated[Path | None, typer.Option(help="A saved LoRA adapter to apply to --defender.")] = None,
    averaged: Annotated[
        bool, typer.Option("--averaged", help="With a run directory: its defender averaged over its stage ends.")
    ] = False,
    harmful: Annotated[
        list[str] | None,
        typer.Option(help="Harmful prompt set (repeatable): bundled:NAME, a file, hf:NAME. Default bundled:harmbench."),
    ] = None,
    benign: Annotated[
        list[str] | None,
        typer.Option(
            help="Benign set for over-refusal (repeatable). Default bundled:overrefusal (benign-but-edgy, XSTest "
            "style); add plain benign requests from a file or hf:NAME (bundled:benign is the training diet)."
        ),
    ] = None,
    judge_spec: Annotated[
        list[str] | None,
        typer.Option("--judge", "-j", help="Judge spec (repeatable; the refusal matcher always runs too)."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many prompts per set.")] = 100,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 48,
    system: Annotated[str | None, typer.Option(help="System prompt for the defender.")] = None,
    json_file: Annotated[Path | None, typer.Option("--json", help="Write the numbers to this JSON file.")] = None,
) -> None:
    """ASR by each judge on each harmful set and over-refusal on each benign set, with bootstrap 95% intervals."""
    try:
        import json

        from sparring.data import load_prompt_set
        from sparring.evaluate import evaluate_sets, results_table
        from sparring.judges import RefusalJudge, load_judge
        from sparring.models import load_adapter

        harmful_specs = harmful or ["bundled:harmbench"]
        benign_specs = benign if benign is not None else ["bundled:overrefusal"]
        with console.status(f"loading {defender}"):
            loaded = _load_model_or_run(defender, "defender", averaged)
            if lora is not None:
                loaded.model = load_adapter(loaded.model, lora)
            judges = {spec: load_judge(spec) for spec in judge_spec or ["bundled"]}
            judges["refusal"] = RefusalJudge()
        harmful_sets = {_set_name(spec): load_prompt_set(spec)[:limit] for spec in harmful_specs}
        benign_sets = {_set_name(spec): load_prompt_set(spec)[:limit] for spec in benign_specs}
        total = sum(map(len, [*harmful_sets.values(), *benign_sets.values()]))
        with console.status(f"answering {total} prompts"):
            result = evaluate_sets(
                loaded.model, loaded.tokenizer, judges, harmful_sets, benign_sets, max_new_tokens, system
            )
        out.print(results_table(result, f"{defender}: ASR and over-refusal, 95% bootstrap intervals"))
        if json_file is not None:
            json_file.write_text(json.dumps({"defender": defender, **result}, indent=2, ensure_ascii=False))
            console.print(f"wrote {json_file}")
    except SparringError as error:
        _fail(error)


@app.command()
def redteam(
    attacker: Annotated[
        str, typer.Option("--attacker", "-a", help="A run directory (its trained attacker) or any model spec.")
    ] = DEFAULT_MODEL,
    target: Annotated[
        list[str] | None,
        typer.Option(
            "--target",
            "-t",
            help="Target model spec or run directory (repeatable; RUN#averaged for its averaged "
            "defender). Default: the bundled model.",
        ),
    ] = None,
    seeds: Annotated[str, typer.Option(help="Seed behaviours the attacker rewrites.")] = "bundled:harmbench",
    n: Annotated[int, typer.Option("--n", min=2, help="Number of attacks (one per seed).")] = 64,
    judge_spec: Annotated[
        list[str] | None, typer.Option("--judge", "-j", help="Judge spec (repeatable; the refusal matcher runs too).")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 48,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Write the numbers and the attacks to this file.")
    ] = None,
) -> None:
    """Transfer ASR of an attacker's prompts against target models, and the prompts' diversity (paper Table 2)."""
    try:
        import json

        from rich.table import Table

        from sparring.config import GameConfig, load_config
        from sparring.data import load_prompt_set
        from sparring.display import safe_text
        from sparring.diversity import load_embedder
        from sparring.evaluate import format_rate
        from sparring.judges import RefusalJudge, load_judge
        from sparring.redteam import diversity, pick_seeds, transfer, write_attacks

        is_run = (Path(attacker) / "config.yaml").exists()
        settings = (load_config(Path(attacker) / "config.yaml") if is_run else GameConfig()).attacker
        with console.status(f"loading the attacker {attacker}"):
            writer = _load_model_or_run(attacker, "attacker")
        chosen = pick_seeds(load_prompt_set(seeds), n, seed)
        with console.status(f"writing {len(chosen)} attacks"):
            attacks = write_attacks(writer.model, writer.tokenizer, settings, chosen, seed)
        del writer
        with console.status("loading judges and targets"):
            judges = {spec: load_judge(spec) for spec in judge_spec or ["bundled"]}
            judges["refusal"] = RefusalJudge()
            targets = {}
            for spec in target or [DEFAULT_MODEL]:
                loaded = _load_model_or_run(spec, "defender")
                targets[spec] = (loaded.model, loaded.tokenizer)
        with console.status(f"{len(targets)} target(s) answering {len(attacks)} attacks"):
            results = transfer(attacks, targets, judges, max_new_tokens)
            spread = diversity(attacks, load_embedder())
        table = Table(title=safe_text(f"attacks by {attacker} on {seeds}: transfer ASR, 95% bootstrap intervals"))
        table.add_column("target")
        names = list(judges)
        for name in names:
            table.add_column(safe_text(f"ASR ({name})"), justify="right", no_wrap=True)
        for spec, entry in results.items():
            cells = [format_rate(entry["asr"][j]) for j in names]
            table.add_row(safe_text(spec), *cells)
        out.print(table)
        out.print(
            f"diversity of the {len(attacks)} attacks: 1 - SelfBLEU {spread['one_minus_self_bleu']:.3f}, "
            f"embedding diversity {spread['embedding_diversity']:.3f}, {spread['distinct']} distinct",
            markup=False,
        )
        if json_file is not None:
            payload = {"attacker": attacker, "seeds": seeds, "targets": results, "diversity": spread}
            payload["attacks"] = [{"seed": s, "attack": a} for s, a in zip(chosen, attacks, strict=True)]
            json_file.write_text(json.dumps(payload, indent=2, ensure_ascii=False))
            console.print(f"wrote {json_file}")
    except SparringError as error:
        _fail(error)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exploit(
    ctx: typer.Context,
    run: Annotated[Path, typer.Argument(help="A finished run directory.")],
    steps: Annotated[int, typer.Option(min=1, help="Training budget of the fresh player, in game steps.")] = 20,
    side: Annotated[
        str, typer.Option(help="attacker: fresh attacker vs the frozen defender; defender: the symmetric half.")
    ] = "attacker",
    averaged: Annotated[
        bool, typer.Option("--averaged", help="Attacker side: freeze the run's averaged defender, not its last.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Train a fresh best response against the run's frozen final player and report the ASR it reaches.
    Extra arguments are dotted overrides for the exploit game (e.g. attacker.rl.lr=5e-4)."""
    try:
        import json

        from rich.table import Table

        from sparring.evaluate import format_rate
        from sparring.exploit import exploit_config, exploitability

        if side not in ("attacker", "defender"):
            raise SparringError(f"--side must be attacker or defender, not '{side}'")
        cfg = exploit_config(run, side, steps, list(ctx.args), averaged)  # type: ignore[arg-type]
        run_dir = run / cfg.run.name
        resume = (run_dir / "config.yaml").exists()
        summary, _ = _play(cfg, run_dir, resume, "quiet" if quiet else "live")
        result = {"run": str(run), "side": side, **exploitability(run_dir, cfg.judge.threshold)}
        if side == "defender":
            result["fresh_defender_eval"] = summary.get("eval", {})
        (run_dir / "exploit.json").write_text(json.dumps(result, indent=2))
        table = Table(title=f"exploitability of {run.name} ({side} side, {steps} steps)")
        table.add_column("attacker success vs the " + ("frozen defender" if side == "attacker" else "fresh defender"))
        table.add_column("ASR [95% CI]", justify="right")
        for label in ("asr_first_third", "asr_last_third"):
            table.add_row(label.replace("asr_", "").replace("_", " ") + " of the budget", format_rate(result[label]))
        out.print(table)
        console.print(f"wrote {run_dir / 'exploit.json'}")
    except SparringError as error:
        _fail(error)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def experiments(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config shared by every mode.")] = None,
    folder: Annotated[Path, typer.Option("--dir", help="Where the runs and the comparison go.")] = Path(
        "runs/experiments"
    ),
    arms: Annotated[
        str, typer.Option(help="Comma-separated arms: sft (the warm-up alone), rlhf, gpo-nodiv, gpo.")
    ] = "sft,rlhf,gpo-nodiv,gpo",
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds; each arm trains once per seed.")] = "0",
    eval_size: Annotated[int, typer.Option(min=1, help="Held-out prompts per evaluation set.")] = 80,
    harmful_size: Annotated[
        int | None,
        typer.Option(min=0, help="Held-out prompts per harmful set (default: --eval-size; 0: every one)."),
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Greedy answer length in the evaluation.")] = 64,
    extra_benign: Annotated[
        list[str] | None,
        typer.Option("--extra-benign", help="Another benign set for over-refusal (repeatable): a file, bundled:, hf:."),
    ] = None,
    extra_harmful: Annotated[
        list[str] | None,
        typer.Option("--extra-harmful", help="Another held-out harmful set for ASR (repeatable); seeds are dropped."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display while training.")] = False,
) -> None:
    """Train each arm on each seed with the same budget, then evaluate every final defender (and GPO's
    averaged one) on the same held-out sets: rates with intervals over seeds and prompts and paired
    differences between arms, in DIR/comparison.md. Finished runs in DIR are reused.
    Extra arguments are dotted overrides for every run, e.g. schedule.steps=20."""
    try:
        from sparring.config import load_config
        from sparring.experiments import ARMS, compare, train_all

        chosen = tuple(m.strip() for m in arms.split(",") if m.strip())
        unknown = [m for m in chosen if m not in ARMS]
        if unknown or not chosen:
            raise SparringError(f"--arms: unknown arm(s) {unknown or arms!r}", hint=f"choose from {', '.join(ARMS)}")
        try:
            seed_list = tuple(dict.fromkeys(int(s) for s in seeds.split(",") if s.strip()))
        except ValueError:
            raise SparringError(f"--seeds: '{seeds}' is not a comma-separated list of integers") from None
        if not seed_list:
            raise SparringError("--seeds: give at least one seed, e.g. --seeds 0,1,2")
        base = load_config(config, list(ctx.args))

        def play(cfg, run_dir: Path, resume: bool) -> None:
            doing = "resuming" if resume else "training"
            console.print(f"[bold]{cfg.run.name} (seed {cfg.run.seed})[/]: {doing} {run_dir}")
            _play(cfg, run_dir, resume, "quiet" if quiet else "live")

        train_all(base, folder, chosen, seed_list, play)
        with console.status("evaluating every final defender on the same held-out sets"):
            compare(
                base, folder, chosen, seed_list, eval_size, max_new_tokens, tuple(extra_benign or ()),
                tuple(extra_harmful or ()), harmful_size,
            )  # fmt: skip
        out.print((folder / "comparison.md").read_text(), markup=False, highlight=False, soft_wrap=True)
        console.print(f"wrote {folder / 'comparison.md'} and {folder / 'comparison.json'}")
    except SparringError as error:
        _fail(error)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def plan(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (default: the defaults).")] = None,
    prompt_tokens: Annotated[int, typer.Option(min=1, help="Assumed prompt length in tokens.")] = 128,
    memory: Annotated[
        list[str] | None,
        typer.Option("--memory", help="DEVICE=GiB to check against, e.g. cuda=80 (default: this machine's)."),
    ] = None,
    processes: Annotated[
        int,
        typer.Option(
            min=1, help="Processes the run is launched with; sharded players (rl.shard=fsdp) split over them."
        ),
    ] = 1,
) -> None:
    """Memory per device for a config -- weights, optimiser, activations, KV cache, judge -- and whether
    the run fits, before anything is loaded. Extra arguments are dotted overrides."""
    try:
        from rich.table import Table

        from sparring import plan as planning
        from sparring.config import load_config

        cfg = load_config(config, list(ctx.args))
        given: dict[str, int] = {}
        for item in memory or []:
            device, _, gib = item.partition("=")
            try:
                given[device] = int(float(gib) * 2**30)
            except ValueError:
                raise SparringError(f"--memory: '{item}' is not DEVICE=GiB", hint="e.g. --memory cuda=80") from None
        lines = planning.plan(cfg, prompt_tokens, processes)
        per = f", per process of {processes}" if processes > 1 else ""
        table = Table(title=f"memory plan ({prompt_tokens}-token prompts{per})")
        for column in ("device", "part", "GiB", "how"):
            table.add_column(column, justify="right" if column == "GiB" else "left")
        for line in lines:
            part = line.part + (" (by phase)" if line.transient else "")
            table.add_row(line.device, part, f"{line.bytes / 2**30:.2f}", line.how)
        out.print(table)
        for device, need in planning.totals(lines).items():
            have = given.get(device, planning.available(device))
            verdict = "unknown (no such device here; pass --memory)" if have is None else (
                "fits" if need <= 0.9 * have else "does NOT fit")  # fmt: skip
            have_text = "" if have is None else f" of {have / 2**30:.1f} GiB"
            out.print(f"{device}: needs {need / 2**30:.2f} GiB{have_text} (resident + largest phase): {verdict}")
    except SparringError as error:
        _fail(error)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="New folder for the Hugging Face model directory.")],
    player: Annotated[str, typer.Option(help="defender or attacker.")] = "defender",
    averaged: Annotated[bool, typer.Option(help="The defender averaged over its stage ends.")] = False,
    adapter_only: Annotated[
        bool, typer.Option(help="Only the LoRA adapter (runs without a warm-up); default: merged weights.")
    ] = False,
) -> None:
    """Write a run's player as a plain Hugging Face directory (safetensors, tokenizer with chat template,
    generation config, model card with the run's config and evaluation) that loads without sparring."""
    try:
        from sparring.export import export_player

        if player not in ("defender", "attacker"):
            raise SparringError(f"--player: '{player}' is not a player", hint="choose defender or attacker")
        with console.status(f"exporting the {player} of {run_dir}"):
            folder = export_player(run_dir, out, player, averaged, adapter_only)
        console.print(f"wrote {folder}: AutoModelForCausalLM.from_pretrained('{folder}')", markup=False)
    except SparringError as error:
        _fail(error)


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(help="One or more run directories.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="HTML file; default RUN/report.html.")] = None,
    samples: Annotated[int, typer.Option(min=0, help="Attacks shown per run.")] = 30,
) -> None:
    """Write a self-contained HTML report (plots, evaluations, attacks) and PNG plots for run directories."""
    try:
        from sparring.report import build_report

        target = output or runs[0] / "report.html"
        with console.status("building the report"):
            path = build_report(runs, target, samples)
        console.print(f"wrote {path} (PNG plots in {path.parent / (path.stem + '_plots')})")
    except SparringError as error:
        _fail(error)


def _validated(model_cls, **values):
    """Build a pydantic config, turning validation errors into one readable SparringError."""
    from pydantic import ValidationError

    try:
        return model_cls(**values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise SparringError(f"invalid {model_cls.__name__}: {problems}") from exc


def run() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    run()
