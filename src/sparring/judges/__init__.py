"""Safety judges behind one protocol, chosen by a spec string.

| spec | judge |
|---|---|
| ``bundled`` | the default, offline: ``bundled-v2`` (held-out report card in the README) |
| ``bundled-v1`` | two logistic heads over separate MiniLM embeddings of request and answer |
| ``bundled-v2`` | a MiniLM cross-encoder: P(harmful request) * P(answer delivers it), calibrated |
| ``refusal`` | the AdvBench-style refusal matcher |
| ``guard:MODEL[?template=llama-guard-3&safe=safe&unsafe=unsafe&dtype=auto]`` | a Llama-Guard-style causal LM |
| ``reward:MODEL[?mapping=sigmoid-reward|sigmoid-cost|softmax:K&offset=0&dtype=auto]`` | a sequence classifier |

A model judge's ``dtype`` (fp32, bf16, fp16 or auto) is its weights' precision; ``auto`` is bf16 on a GPU
that has it (an 8B guard in fp32 would take 30 GiB beside the players) and fp32 on a CPU.
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


def judge_dtype(options: dict[str, str], device: str) -> str:
    """The weight dtype a model judge's spec asks for; auto = bf16 on a bf16-capable GPU, else fp32.
    ``device`` is a kind: cpu, cuda or auto."""
    import torch

    dtype = options.pop("dtype", "auto")
    if dtype not in ("auto", "fp32", "bf16", "fp16"):
        raise SparringError(f"unknown judge dtype '{dtype}'", hint="use auto, fp32, bf16 or fp16")
    if dtype != "auto":
        return dtype
    on_gpu = device in ("cuda", "auto") and torch.cuda.is_available()
    return "bf16" if on_gpu and torch.cuda.is_bf16_supported() else "fp32"


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
        placement = device.split(":")[0]  # ModelConfig places by kind; the game passes its defender's "cuda:0"
        if kind == "guard":
            from sparring.judges.guard import GuardJudge
            from sparring.models import ModelConfig, load_model

            judge = GuardJudge(
                load_model(ModelConfig(spec=target, device=placement, dtype=judge_dtype(options, placement))),
                template=options.pop("template", "llama-guard-3"),
                safe_token=options.pop("safe", "safe"),
                unsafe_token=options.pop("unsafe", "unsafe"),
                batch_size=_pop(options, "batch_size", int, 8, spec),
            )
        elif kind == "reward":
            from sparring.judges.classifier import ClassifierJudge
            from sparring.models import resolve_device

            judge = ClassifierJudge(
                target,
                mapping=options.pop("mapping", "sigmoid-reward"),
                offset=_pop(options, "offset", float, 0.0, spec),
                device=device,
                dtype=resolve_device(placement, judge_dtype(options, placement))[1],
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
