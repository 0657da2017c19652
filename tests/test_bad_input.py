"""Property-based: any prompt file or config override ends in prompts/a config, or in one SparringError
that names the input -- never another exception, a traceback or a silent default."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sparring.config import GameConfig, load_config
from sparring.data import read_prompts
from sparring.errors import SparringError

SUFFIXES = [".txt", ".csv", ".jsonl", ".json", ".tsv"]
text_lines = st.lists(st.text(max_size=40), max_size=6)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def prompt_files(draw):
    suffix = draw(st.sampled_from(SUFFIXES))
    kind = draw(st.sampled_from(["bytes", "lines", "jsonl", "json", "csv", "huge"]))
    if kind == "bytes":
        content = draw(st.binary(max_size=200))
    elif kind == "lines":
        content = "\n".join(draw(text_lines)).encode("utf-8", "surrogatepass")
    elif kind == "jsonl":
        content = "\n".join(json.dumps(v) for v in draw(st.lists(json_values, max_size=5))).encode()
    elif kind == "json":
        content = json.dumps(draw(json_values)).encode()
    elif kind == "csv":
        header = draw(st.sampled_from(["prompt,x", "a,b", "Behavior", "goal,category", ""]))
        content = (header + "\n" + "\n".join(draw(text_lines))).encode("utf-8", "surrogatepass")
    else:
        content = ("x" * draw(st.integers(100_000, 400_000)) + "\n").encode()
    return suffix, content


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prompt_files())
def test_prompt_files_give_prompts_or_a_named_error(sample):
    suffix, content = sample
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"prompts{suffix}"
        path.write_bytes(content)
        try:
            prompts = read_prompts(path)
        except SparringError as error:
            assert str(path) in str(error) or path.name in str(error)
            return
        assert prompts and all(isinstance(p, str) and p.strip() == p and p for p in prompts)


def _leaf_paths(model: type, prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            out += _leaf_paths(annotation, f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


KEYS = _leaf_paths(GameConfig)
raw_values = st.one_of(
    st.sampled_from(
        ["", "0", "-1", "1e9", "nan", "inf", "null", "true", "[1, 2]", "{a: 1}", "gpo", "tiny", "'", ": :"]
    ),
    st.text(max_size=12),
    st.integers(-10, 10_000).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([*KEYS, "defender.nope", "schedule", "a..b", "run.dir.x"]), raw_values),
        min_size=1,
        max_size=3,
    )
)
@example([("schedule.steps", "0")])  # the warm-up alone is a valid game (the paper's SFT row)
@example([("schedule.steps", "-1")])
def test_overrides_give_a_config_or_a_named_error(items):
    overrides = [f"{key}={value}" for key, value in items]
    try:
        config = load_config(None, overrides)
    except SparringError as error:
        message = str(error)
        assert any(key.split(".")[0] in message or key in message for key, _ in items), message
        return
    assert isinstance(config, GameConfig)
    assert config.schedule.steps >= 0 and 0 <= config.judge.threshold <= 1

    def floats(value):
        if isinstance(value, dict):
            for v in value.values():
                yield from floats(v)
        elif isinstance(value, float):
            yield value

    assert all(math.isfinite(v) for v in floats(config.model_dump()))
