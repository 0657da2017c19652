"""Data parallelism: two CPU processes (gloo) play one game; every step logged once, weights in sync."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.test_game import TINY


def test_two_process_gloo_game_logs_every_step_once_and_keeps_weights_in_sync(tmp_path):
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    args += ["-m", "sparring.cli", "train", "--json", *TINY, f"run.dir={tmp_path}", "run.name=ddp"]
    args += ["data.seeds_per_step=4", "data.attacker_seeds_per_step=2", "data.benign_per_step=2"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "ddp"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [0, 1, 2, 3] and all(m["processes"] == 2 for m in metrics)
    attacks = [json.loads(line) for line in (run / "attacks.jsonl").read_text().splitlines()]
    per_step = [sum(a["step"] == s for a in attacks) for s in range(4)]
    assert per_step == [4, 4, 2 * 4, 2 * 4]  # both ranks' shards: 4 seeds; attacker: 2 seeds x 4 rewrites
    summaries = [json.loads(line) for line in done.stdout.splitlines() if '"summary"' in line]
    assert len(summaries) == 1  # rank 0 alone reports
    # checkpoints were written after a cross-rank weight check (Distributed.check_in_sync) passed
    assert (run / "checkpoints" / "step-4" / "complete.json").exists()
