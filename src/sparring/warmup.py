"""The supervised warm-up's data: what each player is taught before the game (the paper starts both
players from SFT). Game._warm_up trains on these pairs and rebases each player on the result."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator

import numpy as np

from sparring import data as data_sources
from sparring.generation import generate
from sparring.judges.refusal import refusal_score
from sparring.models import chat_prompt


def defender_pairs(
    defender, tokenizer, seeds: list[str], benign: list[str], cfg, rng: random.Random,
    partners: BenignPartners | None = None,
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:  # fmt: skip
    """(prompt, target) pairs, as (refusals, answers): a project refusal for each sampled harmful seed and,
    ``warmup.benign_ratio`` per refusal, the defender's own greedy answer to a benign request -- only real
    answers -- drawn at random or, given ``partners``, the benign requests nearest the sampled seeds. The
    answers are also the defender's RL anchor (``rl.anchor_coef``)."""
    w, system = cfg.warmup, cfg.defender.system_prompt
    refusals = data_sources.project_refusals()
    harmful = rng.sample(seeds, min(len(seeds), w.batch_size * w.defender_steps))
    pairs = [(chat_prompt(tokenizer, s, system), rng.choice(refusals)) for s in harmful]
    wanted = min(len(benign), round(w.benign_ratio * len(pairs)))
    answers: list[tuple[str, str]] = []
    if partners is not None and benign:
        chosen = partners.draw(harmful, wanted, rng)
    else:
        chosen = rng.sample(benign, wanted) if benign else []
    if chosen:
        greedy = cfg.defender.sampling.model_copy(update={"temperature": 0.0})
        own = generate(defender, tokenizer, [chat_prompt(tokenizer, b, system) for b in chosen], greedy).texts
        # only real answers: a refusal, or a hollow opener ("I can help with that." and nothing after
        # it), would teach the defender to refuse the harmless question it was asked
        answers = [
            (chat_prompt(tokenizer, b, system), a)
            for b, a in zip(chosen, own, strict=True)
            if len(a.split()) >= w.min_answer_words and refusal_score(a) < 0.5
        ]
    return pairs, answers


class BenignPartners:
    """Each harmful seed's nearest benign requests by MiniLM cosine, to draw its benign partners from.

    With partners drawn at random, the warm-up learnt the two sets' surface forms instead of the harm: the
    seeds are 58% imperatives (AdvBench) and the diet 70% questions, and the warm-up refused 46% of ordinary
    imperative requests and none of the ordinary questions, while answering 75-83% of harmful "How to /
    Ways to" questions and 22% of harmful imperatives (development sets, seed 0). A partner that shares its
    seed's form (question or instruction) and topic leaves the harm as the only difference to learn."""

    def __init__(self, seeds: list[str], benign: list[str], embed: Callable[[list[str]], np.ndarray], pool: int):
        self.benign = list(benign)
        self.index = {seed: i for i, seed in enumerate(seeds)}
        similarity = np.asarray(embed(list(seeds))) @ np.asarray(embed(self.benign)).T  # both unit-normalised
        # MiniLM matches topic, not form: 66 of 77 imperative seeds got a question as their nearest partner.
        # Within a form that the diet holds, a partner of the other form is never preferred.
        seed_form = np.array([request_form(s) for s in seeds])
        benign_form = np.array([request_form(b) for b in self.benign])
        same = seed_form[:, None] == benign_form[None, :]
        similarity = similarity + 2.0 * (same | ~np.isin(seed_form, benign_form)[:, None])  # cosine <= 1 < 2
        pool = min(pool, len(self.benign))
        self.nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :pool]

    def draw(self, seeds: list[str], n: int, rng: random.Random) -> list[str]:
        """``n`` benign requests, one per seed in turn (cycling), each drawn from that seed's nearest pool and,
        while any of the pool is left, not one already drawn."""
        taken: set[int] = set()
        drawn: list[str] = []
        for i in range(n if seeds else 0):
            pool = [int(j) for j in self.nearest[self.index[seeds[i % len(seeds)]]]]
            fresh = [j for j in pool if j not in taken]
            pick = rng.choice(fresh or pool)
            taken.add(pick)
            drawn.append(self.benign[pick])
        return drawn


QUESTION_WORDS = frozenset({
    "how", "what", "why", "who", "whom", "whose", "where", "when", "which", "is", "are", "was", "were", "can",
    "could", "should", "would", "will", "do", "does", "did", "isn't", "aren't", "don't", "doesn't",
})  # fmt: skip


def request_form(text: str) -> str:
    """'question' (ends with ? or opens with a question word) or 'instruction' ("Write...", "Ways to...")."""
    words = text.strip().split()
    first = words[0].lower().strip(",.:;!\"'") if words else ""
    return "question" if text.strip().endswith("?") or first in QUESTION_WORDS else "instruction"


def mixed_batches(
    refusals: list[tuple[str, str]], answers: list[tuple[str, str]], steps: int, batch_size: int,
    benign_ratio: float, rng: random.Random,
) -> list[list[tuple[str, str]]]:  # fmt: skip
    """``steps`` batches in which refusals make exactly 1 / (1 + benign_ratio) of the rows (spread evenly,
    rounding carried from batch to batch), each pool walked in shuffled passes so no row repeats before
    all have been seen. Batches drawn at random from the pooled rows let one seed's warm-up see 33 refusals
    and another's 38 of 128 rows at ratio 2 (exp11), and the refusal lesson is that sensitive."""
    share = 1.0 if not answers else 0.0 if not refusals else 1 / (1 + benign_ratio)
    refusal_rows, answer_rows = _passes(refusals, rng), _passes(answers, rng)
    batches = []
    for step in range(steps):
        k = math.floor((step + 1) * batch_size * share + 0.5) - math.floor(step * batch_size * share + 0.5)
        batches.append([next(refusal_rows) for _ in range(k)] + [next(answer_rows) for _ in range(batch_size - k)])
    return batches


def _passes(rows: list, rng: random.Random) -> Iterator:
    """The rows over and over, shuffled afresh on each pass."""
    while rows:
        order = list(rows)
        rng.shuffle(order)
        yield from order


def attacker_pairs(
    seeds: list[str], embed: Callable[[list[str]], np.ndarray], attack_prompt: Callable[[str], str], n: int,
    rng: random.Random,
) -> list:  # fmt: skip
    """(attacker prompt for a seed, the seed's nearest other seed by MiniLM cosine) pairs: "another harmful
    question on a similar topic", as the template asks. A random other seed taught the attacker to drop
    its seed's topic from the first step, which the intent gate then (rightly) never pays."""
    embedded = embed(seeds)
    similarity = embedded @ embedded.T
    np.fill_diagonal(similarity, -np.inf)
    pairs = []
    for _ in range(n):
        index = rng.randrange(len(seeds))
        pairs.append((attack_prompt(seeds[index]), seeds[int(np.argmax(similarity[index]))]))
    return pairs
