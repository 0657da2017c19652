"""A sequence-classification reward/cost model as a judge, with a configurable map to P(unsafe)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from sparring.errors import SparringError
from sparring.judges.base import Judge, encoded_batches

MAPPINGS = ("sigmoid-reward", "sigmoid-cost", "softmax:K")


class ClassifierJudge(Judge):
    """P(unsafe) from a classifier's logits.

    mapping: ``sigmoid-reward`` (one logit, higher is safer: sigmoid(offset - r)),
    ``sigmoid-cost`` (one logit, higher is less safe: sigmoid(c - offset)),
    ``softmax:K`` (several classes, K is the unsafe class).
    """

    name = "reward"

    def __init__(
        self,
        source: str,
        mapping: str = "sigmoid-reward",
        offset: float = 0.0,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        batch_size: int = 16,
        max_length: int = 1024,
        trust_remote_code: bool = False,
    ) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if mapping not in ("sigmoid-reward", "sigmoid-cost") and not mapping.startswith("softmax:"):
            raise SparringError(f"unknown reward mapping '{mapping}'", hint=f"use one of {', '.join(MAPPINGS)}")
        if mapping.startswith("softmax:") and not mapping.removeprefix("softmax:").isdigit():
            raise SparringError(
                f"bad mapping '{mapping}'", hint="softmax:K needs the unsafe class index, e.g. softmax:1"
            )
        if not Path(source).expanduser().exists() and source.startswith((".", "/", "~")):
            raise SparringError(f"reward model path '{source}' does not exist")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
            self.model = (
                AutoModelForSequenceClassification.from_pretrained(
                    source, use_safetensors=True, trust_remote_code=trust_remote_code
                )
                .to(device=device, dtype=dtype)
                .eval()
            )
        except OSError as exc:
            raise SparringError(
                f"could not load reward model '{source}': {exc}",
                hint="give a save_pretrained directory with safetensors weights or a Hub id",
            ) from exc
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        n_labels = self.model.config.num_labels
        if mapping.startswith("sigmoid") and n_labels != 1:
            raise SparringError(
                f"'{source}' has {n_labels} output classes; sigmoid mappings need one", hint="use mapping softmax:K"
            )
        if mapping.startswith("softmax:") and int(mapping.split(":")[1]) >= n_labels:
            raise SparringError(f"class {mapping.split(':')[1]} does not exist; '{source}' has {n_labels} classes")
        self.mapping, self.offset = mapping, offset
        self.batch_size, self.max_length = batch_size, max_length
        self.name = f"reward:{source}"

    def _texts(self, prompts: Sequence[str], responses: Sequence[str]) -> list[str]:
        if getattr(self.tokenizer, "chat_template", None):
            return [
                self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": p}, {"role": "assistant", "content": r}], tokenize=False
                )
                for p, r in zip(prompts, responses, strict=True)
            ]
        sep = self.tokenizer.sep_token or "\n\n"
        return [f"{p}{sep}{r}" for p, r in zip(prompts, responses, strict=True)]

    def to_p_unsafe(self, logits: torch.Tensor) -> torch.Tensor:
        if self.mapping == "sigmoid-reward":
            return torch.sigmoid(self.offset - logits[:, 0])
        if self.mapping == "sigmoid-cost":
            return torch.sigmoid(logits[:, 0] - self.offset)
        return torch.softmax(logits, dim=-1)[:, int(self.mapping.split(":")[1])]

    @torch.no_grad()
    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        self._check(prompts, responses)
        texts = self._texts(prompts, responses)
        device = next(self.model.parameters()).device
        out = []
        for enc in encoded_batches(self.tokenizer, texts, self.batch_size, self.max_length, device):
            out.append(self.to_p_unsafe(self.model(**enc).logits.float()).cpu())
        return torch.cat(out).double().numpy() if out else np.zeros(0)
