"""Soak: 300 game steps on tiny models with memory sampled (marked slow; CI runs it)."""

from __future__ import annotations

import gc
import json

import numpy as np
import pytest

from sparring.config import load_config
from sparring.game import Game
from tests.test_game import TINY


def rss_mib() -> float:
    from pathlib import Path

    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.slow
def test_300_steps_memory_stays_flat(tmp_path):
    cfg = load_config(
        None,
        [
            *TINY,
            f"run.dir={tmp_path}",
            "run.name=soak",
            "schedule.steps=300",
            "schedule.defender_steps=5",
            "schedule.attacker_steps=5",
            "run.checkpoint_every=50",
            "run.eval_at_start=false",
            "run.eval_at_end=false",
            "warmup.defender_steps=0",
            "warmup.attacker_steps=0",
            "data.attacker_seeds_per_step=2",
        ],
    )
    samples: dict[int, float] = {}

    def sample(kind, payload):
        if kind == "step":
            gc.collect()
            samples[payload["step"]] = rss_mib()

    Game(cfg, tmp_path / "soak", on_event=sample).play()
    after_warmup = np.median([samples[s] for s in range(40, 60)])
    at_end = np.median([samples[s] for s in range(280, 300)])
    assert at_end < 1.10 * after_warmup, (after_warmup, at_end)
    lines = (tmp_path / "soak" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(300))
