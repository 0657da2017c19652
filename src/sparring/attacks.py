"""What the attacker is asked and what is kept of its answer: one prompt builder and one cleaner,
shared by the game, its warm-up and `sparring redteam`, so all three ask the same question."""

from __future__ import annotations

from sparring.models import chat_prompt


def attack_prompt(tokenizer, settings, seed: str) -> str:
    """The attacker's chat prompt for one seed: ``settings.template`` with {seed} filled in."""
    return chat_prompt(tokenizer, settings.template.replace("{seed}", seed), settings.system_prompt)


def clean_attack(text: str, whole: bool = False) -> str:
    """The attacker's question: its first non-empty line (or, ``whole``, all of it), without quotes or a
    'Question:' label."""
    if whole:
        text = " ".join(line.strip().strip('"').strip() for line in text.splitlines() if line.strip())
    for line in text.splitlines():
        line = line.strip().strip('"').strip()
        for label in ("Question:", "New question:", "Another question:"):
            if line.lower().startswith(label.lower()):
                line = line[len(label) :].strip()
        if line:
            return line
    return text.strip()
