"""Decoding with a static KV cache; on a GPU the whole decode step is one replayed CUDA graph.

On a GPU, plain ``generate`` spends most of each step launching small kernels and waiting on the
host (stopping checks read the device every step). Here every tensor a step touches has a fixed
shape and address -- transformers' ``StaticCache``, an attention-mask buffer, the uniforms for
sampling drawn before the loop, output buffers indexed by a step counter on the device -- so one
step (model forward, repetition penalty, top-p draw, log-prob, EOS bookkeeping) is captured once
as a CUDA graph and replayed; the host reads the device only every ``check_every`` steps, to stop
once every sequence has ended. Optionally the step is first compiled with ``torch.compile``, which
fuses a layer's few dozen small kernels into a handful (a graph removes launch cost, not kernel
count). Without CUDA the same step runs eagerly (the tests check it against the dynamic loop).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, StaticCache

from sparring.models import base_model
from sparring.sampling import draw, penalise_repeats, seen_mask, token_logprob

ChunkResult = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def supports_static_cache(model: PreTrainedModel) -> bool:
    """Whether transformers can run this model over a ``StaticCache`` (its compile-ready architectures)
    with the additive 4-D masks used here (sdpa or eager attention; flash-attention kernels take none)."""
    base = base_model(model)
    ready = getattr(base, "_can_compile_fullgraph", False) or getattr(base, "_supports_static_cache", False)
    return bool(ready) and getattr(base.config, "_attn_implementation", "sdpa") in ("sdpa", "eager")


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean "may attend" mask as the additive float mask transformers' attention expects."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


@dataclass(frozen=True)
class Options:
    """The step's constants (dynamo guards on them; they never change within a call)."""

    temperature: float  # 0 = greedy
    top_p: float
    penalty: float
    pad: int
    eos: int  # -1 when the tokenizer has none
    mask_dtype: torch.dtype
    cache_name: str
    graph_safe: bool  # no host reads inside the step (it will be captured)


@dataclass
class State:
    """Every tensor a decode step reads or writes, at fixed addresses for the whole call."""

    ids: torch.Tensor  # (B, 1) the token fed next
    pos: torch.Tensor  # (B, 1) its position id
    valid: torch.Tensor  # (B, L) bool: cache slot holds a real token
    slot: torch.Tensor  # (1,) cache slot of the token fed next, minus one
    index: torch.Tensor  # (1,) output column of the next token
    finished: torch.Tensor  # (B,) bool
    uniforms: torch.Tensor  # (N, B) one uniform per sampled token, drawn up front
    seen: torch.Tensor  # (B, V) bool, tokens the repetition penalty applies to (B, 1) when off
    out_ids: torch.Tensor  # (B, N)
    out_mask: torch.Tensor  # (B, N)
    out_logp: torch.Tensor  # (B, N) float32


def emit(logits: torch.Tensor, s: State, o: Options) -> None:
    """Choose the next token from the last position's logits and advance every buffer in place."""
    logits = logits.float()
    scale = o.temperature if o.temperature > 0 else 1.0
    scaled = logits / scale  # the policy at its temperature
    scores = penalise_repeats(logits, s.seen, o.penalty) / scale if o.penalty != 1.0 else scaled
    if o.temperature == 0:
        token = scores.argmax(dim=-1)
    else:
        token = draw(
            torch.softmax(scores, dim=-1), o.top_p, s.uniforms.index_select(0, s.index).squeeze(0), o.graph_safe
        )
    token = torch.where(s.finished, torch.full_like(token, o.pad), token)
    alive = ~s.finished
    logp = token_logprob(scaled, token) * alive
    s.out_ids.index_copy_(1, s.index, token[:, None])
    s.out_mask.index_copy_(1, s.index, alive.long()[:, None])
    s.out_logp.index_copy_(1, s.index, logp[:, None])
    if o.eos >= 0:
        s.finished.logical_or_(token == o.eos)
    if o.penalty != 1.0:
        s.seen.scatter_(1, token[:, None], True)
    s.ids.copy_(token[:, None])
    s.pos.add_(1)
    s.slot.add_(1)
    s.index.add_(1)
    s.valid.scatter_(1, s.slot.expand(s.valid.shape[0])[:, None], alive[:, None])


def decode_step(model: PreTrainedModel, cache: StaticCache, s: State, o: Options) -> None:
    """One token for every sequence: a forward pass of the fed token over the static cache, then ``emit``."""
    out = model(
        input_ids=s.ids,
        attention_mask=_additive(s.valid[:, None, None, :], o.mask_dtype),
        position_ids=s.pos,
        use_cache=True,
        **{o.cache_name: cache},
    )
    emit(out.logits[:, -1, :], s, o)


_compiled: dict[str, Callable] = {}


def compiled_step(backend: str) -> Callable:
    """``decode_step`` under ``torch.compile`` (one wrapper per backend; dynamo caches per model and shape)."""
    if backend not in _compiled:
        _compiled[backend] = torch.compile(decode_step, backend=backend)
    return _compiled[backend]


@torch.no_grad()
def generate_chunk(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    cfg,  # SamplingConfig (not imported: generation imports this module)
    generator: torch.Generator,
    cache_name: str,
    graphs: bool,
    compile_backend: str | None = None,
    check_every: int = 16,
    stats: dict[str, float] | None = None,
) -> ChunkResult:
    """Decode one batch: (prompt ids, prompt mask, response ids, response mask, log-probs), with
    the same meaning and the same greedy tokens as ``generation._generate_chunk``.

    ``compile_backend`` (e.g. "inductor") compiles the decode step first; ``stats``, if given,
    receives the seconds spent in each phase (synchronising the device at each boundary).
    """
    device = next(model.parameters()).device
    clock = _Clock(device, stats)
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    prompt_ids, prompt_mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    batch, width = prompt_ids.shape
    steps = cfg.max_new_tokens
    length = width + steps  # every slot the cache will ever hold
    mask_dtype = model.get_input_embeddings().weight.dtype
    if torch.is_autocast_enabled(device.type):
        mask_dtype = torch.get_autocast_dtype(device.type)
    eos = tokenizer.eos_token_id
    o = Options(
        cfg.temperature, cfg.top_p, cfg.repetition_penalty, tokenizer.pad_token_id,
        -1 if eos is None else eos, mask_dtype, cache_name, graphs,
    )  # fmt: skip
    positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
    valid = torch.zeros(batch, length, dtype=torch.bool, device=device)
    valid[:, :width] = prompt_mask.bool()
    seen = seen_mask(prompt_ids, model.config.vocab_size, o.penalty)
    s = State(
        ids=torch.zeros(batch, 1, dtype=torch.long, device=device),
        pos=positions[:, -1:].clone(),
        valid=valid,
        slot=torch.tensor([width - 1], device=device),
        index=torch.zeros(1, dtype=torch.long, device=device),
        finished=torch.zeros(batch, dtype=torch.bool, device=device),
        uniforms=torch.rand(steps, batch, generator=generator, device=device),  # drawn up front: graph-safe
        seen=seen,
        out_ids=torch.full((batch, steps), o.pad, dtype=torch.long, device=device),
        out_mask=torch.zeros(batch, steps, dtype=torch.long, device=device),
        out_logp=torch.zeros(batch, steps, dtype=torch.float32, device=device),
    )
    cache = StaticCache(config=model.config, max_cache_len=length)

    # Prefill: causal over the prompt's real tokens; each query also sees itself, so padding rows stay finite.
    query = torch.arange(width, device=device)[:, None]
    key = torch.arange(length, device=device)[None, :]
    allowed = ((key <= query)[None] & valid[:, None, :]) | (key == query)[None]
    out = model(
        input_ids=prompt_ids,
        attention_mask=_additive(allowed[:, None], mask_dtype),
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
        **{cache_name: cache},
    )
    emit(out.logits[:, -1, :], s, o)
    clock.lap("prefill")
    done = 1
    step_fn: Callable = decode_step
    compiled = 0
    if compile_backend and done < steps:
        try:  # the first call for this model and shape compiles; a failure changes nothing, so fall back
            compiled_step(compile_backend)(model, cache, s, o)
            step_fn = compiled_step(compile_backend)
            done, compiled = done + 1, 1
        except Exception as err:  # dynamo and inductor raise many kinds
            warnings.warn(f"torch.compile of the decode step failed ({err}); decoding uncompiled", stacklevel=3)
        clock.lap("compile", count=compiled)
    run: Callable[[], None] = lambda: step_fn(model, cache, s, o)  # noqa: E731
    if graphs and steps > 3:
        run, done = _capture(run, done, device, clock)
    while done < steps:
        run()
        done += 1
        if done % check_every == 0 and bool(s.finished.all()):
            break
    made = int(s.out_mask.sum(1).max())  # stop where the dynamic loop stops: when the last sequence ended
    clock.lap("decode", per=done - 1 - clock.counts.get("warm-up", 0) - clock.counts.get("compile", 0))
    return prompt_ids, prompt_mask, s.out_ids[:, :made], s.out_mask[:, :made], s.out_logp[:, :made]


def _capture(run: Callable[[], None], done: int, device: torch.device, clock: _Clock) -> tuple[Callable[[], None], int]:
    """Run two real steps on a side stream (CUDA's warm-up before capture; compilation happens
    here too), then capture one step. Capturing records without executing, so the buffers stay
    where the warm-up left them. If the step cannot be captured (a host sync inside the model's
    forward), warn and keep stepping without a graph."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(2):
            run()
            done += 1
    torch.cuda.current_stream(device).wait_stream(stream)
    clock.lap("warm-up", count=2)
    graph = torch.cuda.CUDAGraph()
    try:  # capture_begin/end directly: torch.cuda.graph() would also gc.collect() and empty the cache each call
        with torch.cuda.stream(stream):
            graph.capture_begin()
            try:
                run()
            finally:
                graph.capture_end()
    except RuntimeError as err:  # e.g. "operation not permitted when stream is capturing"
        warnings.warn(f"CUDA graph capture failed ({err}); decoding without graphs", stacklevel=3)
        torch.cuda.synchronize(device)
        return run, done
    torch.cuda.current_stream(device).wait_stream(stream)
    clock.lap("capture")
    return graph.replay, done


class _Clock:
    """Phase timings for benchmarks; does nothing (and never synchronises) unless asked."""

    def __init__(self, device: torch.device, stats: dict[str, float] | None) -> None:
        self.device, self.stats, self.counts = device, stats, {}
        self.start = time.perf_counter() if stats is not None else 0.0

    def lap(self, phase: str, count: int = 1, per: int | None = None) -> None:
        if self.stats is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.stats[phase] = now - self.start
        self.counts[phase] = count
        if per:
            self.stats[f"{phase} per step"] = (now - self.start) / per
        self.start = now
