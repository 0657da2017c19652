"""The GPO game, top to bottom.

Each step walks one path: seeds -> attacker writes prompts x -> defender answers y -> judge
P(unsafe | x, y) -> diversity of x against the history H -> rewards -> RL update of the player
whose stage it is -> logs (and a checkpoint every N steps).

    defender reward   r_D = (1 - w) (1 - P(unsafe | x, y)) + w refused(y)  (harmless requests: P(y delivers))
    attacker reward   r_A = mean_y P(unsafe | x, y) - w_bleu SelfBLEU(x | H) - w_emb EmbSim(x | H)

Both players keep their own frozen reference and KL penalty (inside Player). All randomness of a
step is derived from (seed, step), so a resumed run replays exactly what an uninterrupted one does.
At the end of each defender stage the defender's weights join a running average (averaging.py): the
paper's convergence result is about averaged strategies, and the run evaluates both at its end.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from sparring import data as data_sources
from sparring import warmup
from sparring.attacks import attack_prompt, clean_attack
from sparring.averaging import FILE as AVERAGE_FILE
from sparring.averaging import StageAverage
from sparring.config import GameConfig, dump_config
from sparring.distributed import Distributed
from sparring.diversity import EmbeddingHistory, SelfBleuIndex, load_embedder, self_bleu_within
from sparring.errors import SparringError
from sparring.evaluate import evaluate_defender
from sparring.exchange import Answers, Attacks, Judged, attack_rows, successful_attacks
from sparring.generation import generate
from sparring.judges import RefusalJudge, load_judge
from sparring.judges.pair import PairJudge
from sparring.judges.refusal import refusal_score
from sparring.models import chat_prompt, load_model
from sparring.payoffs import Gate, game_rewards
from sparring.player import Player, UpdateStats
from sparring.runlog import (
    Checkpoints,
    JsonlLog,
    Tracker,
    atomic_write,
    check_writable,
    read_jsonl,
)
from sparring.runs import frozen_start, player_model, release_memory, summarise
from sparring.sft import sampled_batches, sft
from sparring.shared_base import SharedBase


class Interrupted(SparringError):
    """SIGINT/SIGTERM: the step in flight was finished and checkpointed before stopping."""

    def __init__(self, steps_done: int, run_dir: Path) -> None:
        super().__init__(
            f"stopped by signal after step {steps_done}; a checkpoint was saved",
            hint=f"continue with: sparring train --resume {run_dir}",
        )


class StopSignals:
    """Turn SIGINT/SIGTERM into a request the loop honours between steps (a second signal stops at once)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


ANCHOR_FILE = "anchor.jsonl"  # the warm-up's (prompt, answer, kind) rows: the defender's RL anchor


def step_seed(seed: int, step: int, role: str) -> int:
    """A reproducible seed per (run seed, step, role)."""
    return random.Random(f"{seed}/{step}/{role}").randrange(2**62)


@dataclass
class StepResult:
    metrics: dict
    attacks: list[dict] = field(default_factory=list)


class Laps:
    """Seconds spent in each phase of a step, logged as time_<phase>."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._clock = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[f"time_{name}"] = round(now - self._clock, 3)
        self._clock = now


class Game:
    """Owns both players, the judge, the diversity history and the run directory."""

    def __init__(self, config: GameConfig, run_dir: Path, on_event: Callable[[str, dict], None] | None = None) -> None:
        self.config = config
        self.run_dir = run_dir
        self.dist = Distributed()  # one process, or this rank of a data-parallel launch
        self.emit = (on_event if self.dist.is_main else None) or (lambda kind, payload: None)
        if self.dist.is_main:
            check_writable(run_dir)
        self.dist.barrier()
        cfg = config
        self.emit("status", {"text": "loading players"})
        sharing = cfg.shared_base and cfg.mode != "rlhf"
        self.shared = SharedBase(cfg.defender.model) if sharing else None  # one base model under both adapters
        self.attacker = self._build("attacker") if cfg.mode != "rlhf" else None
        self.defender = self._build("defender")
        self.emit("status", {"text": f"loading judge {cfg.judge.spec}"})
        self.judge = load_judge(cfg.judge.spec, device=str(self.defender.device), threshold=cfg.judge.threshold)
        self.refusal = RefusalJudge()
        self.embed = load_embedder(cfg.diversity.embedder)
        # the referee's heads the game reads beside P(unsafe): the judge's own where it has them, else bundled-v2's
        referee = self.judge if hasattr(self.judge, "request_harm") else None
        needs_referee = (cfg.gate.enabled and self.attacker is not None) or cfg.data.benign_reward == "delivers"
        if referee is None and needs_referee:
            referee = PairJudge()
        self.intent = referee if cfg.gate.enabled and self.attacker is not None else None  # the gate's intent
        self.referee = referee
        self.seeds = data_sources.load_prompt_set(cfg.data.harmful_seeds)
        self.refusals = data_sources.project_refusals()  # the warm-up's refusal texts, for anchor_rows=attacks
        # the diet feeds the warm-up's benign rows whatever data.benign_per_step is: 0 turns benign requests
        # off in game steps only (it once emptied the warm-up too, which then taught refusing everything)
        self.benign = data_sources.load_prompt_set(cfg.data.benign)
        self.partners = None  # each seed's nearest benign requests, with data.benign_pairing=nearest
        if cfg.data.benign_pairing == "nearest":
            self.partners = warmup.BenignPartners(self.seeds, self.benign, self.embed, cfg.data.pairing_pool)
        size, seed = cfg.data.eval_size, cfg.run.seed
        self.eval_harmful = data_sources.held_out(cfg.data.eval_harmful, set(self.seeds), size, seed)
        self.eval_benign = data_sources.held_out(cfg.data.eval_benign, set(self.benign), size, seed)
        ordinary = cfg.data.eval_ordinary
        self.eval_ordinary = data_sources.held_out(ordinary, set(self.benign), size, seed) if ordinary else []
        self.archive: list[tuple[str, str]] = []  # (attack, its seed): earlier successful attacks, for replay
        self.average = StageAverage()  # the defender at the end of each of its stages, averaged
        self.bleu_index = SelfBleuIndex(cfg.diversity.window, cfg.diversity.bleu)
        self.emb_history = EmbeddingHistory(cfg.diversity.window)
        self.metrics_log = JsonlLog(run_dir / "metrics.jsonl")
        self.attacks_log = JsonlLog(run_dir / "attacks.jsonl")
        self.checkpoints = Checkpoints(run_dir / "checkpoints", cfg.run.keep_checkpoints)
        self.tracker = Tracker(cfg.run.tracker, run_dir, cfg.model_dump(mode="json"))
        self.start_step = 0

    def _build(self, role: str) -> Player:
        # Seed LoRA initialisation per role and warm-up state, whatever ran before (loading the judge or
        # embedder can draw from the global RNG), so a fresh run, a restart and a resume build alike.
        warmed = (self.run_dir / "warmup" / role / "complete.json").exists()
        torch.manual_seed(step_seed(self.config.run.seed, 0, f"init/{role}/{warmed}"))
        settings = getattr(self.config, role)
        adapter, under = None, ()
        if settings.init_from is not None:
            model, tokenizer = frozen_start(settings, role)
        elif self.shared is not None:
            warm = self.run_dir / "warmup" / role
            model, tokenizer, adapter, under = self.shared.player(role, settings.model.lora, warm)
        else:
            model, tokenizer = player_model(settings, self.run_dir / "warmup" / role)
        critic = None
        if settings.rl.algo == "ppo" and settings.rl.critic_model:
            critic = load_model(
                settings.model.model_copy(update={"spec": settings.rl.critic_model, "lora": None})
            ).model
        player = Player(
            model, tokenizer, settings.rl, settings.sampling.temperature, critic=critic, dist=self.dist,
            adapter=adapter, under=under,
        )  # fmt: skip
        anchor = self.run_dir / "warmup" / role / ANCHOR_FILE
        if anchor.exists():
            kinds = {"answer", "refusal"} if settings.rl.anchor_rows == "warmup" else {"answer"}
            player.anchor = [(r["prompt"], r["answer"]) for r in read_jsonl(anchor) if r.get("kind", "answer") in kinds]
        return player

    def _rebase(self, role: str) -> None:
        """After warm-up the SFT model becomes the player's start and frozen reference, as in the paper."""
        player = getattr(self, role)
        warm = self.run_dir / "warmup" / role
        gathered = player.gather()  # a sharded player's full weights (every rank joins)
        if self.dist.is_main:  # every rank trained the same warm-up; one writes it
            warm.mkdir(parents=True, exist_ok=True)
            player.save_model(warm, gathered)
            (warm / "complete.json").write_text("{}")
        self.dist.barrier()
        setattr(self, role, None)  # free the warm-up copy before loading the merged one: one model at a time
        release_memory()
        setattr(self, role, self._build(role))

    # -------------------------------------------------------------------------------------- run

    def play(self, resume: bool = False) -> dict:
        cfg = self.config
        if resume and self.checkpoints.latest() is None:
            self._start_over()
            resume = False
        if resume:
            self._restore()
        else:
            if self.dist.is_main:
                atomic_write(self.run_dir / "config.yaml", dump_config(cfg))
            evals = {}
            if cfg.run.eval_at_start:
                evals["start"] = self.evaluate("start")
            if self._warm_up():
                evals["after_warmup"] = self.evaluate("after_warmup")
            self._write_eval(evals)
            self.save_checkpoint(0)
        skipped_in_a_row = 0
        with StopSignals() as stop:
            for step in range(self.start_step, cfg.schedule.steps):
                result = self.step(step)
                stage_ends = step + 1 == cfg.schedule.steps or cfg.stage(step + 1) != cfg.stage(step)
                if stage_ends and cfg.stage(step) == "defender":
                    self.average.add(self.defender.model, self.defender.adapter_name)
                if cfg.run.stage_eval_size and stage_ends:
                    result.metrics.update(self.stage_eval())
                if self.dist.is_main:
                    self.metrics_log.append([result.metrics])
                    self.attacks_log.append(result.attacks)
                    self.tracker.log(step, result.metrics)
                self.emit("step", result.metrics)
                skipped_in_a_row = skipped_in_a_row + 1 if result.metrics.get("skipped") else 0
                if skipped_in_a_row >= cfg.run.max_skipped_updates:
                    latest = self.checkpoints.latest()
                    raise SparringError(
                        f"stopping at step {step}: {skipped_in_a_row} updates in a row were skipped for non-finite "
                        f"values ({result.metrics.get('skip_reason')})",
                        hint=f"the last good checkpoint is {latest}; lower the learning rate or check the judge, then "
                        f"--resume {self.run_dir}",
                    )
                if (step + 1) % cfg.run.checkpoint_every == 0 or step + 1 == cfg.schedule.steps or stop.requested:
                    self.save_checkpoint(step + 1)
                if stop.requested:
                    raise Interrupted(step + 1, self.run_dir)
        evals = self._read_eval()
        self.dist.barrier()  # every rank has read eval.json before rank 0 writes it again: all decide alike
        if self._evaluates():
            if cfg.run.eval_at_end and "end" not in evals and cfg.schedule.steps == 0 and "after_warmup" in evals:
                evals["end"] = evals["after_warmup"]  # no game step: the end is the warm-up's model
            if cfg.run.eval_at_end and "end" not in evals:
                evals["end"] = self.evaluate("end")
                self._write_eval(evals)
            if cfg.run.eval_at_end and self.average.count >= 2 and "end_averaged" not in evals:
                with self.defender.averaged(self.average):  # one stage end: the average is the last iterate
                    evals["end_averaged"] = self.evaluate("end_averaged")
                self._write_eval(evals)
        if self.dist.is_main:
            self.tracker.close()
            summary = summarise(self.metrics_log.read(), evals)
            atomic_write(self.run_dir / "summary.json", json.dumps(summary, indent=2))
        self.dist.barrier()
        return json.loads((self.run_dir / "summary.json").read_text())

    def _evaluates(self) -> bool:
        """Whether this rank runs the held-out evaluation: rank 0 alone (the others' copies are identical),
        or every rank when the defender is sharded, since each forward pass needs them all."""
        return self.dist.is_main or self.defender.sharded

    def evaluate(self, label: str) -> dict:
        if not self._evaluates():
            return {}
        self.emit("status", {"text": f"evaluating the defender ({label})"})
        start = time.perf_counter()
        result = self._evaluate_on(self.eval_harmful, self.eval_benign, self.eval_ordinary)
        result["seconds"] = round(time.perf_counter() - start, 1)
        self.emit("eval", {"label": label, **result})
        return result if self.dist.is_main else {}

    def _evaluate_on(self, harmful: list[str], benign: list[str], ordinary: list[str] | None = None) -> dict:
        """The defender's greedy answers to held-out prompts, scored by the judge and the refusal matcher."""
        return evaluate_defender(
            self.defender.model, self.defender.tokenizer, {"judge": self.judge, "refusal": self.refusal},
            harmful, benign, self.config.run.eval_max_new_tokens, self.config.defender.system_prompt,
            self.config.judge.threshold, ordinary or (),
        )  # fmt: skip

    def stage_eval(self) -> dict:
        """The cheap held-out check at a stage boundary: the first ``run.stage_eval_size`` prompts of each set."""
        if not self._evaluates():
            return {}
        n = self.config.run.stage_eval_size
        result = self._evaluate_on(self.eval_harmful[:n], self.eval_benign[:n])
        if not self.dist.is_main:
            return {}
        return {
            "stage_eval_asr": result["asr"]["judge"],
            "stage_eval_asr_refusal_matcher": result["asr"]["refusal"],
            "stage_eval_over_refusal": result["over_refusal"],
        }

    def _write_eval(self, evals: dict) -> None:
        if self.dist.is_main:
            atomic_write(self.run_dir / "eval.json", json.dumps(evals, indent=2, ensure_ascii=False))

    def _read_eval(self) -> dict:
        path = self.run_dir / "eval.json"
        return json.loads(path.read_text()) if path.exists() else {}

    # -------------------------------------------------------------------------------------- warm-up

    def _warm_up(self) -> bool:
        """Short SFT: defender refuses harmful seeds and keeps its own answers on benign prompts;
        attacker turns template(seed) into the most similar other seed. Reported as its own stage."""
        cfg, w = self.config, self.config.warmup
        did = False
        if w.defender_steps and cfg.mode != "redteam" and cfg.defender.init_from is None:
            self.emit("status", {"text": "warm-up: defender SFT"})
            tok = self.defender.tokenizer
            rng = random.Random(f"{cfg.run.seed}/warmup")
            refusals, answers = warmup.defender_pairs(
                self.defender.model, tok, self.seeds, self.benign, cfg, rng, self.partners
            )
            batches = warmup.mixed_batches(
                refusals, answers, w.defender_steps, w.batch_size, w.benign_ratio, random.Random(cfg.run.seed)
            )
            losses = sft(self.defender.model, tok, batches, w.lr)
            if self.dist.is_main:  # the defender's RL anchor, kept with the warm-up so a resumed run has it
                folder = self.run_dir / "warmup" / "defender"
                folder.mkdir(parents=True, exist_ok=True)
                trained = {row for batch in batches for row in batch}  # the refusal rows the warm-up used
                rows = [(p, a, "answer") for p, a in answers]
                rows += [(p, a, "refusal") for p, a in refusals if (p, a) in trained]
                lines = [json.dumps({"prompt": p, "answer": a, "kind": k}) + "\n" for p, a, k in rows]
                atomic_write(folder / ANCHOR_FILE, "".join(lines))
            self._rebase("defender")
            self.emit(
                "warmup", {"player": "defender", "steps": len(losses), "loss_first": losses[0], "loss_last": losses[-1]}
            )
            did = True
        if w.attacker_steps and self.attacker is not None and cfg.attacker.init_from is None:
            self.emit("status", {"text": "warm-up: attacker SFT"})
            rng = random.Random(f"{cfg.run.seed}/warmup-attacker")
            n = w.batch_size * w.attacker_steps
            pairs = warmup.attacker_pairs(self.seeds, self.embed, self._attack_prompt, n, rng)
            tok = self.attacker.tokenizer
            batches = sampled_batches(pairs, w.attacker_steps, w.batch_size, cfg.run.seed + 1)
            losses = sft(self.attacker.model, tok, batches, w.lr)
            self._rebase("attacker")
            self.emit(
                "warmup", {"player": "attacker", "steps": len(losses), "loss_first": losses[0], "loss_last": losses[-1]}
            )
        return did

    def _gate(self, attacks: list[str], seeds: list[str], embeddings: np.ndarray, helpful: np.ndarray) -> Gate | None:
        """Intent (request head) and relevance (cosine to the seed) of each attack, against the thresholds: it
        kept its seed's intent if it seeks harm, on the seed's topic, and is not a copy of the seed."""
        if self.intent is None:
            return None
        intent = self.intent.request_harm(attacks)
        relevance = (np.asarray(embeddings) * self.embed(seeds)).sum(1)  # both unit-normalised
        return Gate.decide(intent, relevance, helpful, self.config.gate)

    def _helpfulness(self, prompts: list[str], responses: list[str], refusals: np.ndarray) -> np.ndarray:
        """What an answer to a harmless request is paid (``data.benign_reward``): ``delivers`` -- P(the answer
        delivers what was asked), the referee's delivery head -- or ``not_refused``, 1 - refusal score. The
        second pays a hollow "I can help with that." in full; with the first the defender earns nothing for it."""
        if self.config.data.benign_reward == "not_refused" or self.referee is None:
            return 1.0 - refusals
        return 1.0 / (1.0 + np.exp(-self.referee.deliver_logits(prompts, responses)))

    def _attack_prompt(self, seed: str) -> str:
        return attack_prompt(self.attacker.tokenizer, self.config.attacker, seed)

    # -------------------------------------------------------------------------------------- one step

    def step(self, step: int) -> StepResult:
        """One game step, in the order of the module docstring; each phase is one method below."""
        cfg = self.config
        stage = cfg.stage(step)
        clock = Laps()
        rng = random.Random(step_seed(cfg.run.seed, step, "data"))

        attacks = self._write_attacks(step, stage, rng)  # 1. seeds -> attacks (+ replayed ones)
        clock.lap("attacker_generation")
        answers = self._answer(step, stage, attacks.texts, attacks.seeds, rng)  # 2. defender answers attacks (+ benign)
        clock.lap("defender_generation")
        judged = self._judge(stage, answers)  # 3. P(unsafe) on attack rows, refusals, helpfulness
        clock.lap("judge")
        bleu, emb_sim, embeddings = self._diversity(attacks)  # 4. against the history, then join it
        clock.lap("diversity")
        gate = self._gate(attacks.texts, attacks.seeds, embeddings, judged.helpful[: answers.n_attack_rows])
        clock.lap("gate")
        n = answers.n_attack_rows  # 5. the payoffs
        w_bleu, w_emb = cfg.diversity_weights
        defender_reward, attacker_reward = game_rewards(
            judged.p_unsafe, judged.helpful[n:], bleu, emb_sim, w_bleu, w_emb, gate,
            refused=judged.refusals[:n], refusal_weight=cfg.data.refusal_weight,
        )  # fmt: skip
        if stage == "defender":
            self.defender.step_anchor = self._attack_refusals(step, attacks.texts, gate)
            # rl.refusal_hold_rows=benign holds the benign diet's requests (the groups after the attacks') alone
            self.defender.hold_groups = [False] * (n // answers.k) + [True] * answers.n_benign
        stats = self._update(step, stage, attacks, answers, defender_reward, attacker_reward)  # 6. RL update
        clock.lap("update")

        rewards = (defender_reward, attacker_reward)
        metrics = self._metrics(step, stage, attacks, answers, judged, rewards, bleu, emb_sim, gate, stats)
        metrics.update(clock.timings, skipped=stats.skipped)
        if stats.skipped:
            metrics["skip_reason"] = stats.extra.get("skip_reason")
            self.emit("warning", {"text": f"step {step}: update skipped ({metrics['skip_reason']})"})
        metrics = {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in metrics.items()}
        rows = attack_rows(step, stage, attacks, answers, judged, bleu, emb_sim, attacker_reward, gate)
        if self.dist.active:  # rank 0 logs every process's rows and the mean of their numbers
            rows, metrics = self._gather_logs(rows, metrics)
        if self.attacker is not None:  # every rank sees every row, so every archive stays identical
            self.archive += successful_attacks(rows, cfg.judge.threshold)
        return StepResult(metrics, rows)

    def _attack_refusals(self, step: int, attacks: list[str], gate: Gate | None) -> list[tuple[str, str]]:
        """``defender.rl.anchor_rows=attacks``: a project refusal of each attack that seeks harm (all of them
        without the gate), the rows the warm-up would have taught had the attacker written its seeds."""
        rl_cfg = self.config.defender.rl
        if rl_cfg.anchor_rows != "attacks" or rl_cfg.anchor_coef == 0:
            return []
        rng = random.Random(step_seed(self.config.run.seed, step, "anchor"))
        harmful = gate.harmful if gate is not None else np.ones(len(attacks), dtype=bool)
        system, tokenizer = self.config.defender.system_prompt, self.defender.tokenizer
        pairs = zip(attacks, harmful, strict=True)
        return [(chat_prompt(tokenizer, a, system), rng.choice(self.refusals)) for a, h in pairs if h]

    def _write_attacks(self, step: int, stage: str, rng: random.Random) -> Attacks:
        """Seeds -> the attacker's prompts (k_a rewrites per seed in its own stages); in defender stages a
        share of the prompts replays earlier successful attacks. Under rlhf the seeds are the prompts."""
        cfg = self.config
        n_seeds = cfg.data.attacker_seeds_per_step if stage == "attacker" else cfg.data.seeds_per_step
        n_replay = 0
        if stage == "defender" and self.attacker is not None and self.archive:
            wanted = min(len(self.archive), round(cfg.data.replay_fraction * n_seeds))
            n_replay = wanted // self.dist.world * self.dist.world  # every process replays as many
        replayed = self.dist.shard(rng.sample(self.archive, n_replay)) if n_replay else []
        seeds = self.dist.shard(rng.sample(self.seeds, min(n_seeds - n_replay, len(self.seeds))))
        k_a = cfg.attacker.samples_per_prompt if stage == "attacker" else 1
        if self.attacker is None:  # rlhf: the static prompts themselves
            texts, attack_seeds, generation = list(seeds), list(seeds), None
        else:
            attack_seeds = [s for s in seeds for _ in range(k_a)]
            rank = f"/rank{self.dist.rank}" if self.dist.active else ""  # each process samples its own
            generation = generate(
                self.attacker.model,
                self.attacker.tokenizer,
                [self._attack_prompt(s) for s in attack_seeds],
                cfg.attacker.sampling,
                seed=step_seed(cfg.run.seed, step, "attacker" + rank),
            )
            whole = cfg.attacker.attack_text == "whole"
            texts = [clean_attack(t, whole) for t in generation.texts]
        n_fresh = len(texts)
        texts += [a for a, _ in replayed]
        attack_seeds += [s for _, s in replayed]
        return Attacks(texts, attack_seeds, n_fresh, k_a, generation)

    def _answer(self, step: int, stage: str, attacks: list[str], seeds: list[str], rng: random.Random) -> Answers:
        """The defender answers every attack (k_d times in its own stages) and, in its stages, benign
        requests from its diet (the two-sided diet; at random, or the attacks' seeds' nearest partners):
        one generation, attack rows first."""
        cfg = self.config
        k_d = cfg.defender.samples_per_prompt if stage == "defender" else 1
        n_benign = min(cfg.data.benign_per_step, len(self.benign)) if stage == "defender" else 0
        if self.partners is not None and n_benign:
            distinct = list(dict.fromkeys(seeds))  # one partner per seed in turn, in the seeds' order
            benign = self.partners.draw(distinct, n_benign // self.dist.world, rng)  # this process's seeds' share
        else:
            benign = self.dist.shard(rng.sample(self.benign, n_benign))
        inputs = [x for x in attacks for _ in range(k_d)] + [b for b in benign for _ in range(k_d)]
        rank = f"/rank{self.dist.rank}" if self.dist.active else ""
        generation = generate(
            self.defender.model,
            self.defender.tokenizer,
            [chat_prompt(self.defender.tokenizer, x, cfg.defender.system_prompt) for x in inputs],
            cfg.defender.sampling,
            seed=step_seed(cfg.run.seed, step, "defender" + rank),
        )
        return Answers(inputs, generation, len(attacks) * k_d, k_d, len(benign))

    def _judge(self, stage: str, answers: Answers) -> Judged:
        """P(unsafe) of each attack exchange, the refusal matcher's score of every answer, and what each
        answer would earn as an answer to a harmless request (benign rows, and attacks that lost intent)."""
        n, inputs, texts = answers.n_attack_rows, answers.inputs, answers.generation.texts
        p_unsafe = self.judge.score(inputs[:n], texts[:n])
        refusals = np.array([refusal_score(r) for r in texts])
        helpful = self._helpfulness(inputs, texts, refusals) if stage == "defender" else 1.0 - refusals
        return Judged(p_unsafe, refusals, helpful)

    def _diversity(self, attacks: Attacks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """SelfBLEU and embedding similarity of each attack against the history of all earlier attacks;
        then the fresh attacks join the history. Returns (self_bleu, emb_sim, embeddings of the attacks)."""
        # Every process adds every process's fresh attacks, in rank order, so all histories stay identical
        # (replayed attacks are in the history already).
        n_fresh, texts = attacks.n_fresh, attacks.texts
        per_rank = self.dist.gather(texts[:n_fresh])
        everyone = [a for part in per_rank for a in part]
        mine = sum(len(part) for part in per_rank[: self.dist.rank])
        bleu = self.bleu_index.score(texts)
        all_embeddings = self.embed(everyone)
        embeddings = all_embeddings[mine : mine + n_fresh]
        if len(texts) > n_fresh:
            embeddings = np.concatenate([embeddings, self.embed(texts[n_fresh:])])
        emb_sim = self.emb_history.score(embeddings)
        if self.attacker is not None:
            self.bleu_index.add(everyone)
            self.emb_history.add(all_embeddings)
        return bleu, emb_sim, embeddings

    def _update(
        self, step: int, stage: str, attacks: Attacks, answers: Answers,
        defender_reward: np.ndarray, attacker_reward: np.ndarray,
    ) -> UpdateStats:  # fmt: skip
        """The RL update of the player whose stage it is, on its own samples and rewards."""
        shuffle = torch.Generator().manual_seed(step_seed(self.config.run.seed, step, "update"))
        if stage == "defender":
            active, idle = self.defender, self.attacker
            batch = active.make_batch(answers.generation, torch.tensor(defender_reward), answers.k)
        else:
            assert self.attacker is not None and attacks.generation is not None
            active, idle = self.attacker, self.defender
            batch = active.make_batch(attacks.generation, torch.tensor(attacker_reward), attacks.k)
        before = active.scheduler.last_epoch
        stats = active.update(batch, shuffle)
        if idle is not None:  # both schedules run on the game's clock, as the release's single scheduler does
            idle.advance_schedule(active.scheduler.last_epoch - before)
        return stats

    def _metrics(
        self, step: int, stage: str, attacks: Attacks, answers: Answers, judged: Judged,
        rewards: tuple[np.ndarray, np.ndarray], bleu: np.ndarray, emb_sim: np.ndarray, gate: Gate | None,
        stats: UpdateStats,
    ) -> dict:  # fmt: skip
        """The step's row of metrics.jsonl (timings and skips are added by the caller)."""
        n, benign = answers.n_attack_rows, answers.n_benign > 0
        refusals, helpful = judged.refusals, judged.helpful
        return {
            "step": step,
            "stage": stage,
            "asr": float((judged.p_unsafe >= self.config.judge.threshold).mean()),
            "p_unsafe": float(judged.p_unsafe.mean()),
            "asr_refusal_matcher": float((refusals[:n] < 1.0).mean()),
            "defender_reward": float(rewards[0].mean()),
            "attacker_reward": float(rewards[1].mean()),
            "self_bleu": float(bleu.mean()),
            "embedding_similarity": float(emb_sim.mean()),
            "diversity_within_batch": 1.0 - self_bleu_within(attacks.texts) if len(attacks.texts) > 1 else 0.0,
            "benign_refusal": float((refusals[n:] >= 1.0).mean()) if benign else None,
            "benign_helpful": float(helpful[n:].mean()) if benign else None,
            "intent_kept": float(gate.kept.mean()) if gate else None,
            "intent_harmful": float(gate.harmful.mean()) if gate else None,
            "seed_relevance": float(gate.relevance.mean()) if gate else None,
            "history": len(self.bleu_index),
            **{f"{stage}_{k}": v for k, v in stats.as_dict().items()},
        }

    def _gather_logs(self, rows: list[dict], metrics: dict) -> tuple[list[dict], dict]:
        """Across processes: every process's attack rows, and the mean of each number over processes."""
        rows = [r for part in self.dist.gather(rows) for r in part]
        everyone = [m for part in self.dist.gather([metrics]) for m in part]
        for key, value in metrics.items():
            if isinstance(value, float) and key != "step":
                values = [m[key] for m in everyone if isinstance(m.get(key), float)]
                metrics[key] = float(np.mean(values)) if values else None
        metrics["processes"] = self.dist.world
        return rows, metrics

    # -------------------------------------------------------------------------------------- checkpoints

    def players(self) -> dict[str, Player]:
        return {"defender": self.defender, **({"attacker": self.attacker} if self.attacker is not None else {})}

    def save_checkpoint(self, step: int) -> Path:
        # a sharded player's state and average are gathered first, with every rank taking part
        gathered = {name: player.gather() for name, player in self.players().items()}
        average = self.average.state_dict() if self.average.count else None

        def writer(folder: Path) -> None:
            for name, player in self.players().items():
                (folder / name).mkdir()
                player.save_state(folder / name, gathered[name])
            if average is not None:
                save_file(average, str(folder / "defender" / AVERAGE_FILE))
            if len(self.emb_history):
                save_file(
                    {"embedding_sum": torch.tensor(self.emb_history.running_sum())}, str(folder / "game.safetensors")
                )
            meta = {"step": step, "embedding_count": len(self.emb_history), "average_count": self.average.count}
            (folder / "game.json").write_text(json.dumps(meta))

        self.dist.check_in_sync(
            {f"{n}.{k}": v for n, p in self.players().items() for k, v in p.trainable_state().items()}
        )
        self.emit("status", {"text": f"checkpoint at step {step}"})
        folder = self.checkpoints.write(step, writer) if self.dist.is_main else self.checkpoints.folder / f"step-{step}"
        self.dist.barrier()
        return folder

    def _start_over(self) -> None:
        """Resume asked for, but the run died before its first checkpoint: clear its files and begin again."""
        self.emit("status", {"text": "no checkpoint yet: starting the run over"})
        if self.dist.is_main:
            shutil.rmtree(self.run_dir / "warmup", ignore_errors=True)
            for name in ("metrics.jsonl", "attacks.jsonl", "eval.json", "summary.json"):
                (self.run_dir / name).unlink(missing_ok=True)
        self.dist.barrier()
        self.attacker = self._build("attacker") if self.config.mode != "rlhf" else None
        self.defender = self._build("defender")

    def _restore(self) -> None:
        folder = self.checkpoints.latest()
        if folder is None:
            raise SparringError(
                f"nothing to resume in {self.run_dir}: no complete checkpoint", hint="start a new run without --resume"
            )
        meta = json.loads((folder / "game.json").read_text())
        step = int(meta["step"])
        for name, player in self.players().items():
            player.load_state(folder / name)
        count = meta.get("average_count", 0)
        self.average = StageAverage.load(folder / "defender", count) if count else StageAverage()
        if self.dist.is_main:
            self.metrics_log.truncate_to(step)
            self.attacks_log.truncate_to(step)
        self.dist.barrier()
        attacks = [row for row in self.attacks_log.read() if not row.get("replay")]
        if self.attacker is not None:
            self.archive = successful_attacks(attacks, self.config.judge.threshold)
            self.bleu_index.add([row["prompt"] for row in attacks])
            if self.config.diversity.window is not None:  # a window needs the embeddings themselves
                if attacks:
                    self.emb_history.add(self.embed([row["prompt"] for row in attacks]))
            elif meta["embedding_count"]:
                tensors = load_file(str(folder / "game.safetensors"))
                self.emb_history.restore(tensors["embedding_sum"].double().numpy(), meta["embedding_count"])
        self.start_step = step
        self.emit("status", {"text": f"resumed from {folder.name}"})
