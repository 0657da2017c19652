"""Faults: non-finite values, signals, hostile text, secrets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from sparring.config import load_config
from sparring.errors import SparringError
from sparring.game import Game
from tests.test_game import TINY


def test_repeated_non_finite_rewards_stop_the_run_keeping_the_last_checkpoint(tmp_path):
    cfg = load_config(
        None,
        [
            *TINY,
            f"run.dir={tmp_path}",
            "run.name=nan",
            "schedule.steps=6",
            "run.max_skipped_updates=2",
            "run.eval_at_start=false",
            "gate.enabled=false",  # the tiny model's babble never seeks harm: the gate would pay 1 - refusal instead
        ],
    )
    game = Game(cfg, tmp_path / "nan")

    def broken(prompts, responses):
        return np.full(len(prompts), np.nan)

    game.judge.score = broken  # a judge that returns garbage, injected
    with pytest.raises(SparringError, match="2 updates in a row were skipped for non-finite values") as info:
        game.play()
    assert "step-0" in str(info.value.hint)
    metrics = [json.loads(line) for line in (tmp_path / "nan" / "metrics.jsonl").read_text().splitlines()]
    assert [m["skipped"] for m in metrics] == [True, True]
    assert (tmp_path / "nan" / "checkpoints" / "latest").read_text() == "step-0"


def test_sigterm_saves_a_checkpoint_and_the_run_resumes(tmp_path):
    args = [
        sys.executable,
        "-m",
        "sparring.cli",
        "train",
        "--json",
        *TINY,
        f"run.dir={tmp_path}",
        "run.name=sig",
        "schedule.steps=6",
        "run.checkpoint_every=100",
        "run.eval_at_start=false",
    ]
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if '"event": "step"' in line:
            proc.send_signal(signal.SIGTERM)
            break
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    assert "stopped by signal" in err and "--resume" in err
    run = tmp_path / "sig"
    done = len((run / "metrics.jsonl").read_text().splitlines())
    assert 1 <= done < 6
    assert (run / "checkpoints" / "latest").read_text() == f"step-{done}"
    Game(load_config(run / "config.yaml"), run).play(resume=True)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(6))


def test_remote_judge_key_never_reaches_the_run_directory(tmp_path, monkeypatch):
    secret = "sk-do-not-write-me-0123"
    monkeypatch.setenv("MY_JUDGE_KEY", secret)
    cfg = load_config(
        None,
        [
            *TINY,
            f"run.dir={tmp_path}",
            "run.name=key",
            "schedule.steps=1",
            "judge.spec=remote:http://127.0.0.1:9/v1?model=guard&key_env=MY_JUDGE_KEY&retries=0&timeout=0.2",
        ],
    )
    with pytest.raises(SparringError, match="remote judge"):
        Game(cfg, tmp_path / "key").play()
    for path in (tmp_path / "key").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_hostile_text_is_shown_escaped_and_stored_losslessly(tmp_path):
    from rich.console import Console

    from sparring.progress import GameDisplay
    from sparring.runlog import JsonlLog

    payload = "<script>alert(1)</script>\x1b[2J\x1b]0;pwned\x07[bold red]markup[/]"
    buffer = Console(record=True, force_terminal=False, width=300)
    display = GameDisplay(load_config(None, []), "live", console=buffer, out=buffer)
    display.progress = None  # print events without a live bar
    display.mode = "live"
    display.event(
        "eval",
        {
            "label": "x",
            "asr": {"judge": 0.5},
            "over_refusal": 0.0,
            "seconds": 1,
            "samples": [{"prompt": payload, "response": payload}],
        },
    )
    shown = buffer.export_text()
    assert "\x1b" not in shown and "\x07" not in shown
    assert "\\x1b[2J" in shown and "[bold red]markup[/]" in shown  # visible, not interpreted
    log = JsonlLog(tmp_path / "a.jsonl")
    log.append([{"step": 0, "prompt": payload}])
    assert log.read()[0]["prompt"] == payload


def _train(run_dir, resume: bool):
    args = [sys.executable, "-m", "sparring.cli", "train", "--json"]
    args += (
        ["--resume", str(run_dir)]
        if resume
        else [
            *TINY,
            f"run.dir={run_dir.parent}",
            f"run.name={run_dir.name}",
            "schedule.steps=6",
            "run.checkpoint_every=1",
        ]
    )
    return subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def test_sigkill_at_many_moments_then_resume_matches_an_uninterrupted_run(tmp_path):
    """Kill -9 during warm-up, mid-checkpoint, after steps and at random; every step is logged exactly once
    and the weights equal an uninterrupted run's."""
    import random
    import time

    import torch

    from tests.test_game import player_weights

    straight_cfg = load_config(
        None, [*TINY, f"run.dir={tmp_path}", "run.name=straight", "schedule.steps=6", "run.checkpoint_every=1"]
    )
    straight = Game(straight_cfg, tmp_path / "straight")
    straight.play()

    run = tmp_path / "killed"
    rng = random.Random(0)
    kill_points = [
        lambda e: e.get("text") == "warm-up: attacker SFT",  # before any checkpoint
        lambda e: e.get("text") == "checkpoint at step 0",  # in the middle of writing a checkpoint
        lambda e: e.get("event") == "step" and e["step"] >= 1,
        lambda e: e.get("text", "").startswith("checkpoint at step 3"),
        lambda e: e.get("event") == "step" and e["step"] >= 4,
    ]
    started = False
    for index, point in enumerate([*kill_points, "random"]):
        proc = _train(run, resume=started)
        started = True
        assert proc.stdout is not None
        if point == "random":
            time.sleep(rng.uniform(0.5, 3.0))
        else:
            for line in proc.stdout:
                if point(json.loads(line)):
                    time.sleep(rng.uniform(0.0, 0.05))
                    break
        proc.kill()
        proc.wait()
        for name in ("metrics.jsonl", "attacks.jsonl"):
            path = run / name
            if path.exists() and path.read_text():
                assert all(line.startswith("{") for line in path.read_text().splitlines()), (index, name)
    final = _train(run, resume=True)
    final.communicate(timeout=300)
    assert final.returncode == 0

    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(6))  # each completed step exactly once
    attacks = [json.loads(line)["step"] for line in (run / "attacks.jsonl").read_text().splitlines()]
    assert sorted(set(attacks)) == list(range(6)) and attacks == sorted(attacks)
    resumed = Game(load_config(run / "config.yaml"), run)
    resumed._restore()
    a, b = player_weights(straight), player_weights(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[key], b[key]) for key in a), [key for key in a if not torch.equal(a[key], b[key])]
    assert not list((run / "checkpoints").glob(".*")), "a killed write left temporary files behind"


def test_unwritable_run_directory_fails_before_loading_anything(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cfg = load_config(None, [*TINY, f"run.dir={blocker}", "run.name=x"])
    with pytest.raises(SparringError, match="is not writable"):
        Game(cfg, blocker / "x")
