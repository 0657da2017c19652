"""The judge protocol: P(unsafe) in [0, 1] for each (prompt, response) pair, batched."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np


class Judge(ABC):
    """Scores exchanges. The defender's reward is 1 - P(unsafe); the attacker's is P(unsafe)."""

    name: str = "judge"
    threshold: float = 0.5

    @abstractmethod
    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """P(unsafe) per pair, float64 array of len(prompts)."""

    @staticmethod
    def _check(prompts: Sequence[str], responses: Sequence[str]) -> None:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")


def encoded_batches(tokenizer, texts: Sequence[str], batch_size: int, max_length: int, device):
    """Tokenised, padded, truncated batches of ``texts`` on ``device``: the loop every model judge runs."""
    for start in range(0, len(texts), batch_size):
        yield tokenizer(
            list(texts[start : start + batch_size]),
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max_length,
        ).to(device)
