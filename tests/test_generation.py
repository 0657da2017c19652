from __future__ import annotations

import pytest
import torch

from sparring.generation import SamplingConfig, generate
from sparring.models import chat_prompt


def prompts_for(tokenizer, texts):
    return [chat_prompt(tokenizer, t) for t in texts]


@pytest.mark.parametrize("decoder", ["dynamic", "static"])
def test_same_seed_same_tokens(tiny, decoder):
    prompts = prompts_for(tiny.tokenizer, ["hello there", "a much longer prompt about nothing"])
    cfg = SamplingConfig(decoder=decoder, max_new_tokens=12, temperature=1.0, top_p=0.9, repetition_penalty=1.1)
    a = generate(tiny.model, tiny.tokenizer, prompts, cfg, seed=7)
    b = generate(tiny.model, tiny.tokenizer, prompts, cfg, seed=7)
    c = generate(tiny.model, tiny.tokenizer, prompts, cfg, seed=8)
    assert torch.equal(a.response_ids, b.response_ids) and a.texts == b.texts
    assert torch.equal(a.logprobs, b.logprobs)
    assert not torch.equal(a.response_ids, c.response_ids)


@pytest.mark.parametrize("decoder", ["dynamic", "static"])
def test_left_padding_does_not_change_results(tiny, decoder):
    """Greedy output for a prompt is the same alone and beside a longer prompt (left padding)."""
    short, long = prompts_for(tiny.tokenizer, ["hi", "a considerably longer prompt than the other one"])
    cfg = SamplingConfig(decoder=decoder, max_new_tokens=10, temperature=0)
    alone = generate(tiny.model, tiny.tokenizer, [short], cfg)
    batched = generate(tiny.model, tiny.tokenizer, [long, short], cfg)
    assert batched.prompt_mask[1, 0] == 0  # the short prompt really is padded on the left
    n = int(alone.response_mask[0].sum())
    assert torch.equal(batched.response_ids[1, :n], alone.response_ids[0, :n])
    assert torch.allclose(batched.logprobs[1, :n], alone.logprobs[0, :n], atol=1e-5)


@pytest.mark.parametrize("decoder", ["dynamic", "static"])
def test_greedy_matches_transformers_generate(tiny, decoder):
    prompts = prompts_for(tiny.tokenizer, ["abc", "the quick brown fox"])
    ours = generate(
        tiny.model, tiny.tokenizer, prompts, SamplingConfig(decoder=decoder, max_new_tokens=8, temperature=0)
    )
    theirs = tiny.model.generate(
        input_ids=ours.prompt_ids,
        attention_mask=ours.prompt_mask,
        max_new_tokens=8,
        do_sample=False,
        pad_token_id=tiny.tokenizer.pad_token_id,
        eos_token_id=tiny.tokenizer.eos_token_id,
    )
    gen = theirs[:, ours.prompt_ids.shape[1] :]
    for i in range(2):
        n = int(ours.response_mask[i].sum())
        assert torch.equal(gen[i, :n], ours.response_ids[i, :n])


@pytest.mark.parametrize("decoder", ["dynamic", "static"])
def test_logprobs_match_a_full_forward_pass(tiny, decoder):
    prompts = prompts_for(tiny.tokenizer, ["one", "two three four"])
    temperature = 0.7
    g = generate(
        tiny.model,
        tiny.tokenizer,
        prompts,
        SamplingConfig(decoder=decoder, max_new_tokens=9, temperature=temperature),
        seed=1,
    )
    ids = torch.cat([g.prompt_ids, g.response_ids], 1)
    mask = torch.cat([g.prompt_mask, g.response_mask], 1)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = tiny.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    p = g.prompt_ids.shape[1]
    logp = torch.log_softmax(logits[:, p - 1 : -1] / temperature, -1).gather(2, g.response_ids[..., None]).squeeze(2)
    assert torch.allclose(logp * g.response_mask, g.logprobs, atol=1e-4)


@pytest.mark.parametrize("decoder", ["dynamic", "static"])
def test_stops_at_eos_per_sequence(tiny, decoder):
    """Force EOS: after it the mask is 0 and the ids are padding."""
    eos = tiny.tokenizer.eos_token_id
    with torch.no_grad():
        tiny.model.lm_head.weight.zero_()
        tiny.model.lm_head.weight[eos] = 1.0  # bias the argmax towards EOS
        tiny.model.lm_head.weight[eos] *= 100
    g = generate(
        tiny.model,
        tiny.tokenizer,
        prompts_for(tiny.tokenizer, ["x", "yy"]),
        SamplingConfig(decoder=decoder, max_new_tokens=5, temperature=0),
    )
    assert g.response_ids.shape[1] == 1  # the batch stopped as soon as everyone ended
    assert (g.response_ids[:, 0] == eos).all() and g.response_mask.sum() == 2
    assert g.texts == ["", ""]


@pytest.mark.parametrize("decoder", ["dynamic", "static"])
def test_micro_batches_give_the_same_greedy_answers(tiny, decoder):
    prompts = prompts_for(tiny.tokenizer, ["a", "bb bb", "ccc ccc ccc", "d"])
    full = generate(
        tiny.model, tiny.tokenizer, prompts, SamplingConfig(decoder=decoder, max_new_tokens=6, temperature=0)
    )
    split = generate(
        tiny.model,
        tiny.tokenizer,
        prompts,
        SamplingConfig(decoder=decoder, max_new_tokens=6, temperature=0, batch_size=3),
    )
    assert full.texts == split.texts
    assert full.response_ids.shape == split.response_ids.shape


def test_real_model_answers_sensibly(smollm):
    prompt = chat_prompt(smollm.tokenizer, "What is the capital of France?")
    g = generate(smollm.model, smollm.tokenizer, [prompt], SamplingConfig(max_new_tokens=20, temperature=0))
    assert "Paris" in g.texts[0]


def test_sample_draws_from_the_distribution_and_only_from_the_nucleus():
    from sparring.sampling import sample

    probs = torch.tensor([0.5, 0.3, 0.15, 0.05]).repeat(20000, 1)
    g = torch.Generator().manual_seed(0)
    full = torch.bincount(sample(probs, 1.0, g), minlength=4).float() / 20000
    assert torch.allclose(full, probs[0], atol=0.015)
    nucleus = torch.bincount(sample(probs, 0.75, g), minlength=4).float() / 20000  # {0.5, 0.3} reach 0.75
    assert nucleus[2:].sum() == 0 and abs(nucleus[0] - 0.5 / 0.8) < 0.015
    flat = torch.full((4, 5000), 1 / 5000)  # the nucleus is wider than the first candidate set
    drawn = sample(flat, 0.9, g)
    assert drawn.shape == (4,) and bool((drawn < 5000).all())


def test_bf16_decoding_keeps_log_probs_close_to_fp32(tiny):
    prompts = prompts_for(tiny.tokenizer, ["one", "two three four"])
    fp32 = generate(tiny.model, tiny.tokenizer, prompts, SamplingConfig(max_new_tokens=6, temperature=0), seed=0)
    bf16 = generate(tiny.model, tiny.tokenizer, prompts, SamplingConfig(max_new_tokens=6, temperature=0, bf16=True))
    assert bf16.logprobs.dtype == torch.float32 and bf16.logprobs.shape[0] == 2
    width = min(fp32.logprobs.shape[1], bf16.logprobs.shape[1])
    same = (fp32.response_ids[:, :width] == bf16.response_ids[:, :width]).all(1)
    assert torch.allclose(fp32.logprobs[same, :width], bf16.logprobs[same, :width], atol=0.1)


def test_gpu_generation_benchmark_runs_on_a_tiny_shape(capsys):
    """The GPU benchmark script (benchmarks/gpu_generation.py) runs end to end here on the CPU."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_generation.py"
    spec = importlib.util.spec_from_file_location("gpu_generation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = ["--shapes", "test", "--batch", "2", "--new-tokens", "4", "--repeats", "1", "--device", "cpu"]
    module.main([*args, "--paths", "dynamic", "static"])  # static+compile works here too, but compiles for ~20 s
    lines = capsys.readouterr().out.splitlines()
    assert sum("tok/s" in line for line in lines) == 4 and "x generate" in lines[-4]
    assert "phases of sparring static" in lines[-3] and "decode per step" in lines[-3]
    assert sum(line.startswith("check:") for line in lines) == 2


def test_gpu_game_benchmark_runs_on_a_tiny_shape(capsys):
    """benchmarks/gpu_game.py plays real game steps (tiny players and a tiny guard judge) here on the CPU and
    reports every phase, tokens/s, MFU and peak memory; its figures are the game's own timings."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_game.py"
    spec = importlib.util.spec_from_file_location("gpu_game", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--shape", "test", "--device", "cpu", "--steps", "2", "--new-tokens", "4"])
    out = capsys.readouterr().out
    for stage in ("defender", "attacker"):
        figures = result[stage]
        assert figures["step_s"] > 0 and figures["update_tokens_per_s"] > 0 and 0 < figures["update_mfu"] < 1
        assert 0 < figures["generation_share"] < 1 and set(figures["phases_s"]) == set(module.PHASES)
    assert "peak memory" in out and out.count("MFU") == 2


def test_static_decoder_samples_the_nucleus_with_true_log_probs(tiny):
    """Sampling with top-p and a repetition penalty on the static-cache path: reproducible, and the
    reported log-probs are the policy's at its temperature (checked by a full forward pass)."""
    prompts = prompts_for(tiny.tokenizer, ["one", "two three four five"])
    cfg = SamplingConfig(decoder="static", max_new_tokens=10, temperature=0.8, top_p=0.9, repetition_penalty=1.2)
    g = generate(tiny.model, tiny.tokenizer, prompts, cfg, seed=3)
    assert torch.equal(g.response_ids, generate(tiny.model, tiny.tokenizer, prompts, cfg, seed=3).response_ids)
    ids = torch.cat([g.prompt_ids, g.response_ids], 1)
    mask = torch.cat([g.prompt_mask, g.response_mask], 1)
    with torch.no_grad():
        logits = tiny.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    p = g.prompt_ids.shape[1]
    logp = torch.log_softmax(logits[:, p - 1 : -1] / 0.8, -1).gather(2, g.response_ids[..., None]).squeeze(2)
    assert torch.allclose(logp * g.response_mask, g.logprobs, atol=1e-4)


def test_draw_follows_the_distribution_and_the_nucleus():
    from sparring.sampling import draw

    probs = torch.tensor([0.15, 0.5, 0.05, 0.3]).repeat(20000, 1)
    u = torch.rand(20000, generator=torch.Generator().manual_seed(0))
    full = torch.bincount(draw(probs, 1.0, u), minlength=4).float() / 20000
    assert torch.allclose(full, probs[0], atol=0.015)
    for exhaustive in (True, False):
        nucleus = torch.bincount(draw(probs, 0.75, u, exhaustive), minlength=4).float() / 20000  # {0.5, 0.3}
        assert nucleus[[0, 2]].sum() == 0 and abs(nucleus[1] - 0.5 / 0.8) < 0.015
    wide = torch.softmax(-torch.arange(5000.0) / 2000, -1).repeat(64, 1)  # nucleus wider than 256 candidates
    assert torch.equal(draw(wide, 0.9, u[:64], exhaustive=False), draw(wide, 0.9, u[:64]))


def test_auto_decoder_is_dynamic_on_cpu_and_static_only_where_supported(tiny):
    from sparring.errors import SparringError
    from sparring.generation import use_static

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not use_static(tiny.model, SamplingConfig(), cpu)
    assert use_static(tiny.model, SamplingConfig(), cuda)  # a Llama: transformers compiles it over a static cache
    assert use_static(tiny.model, SamplingConfig(decoder="static"), cpu)
    assert not use_static(tiny.model, SamplingConfig(decoder="dynamic"), cuda)
    tiny.model.config._attn_implementation = "flash_attention_2"  # takes no 4-D mask
    assert not use_static(tiny.model, SamplingConfig(), cuda)
    with pytest.raises(SparringError, match="sampling.decoder=dynamic"):
        use_static(tiny.model, SamplingConfig(decoder="static"), cpu)


def test_compiled_static_step_gives_the_same_tokens(tiny):
    """The decode step traced by torch.compile (aot_eager: dynamo's graph and in-place buffer updates
    without inductor's code generation) decodes exactly as the eager step, across prompt widths."""
    from sparring.generation import cache_kwarg
    from sparring.static_decode import generate_chunk

    cfg = SamplingConfig(decoder="static", max_new_tokens=8, temperature=0.8, top_p=0.9, repetition_penalty=1.2)
    for texts in (["one", "two three four"], ["a rather longer prompt this time", "b"]):
        prompts = prompts_for(tiny.tokenizer, texts)
        run = [
            generate_chunk(
                tiny.model,
                tiny.tokenizer,
                prompts,
                cfg,
                torch.Generator().manual_seed(0),
                cache_kwarg(tiny.model),
                graphs=False,
                compile_backend=backend,
            )
            for backend in (None, "aot_eager")
        ]
        assert torch.equal(run[0][2], run[1][2]) and torch.allclose(run[0][4], run[1][4], atol=1e-5)


def test_repeated_prompts_share_one_prefill(tiny):
    """Samples of the same prompt are prefilled once and fanned out: greedy answers equal the
    unshared ones, and sampled log-probs still match a full forward pass."""
    a, b = prompts_for(tiny.tokenizer, ["one two", "three"])
    prompts = [a, b, a, a, b]
    greedy = SamplingConfig(decoder="dynamic", max_new_tokens=8, temperature=0)
    shared = generate(tiny.model, tiny.tokenizer, prompts, greedy)
    alone = generate(tiny.model, tiny.tokenizer, [a, b], greedy)
    assert shared.texts == [alone.texts[i] for i in (0, 1, 0, 0, 1)]
    g = generate(tiny.model, tiny.tokenizer, prompts, greedy.model_copy(update={"temperature": 1.0}), seed=2)
    assert len(set(g.texts)) > 2  # the copies sample independently
    ids, mask = torch.cat([g.prompt_ids, g.response_ids], 1), torch.cat([g.prompt_mask, g.response_mask], 1)
    with torch.no_grad():
        logits = tiny.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    p = g.prompt_ids.shape[1]
    logp = torch.log_softmax(logits[:, p - 1 : -1], -1).gather(2, g.response_ids[..., None]).squeeze(2)
    assert torch.allclose(logp * g.response_mask, g.logprobs, atol=1e-4)
