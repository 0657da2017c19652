"""Both LoRA players on one loaded base model (``shared_base: true``): the base's memory is paid once.

Each player trains its own adapter (named after its role). After its warm-up, the warm-up's SFT adapter
stays on the base, frozen, under the player's adapter (``ROLE_warmup``): the player's policy is
base + warm-up + its adapter, its reference base + warm-up -- the same policy and reference as merging
the warm-up into a private copy of the base (runs.player_model), up to float rounding. Only the
active adapters run, so a forward pass of one player is untouched by the other's adapter. Checkpoints
hold each player's own adapter, laid out as a private model would write it, so every reader of a run
(eval, export, exploit, resume) reads a shared-base run like any other.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from sparring.models import LoraSettings, ModelConfig, add_lora, load_model, restore_weights


def warmup_adapter(role: str) -> str:
    """The name of a player's frozen warm-up adapter on the shared base."""
    return f"{role}_warmup"


class SharedBase:
    """One base model and its tokenizer, loaded on first use; each player's adapters added to it."""

    def __init__(self, settings: ModelConfig) -> None:
        self.settings = settings.model_copy(update={"lora": None})
        self.model = None
        self.tokenizer = None

    def player(self, role: str, lora: LoraSettings, warm: Path) -> tuple:
        """(model, tokenizer, adapter, frozen adapters under it) for ``role``: a fresh adapter over the
        warm-up's in ``warm`` where that warm-up is complete; any adapters the role had are replaced."""
        from peft import LoraConfig

        if self.model is None:
            loaded = load_model(self.settings)
            self.model, self.tokenizer = loaded.model, loaded.tokenizer
        under = warmup_adapter(role)
        for name in (role, under):
            if hasattr(self.model, "peft_config") and name in self.model.peft_config:
                with warnings.catch_warnings():  # it was active: PEFT says so; the player activates its own anyway
                    warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted")
                    self.model.delete_adapter(name)
        frozen: tuple[str, ...] = ()
        if (warm / "complete.json").exists():
            self.model = add_lora(self.model, lora, under, config=LoraConfig.from_pretrained(str(warm)))
            restore_weights(self.model, warm, under)
            frozen = (under,)
        self.model = add_lora(self.model, lora, name=role)
        return self.model, self.tokenizer, role, frozen
