"""The averaged defender: exact for LoRA (concatenated adapters), a running mean without it."""

from __future__ import annotations

import copy

import pytest
import torch

from sparring.averaging import AVERAGED, StageAverage
from sparring.models import LoraSettings, add_lora


def lora_layers(model):
    return {n: m for n, m in model.named_modules() if hasattr(m, "lora_A") and "default" in m.lora_A}


def randomise_adapter(model, seed: int) -> dict[str, torch.Tensor]:
    """Give every LoRA layer random A and B; return each layer's delta s * B @ A."""
    gen = torch.Generator().manual_seed(seed)
    deltas = {}
    with torch.no_grad():
        for name, layer in lora_layers(model).items():
            a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
            a.copy_(torch.randn(a.shape, generator=gen) * 0.1)
            b.copy_(torch.randn(b.shape, generator=gen) * 0.1)
            deltas[name] = layer.scaling["default"] * b @ a
    return deltas


@pytest.mark.parametrize("rslora", [False, True])
def test_the_lora_average_is_the_mean_of_the_stage_ends_deltas(tiny, rslora):
    model = add_lora(copy.deepcopy(tiny.model), LoraSettings(rank=4, alpha=8))
    model.peft_config["default"].use_rslora = rslora
    for layer in lora_layers(model).values():  # rsLoRA's scale, as PEFT sets it at creation
        layer.scaling["default"] = 8 / (4**0.5) if rslora else 8 / 4
    average = StageAverage()
    deltas = []
    for seed in range(3):
        deltas.append(randomise_adapter(model, seed))
        average.add(model)
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    last = model(ids).logits

    # what the average should be: the base weights plus the mean delta, merged by hand
    merged = copy.deepcopy(tiny.model)
    state = merged.state_dict()
    for name in deltas[0]:
        key = name.removeprefix("base_model.model.") + ".weight"
        state[key] = state[key] + sum(d[name] for d in deltas) / len(deltas)
    merged.load_state_dict(state)
    want = merged(ids).logits

    with average.applied(model):
        assert model.active_adapter == AVERAGED and model.peft_config[AVERAGED].r == 12
        got = model(ids).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(got, last, atol=1e-3)  # the average is not the last iterate
    # after the block: the last iterate again, and no trace of the averaged adapter
    assert model.active_adapter == "default" and AVERAGED not in model.peft_config
    torch.testing.assert_close(model(ids).logits, last)


def test_without_lora_the_average_is_the_running_mean_and_survives_a_round_trip(tiny):
    model = copy.deepcopy(tiny.model)
    average = StageAverage()
    seen = []
    for seed in range(3):
        torch.manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.01)
        seen.append({n: p.detach().clone() for n, p in model.named_parameters()})
        average.add(model)
    restored = StageAverage()
    restored.load_state_dict(average.state_dict(), average.count)
    final = {n: p.detach().clone() for n, p in model.named_parameters()}
    with restored.applied(model):
        for name, p in model.named_parameters():
            torch.testing.assert_close(p, sum(s[name] for s in seen) / 3, rtol=1e-5, atol=1e-6)
    for name, p in model.named_parameters():
        assert torch.equal(p, final[name])


def test_lora_snapshots_survive_a_round_trip(tiny):
    model = add_lora(copy.deepcopy(tiny.model), LoraSettings(rank=2, alpha=4))
    average = StageAverage()
    for seed in range(2):
        randomise_adapter(model, seed)
        average.add(model)
    restored = StageAverage()
    restored.load_state_dict(average.state_dict(), average.count)
    config = model.peft_config["default"]
    (_, want), (_, got) = average.adapter(config), restored.adapter(config)
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key])
