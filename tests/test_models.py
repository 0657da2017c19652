from __future__ import annotations

import warnings

import pytest
import torch

from sparring.errors import SparringError
from sparring.models import (
    BUNDLED,
    LoraSettings,
    ModelConfig,
    add_lora,
    bundled_path,
    byte_tokenizer,
    chat_prompt,
    load_adapter,
    load_model,
    package_dir,
)


def logits_of(model, text_ids):
    with torch.no_grad():
        return model(input_ids=text_ids).logits


def test_tiny_is_deterministic_and_configurable():
    a = load_model("tiny:layers=1,hidden=32,seed=3").model
    b = load_model("tiny:layers=1,hidden=32,seed=3").model
    c = load_model("tiny:layers=1,hidden=32,seed=4").model
    assert a.config.num_hidden_layers == 1 and a.config.hidden_size == 32
    ids = torch.tensor([[5, 6, 7]])
    assert torch.equal(logits_of(a, ids), logits_of(b, ids))
    assert not torch.equal(logits_of(a, ids), logits_of(c, ids))


def test_tiny_bad_option():
    with pytest.raises(SparringError, match="bad tiny model option 'depth=2'"):
        load_model("tiny:depth=2")


def test_local_directory_roundtrip(tmp_path, tiny):
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    again = load_model(str(tmp_path))
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(logits_of(tiny.model, ids), logits_of(again.model, ids))
    assert again.tokenizer.padding_side == "left"


def test_directory_with_pickle_only_is_refused(tmp_path, tiny):
    tiny.model.config.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    torch.save(tiny.model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(SparringError, match="safetensors"):
        load_model(str(tmp_path))


def test_missing_path():
    with pytest.raises(SparringError, match="'./no/such/model' does not exist"):
        load_model("./no/such/model")


def test_hub_id_without_network(monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SparringError, match="could not load 'sparring-tests/no-such-model' from the Hugging Face Hub"):
        load_model("sparring-tests/no-such-model")


def test_unknown_bundled_name():
    with pytest.raises(SparringError, match="unknown bundled model 'bundled:gpt-9'") as info:
        load_model("bundled:gpt-9")
    assert "bundled:smollm2-135m-instruct" in str(info.value)


def test_corrupt_gguf(tmp_path):
    garbage = tmp_path / "model.gguf"
    garbage.write_bytes(b"not a gguf at all" * 10)
    with pytest.raises(SparringError, match="is not a GGUF file"):
        load_model(str(garbage))
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 7)
    with pytest.raises(SparringError, match="could not read GGUF file"):
        load_model(str(truncated))
    with pytest.raises(SparringError, match="does not exist"):
        load_model(str(tmp_path / "absent.gguf"))


def test_bad_dtype_and_device():
    with pytest.raises(SparringError, match="fp16 is not supported on the CPU"):
        load_model(ModelConfig(spec="tiny", dtype="fp16", device="cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(SparringError, match="no CUDA GPU"):
            load_model(ModelConfig(spec="tiny", device="cuda"))
    bf16 = load_model(ModelConfig(spec="tiny", dtype="bf16", device="cpu"))
    assert next(bf16.model.parameters()).dtype == torch.bfloat16


def test_empty_spec_is_rejected():
    with pytest.raises(ValueError, match="model spec is empty"):
        ModelConfig(spec="  ")


def test_lora_reference_is_exact_base(tiny, tmp_path):
    ids = torch.tensor([[3, 9, 27, 81, 100]])
    base = logits_of(tiny.model, ids)
    model = add_lora(tiny.model, LoraSettings(rank=4, alpha=8))
    # A fresh adapter is the identity (B = 0); give it weights so it changes the output.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    assert not torch.allclose(logits_of(model, ids), base)
    with model.disable_adapter():
        assert torch.equal(logits_of(model, ids), base)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # Saved adapters reload as safetensors and reproduce the adapted model.
    model.save_pretrained(tmp_path)
    fresh = load_adapter(load_model("tiny").model, tmp_path)
    assert torch.allclose(logits_of(fresh, ids), logits_of(model, ids))


def test_lora_via_config_and_bad_targets():
    loaded = load_model(ModelConfig(spec="tiny", lora=LoraSettings(rank=2, target_modules=["q_proj", "v_proj"])))
    names = [n for n, p in loaded.model.named_parameters() if p.requires_grad]
    assert names and all(("q_proj" in n or "v_proj" in n) for n in names)
    with pytest.raises(SparringError, match="cannot add LoRA"):
        load_model(ModelConfig(spec="tiny", lora=LoraSettings(target_modules=["no_such_layer"])))


def test_load_adapter_rejects_non_adapter(tmp_path, tiny):
    with pytest.raises(SparringError, match="not a saved LoRA adapter"):
        load_adapter(tiny.model, tmp_path)


def test_chat_template_and_fallback():
    tok = byte_tokenizer()
    text = chat_prompt(tok, "hi", system="be brief")
    assert text == "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    tok.chat_template = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plain = chat_prompt(tok, "hi")
    assert plain == "User: hi\nAssistant:"
    assert any("no chat template" in str(w.message) for w in caught)


def test_bundled_converts_once_then_loads_from_cache(tmp_path, monkeypatch):
    """The real GGUF: converted on first use into the cache, read from the cache afterwards."""
    import sparring.models as models

    monkeypatch.setenv("SPARRING_CACHE", str(tmp_path))
    target = bundled_path("smollm2-135m-instruct")
    assert target == tmp_path / "models" / "smollm2-135m-instruct"
    assert (target / "model.safetensors").exists() and (target / "config.json").exists()
    assert [p.name for p in target.parent.iterdir()] == ["smollm2-135m-instruct"]  # no temp dirs left

    def no_conversion(*_):
        raise AssertionError("converted twice")

    monkeypatch.setattr(models, "_load_gguf", no_conversion)
    loaded = load_model("bundled:smollm2-135m-instruct")
    assert loaded.model.config.num_hidden_layers == 30
    assert loaded.tokenizer.chat_template


def test_gguf_file_spec_matches_bundled(smollm):
    """Loading the .gguf path directly gives the same weights as the bundled cache."""
    entry = BUNDLED["smollm2-135m-instruct"]
    gguf = package_dir(entry.package, entry.pip_name) / entry.filename
    direct = load_model(str(gguf))
    ids = smollm.tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    assert torch.allclose(logits_of(direct.model, ids), logits_of(smollm.model, ids), atol=1e-5)
