"""What the user sees while a game runs: a live progress line, eval tables, a closing summary.

Modes: ``live`` (rich progress), ``quiet`` (nothing until the summary), ``json`` (one JSON object
per event on stdout, for scripts). Model text is shown through ``safe_text`` only.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from sparring.config import GameConfig
from sparring.display import safe_text


class GameDisplay:
    def __init__(self, config: GameConfig, mode: str, console: Console, out: Console) -> None:
        self.config, self.mode, self.console, self.out = config, mode, console, out
        self.progress = (
            Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("left"),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            if mode == "live"
            else None
        )
        self.task = None

    def __enter__(self) -> GameDisplay:
        if self.progress is not None:
            self.progress.start()
            self.task = self.progress.add_task("starting", total=self.config.schedule.steps)
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def event(self, kind: str, payload: dict) -> None:
        if self.mode == "json":
            print(json.dumps({"event": kind, **payload}, default=str), flush=True)
            return
        if self.mode == "quiet":
            return
        if kind == "status" and self.progress is not None:
            self.progress.update(self.task, description=payload["text"])
        elif kind == "step" and self.progress is not None:
            m = payload
            self.progress.update(
                self.task,
                completed=m["step"] + 1,
                description=(
                    f"[bold]{m['stage']:8}[/] ASR {m['asr']:.2f}  r_D {m['defender_reward']:+.2f}  "
                    f"r_A {m['attacker_reward']:+.2f}  1-SelfBLEU {1 - m['self_bleu']:.2f}  "
                    f"EmbSim {m['embedding_similarity']:.2f}"
                ),
            )
        elif kind == "eval":
            asr = "  ".join(f"ASR({k}) {v:.2f}" for k, v in payload["asr"].items())
            self.console.print(
                f"[cyan]eval {payload['label']}[/]: {asr}  over-refusal: edgy {payload['over_refusal']:.2f}"
                + (f", ordinary {payload['over_refusal_ordinary']:.2f}" if "over_refusal_ordinary" in payload else "")
                + f"  ({payload['seconds']}s)"
            )
            for sample in payload.get("samples", [])[:1]:
                self.console.print(safe_text(f"   > {sample['prompt']}", style="dim", limit=100, one_line=True))
                self.console.print(safe_text(f"   < {sample['response']}", style="dim", limit=100, one_line=True))
        elif kind == "warning":
            self.console.print(f"[yellow]warning:[/] {payload['text']}", highlight=False)
        elif kind == "warmup":
            self.console.print(
                f"[cyan]warm-up {payload['player']}[/]: {payload['steps']} SFT steps, "
                f"loss {payload['loss_first']:.2f} -> {payload['loss_last']:.2f}"
            )

    def summary(self, summary: dict, run_dir: Path) -> None:
        table = Table(title=f"GPO run {run_dir}")
        table.add_column("held-out eval")
        for key in next(iter(summary["eval"].values()), {}).get("asr", {}):
            table.add_column(f"ASR ({key})", justify="right")
        table.add_column("over-refusal (edgy)", justify="right")
        table.add_column("over-refusal (ordinary)", justify="right")
        for label, values in summary["eval"].items():
            ordinary = values.get("over_refusal_ordinary")
            table.add_row(
                label, *[f"{v:.2f}" for v in values["asr"].values()], f"{values['over_refusal']:.2f}",
                "n/a" if ordinary is None else f"{ordinary:.2f}",
            )  # fmt: skip
        self.out.print(table)
        stages = Table(title="during the game (training batches)")
        for col in ("stage", "steps", "ASR at block start", "ASR at block end", "1 - SelfBLEU (batch)"):
            stages.add_column(col, justify="right")
        for stage in ("defender", "attacker"):
            if stage in summary:
                s = summary[stage]
                stages.add_row(
                    stage,
                    str(s["steps"]),
                    f"{s['asr_block_start']:.2f}",
                    f"{s['asr_block_end']:.2f}",
                    f"{s['diversity_within_batch']:.2f}",
                )
        self.out.print(stages)
        self.out.print(f"run directory: {run_dir}")
