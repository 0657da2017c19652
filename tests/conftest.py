"""Shared fixtures: tiny random models (seconds) and the real bundled model (cached once)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture()
def tiny():
    from sparring.models import load_model

    return load_model("tiny")


@pytest.fixture(scope="session")
def smollm():
    """The real SmolLM2-135M-Instruct, from the user cache (converted on first use)."""
    from sparring.models import load_model

    return load_model("bundled:smollm2-135m-instruct")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA
