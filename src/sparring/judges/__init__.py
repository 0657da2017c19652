"""Safety judges behind one protocol, chosen by a spec string.

| spec | judge |
|---|---|
| ``bundled`` | the default, offline: ``bundled-v2`` (held-out report card in the README) |
| ``bundled-v1`` | two logistic heads over separate MiniLM embeddings of request and answer |
| ``bundled-v2`` | a MiniLM cross-encoder: P(harmful request) * P(answer delivers it), calibrated |
| ``refusal`` | the AdvBench-style refusal matcher |
| ``guard:MODEL[?template=llama-guard-3&safe=safe&unsafe=unsafe]`` | a Llama-Guard-style causal LM |
| ``reward:MODEL[?mapping=sigmoid-reward|sigmoid-cost|softmax:K&offset=0]`` | a sequence classifier |
| ``remote:URL?model=NAME[&key_env=VAR&concurrency=8&timeout=30&retries=4]`` | an OpenAI-compatible server |
"""

from __future__ import annotations

from urllib.parse import parse_qsl

import sparring.numerics  # noqa: F401  (settles MKL kernel dispatch before any threaded op)
from sparring.errors import SparringError
from sparring.judges.base import Judge
from sparring.judges.refusal import RefusalJudge

__all__ = ["Judge", "RefusalJudge", "load_judge"]

JUDGE_KINDS = ("bundled", "bundled-v1", "bundled-v2", "refusal", "guard:MODEL", "reward:MODEL", "remote:URL?model=NAME")


def _split(spec: str) -> tuple[str, dict[str, str]]:
    target, _, query = spec.partition("?")
    return target, dict(parse_qsl(query, keep_blank_values=True))


def _pop(options: dict[str, str], key: str, cast, default, spec: str):
    if key not in options:
        return default
    raw = options.pop(key)
    try:
        return cast(raw)
    except ValueError as exc:
        raise SparringError(f"judge option {key}={raw!r} in '{spec}' is not a valid {cast.__name__}") from exc


def load_judge(spec: str, device: str = "cpu", threshold: float = 0.5) -> Judge:
    """Build the judge a spec names; every unknown kind or option is an error that lists what exists."""
    kind, _, rest = spec.partition(":")
    judge: Judge
    if spec == "refusal":
        judge = RefusalJudge()
    elif spec in ("bundled", "bundled-v2"):
        from sparring.judges.pair import PairJudge

        judge = PairJudge(device=device)
    elif spec == "bundled-v1":
        from sparring.judges.bundled import BundledJudge

        judge = BundledJudge(device=device)
    elif kind in ("guard", "reward", "remote") and rest:
        target, options = _split(rest)
        if kind == "guard":
            from sparring.judges.guard import GuardJudge
            from sparring.models import ModelConfig, load_model

            judge = GuardJudge(
                load_model(ModelConfig(spec=target, device=device)),
                template=options.pop("template", "llama-guard-3"),
                safe_token=options.pop("safe", "safe"),
                unsafe_token=options.pop("unsafe", "unsafe"),
                batch_size=_pop(options, "batch_size", int, 8, spec),
            )
        elif kind == "reward":
            from sparring.judges.classifier import ClassifierJudge

            judge = ClassifierJudge(
                target,
                mapping=options.pop("mapping", "sigmoid-reward"),
                offset=_pop(options, "offset", float, 0.0, spec),
                device=device,
            )
        else:
            from sparring.judges.remote import RemoteJudge

            if "model" not in options:
                raise SparringError(f"remote judge '{spec}' names no model", hint="add ?model=NAME to the spec")
            judge = RemoteJudge(
                target,
                model=options.pop("model"),
                key_env=options.pop("key_env", "SPARRING_JUDGE_API_KEY"),
                concurrency=_pop(options, "concurrency", int, 8, spec),
                timeout=_pop(options, "timeout", float, 30.0, spec),
                retries=_pop(options, "retries", int, 4, spec),
            )
        if options:
            raise SparringError(f"unknown option(s) {', '.join(options)} in judge spec '{spec}'")
    else:
        raise SparringError(f"unknown judge '{spec}'", hint=f"use one of: {', '.join(JUDGE_KINDS)}")
    judge.threshold = threshold
    return judge
