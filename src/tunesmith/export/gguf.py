"""GGUF export for llama-family models (f32, f16, q8_0) with an Ollama Modelfile beside it.

Follows llama.cpp's convert_hf_to_gguf.py (LlamaModel): q/k projections are permuted into its
rotary layout (transformers' GGUF loader un-permutes them), the byte-level BPE tokenizer goes in
as tokens + types + merges, and the chat template and stop/special ids go into the metadata.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..data.render import end_of_turn_ids
from ..errors import ExportError
from ..model.loading import load_gguf_model
from ..run import RunDir, write_atomic
from ..settings import GGUF_TYPES
from .ollama import modelfile
from .parity import logit_diff, merged_model, sample_inputs

# Largest ‖Δ logits‖ / ‖logits‖ accepted per type: f32 is exact up to float rounding; f16 keeps 11
# significant bits per weight; q8_0 8 bits with one scale per 32 weights. Measured on SmolLM2-135M
# + LoRA: f32 1.5e-6, f16 7.2e-4, q8_0 0.019; on the tiny random test model (ill-conditioned):
# f32 ~5e-6, f16 ~4e-3, q8_0 ~0.05.
GGUF_TOLERANCE = {"f32": 1e-5, "f16": 2e-2, "q8_0": 1e-1}
LLAMA_TYPES = ("llama", "mistral")
PRE_TOKENIZERS_FILE = Path(__file__).with_name("llama_cpp_pre_tokenizers.json")
# llama.cpp's probe text for telling BPE pre-tokenizers apart (conversion/base.py, `chktxt`): runs of
# whitespace, emoji, digits, scripts and contractions that pre-tokenizers split differently.
CHECK_TEXT = '\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български \'\'\'\'\'\'```````""""......!!!!!!?????? I\'ve been \'told he\'s there, \'RE you sure? \'M not sure I\'ll make it, \'D you like some tea? We\'Ve a\'lL'  # noqa: E501 (verbatim, as llama.cpp has it)


def permute_qk(weight: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's rotary layout for a q or k projection (out, in): rotate-half pairs interleaved.

    convert_hf_to_gguf.py LlamaModel.permute; `n_head` is the key/value head count for k.
    """
    return (weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def export_gguf(run: RunDir, out: Path, gguf_type: str, tolerance: float | None,
                log: Callable[[str], None]) -> tuple[float, float]:
    """Write model-TYPE.gguf and a Modelfile into `out`; verify the file against base + adapter."""
    if gguf_type not in GGUF_TYPES:
        raise ExportError(f"unknown GGUF type '{gguf_type}': choose one of {', '.join(GGUF_TYPES)}")
    merged, tuned, tokenizer = merged_model(run)
    model_type = merged.config.model_type
    if model_type not in LLAMA_TYPES:
        raise ExportError(f"GGUF export supports llama-family models ({', '.join(LLAMA_TYPES)}); this run's model "
                          f"is '{model_type}': export --format merged and convert it with llama.cpp's "
                          "convert_hf_to_gguf.py")
    name = f"model-{gguf_type}.gguf"
    write_gguf(merged, tokenizer, out / name, gguf_type, run.path.name)
    write_atomic(out / "Modelfile", modelfile(tokenizer, name))
    limit = GGUF_TOLERANCE[gguf_type] if tolerance is None else tolerance
    reloaded = load_gguf_model(out, name)
    diff, rel = logit_diff(tuned, reloaded, sample_inputs(tokenizer))
    log(f"GGUF {gguf_type} vs base + adapter: max |logit difference| {diff:.3g}, relative {rel:.3g} "
        f"(tolerance {limit:g} relative)")
    if not rel <= limit:
        raise ExportError(f"the GGUF file's logits differ from base + adapter by {rel:.3g} (relative) > {limit:g}; "
                          "nothing was written")
    return diff, rel


def write_gguf(model: Any, tokenizer: Any, path: Path, gguf_type: str, name: str) -> None:
    import gguf

    cfg = model.config
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_name(name)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(_rope_theta(cfg)))
    writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                          "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[gguf_type])
    _add_tokenizer(writer, tokenizer, cfg.vocab_size)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    state = model.state_dict()
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    for hf_name, tensor in state.items():
        if tied and hf_name == "lm_head.weight":
            continue  # tied: llama.cpp and transformers reuse token_embd
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ExportError(f"no GGUF name for tensor '{hf_name}': this architecture is not llama-like enough; "
                              "export --format merged and convert it with llama.cpp")
        data = tensor.detach().to(torch.float32).cpu().numpy()
        if hf_name.endswith("q_proj.weight"):
            data = permute_qk(data, n_head)
        elif hf_name.endswith("k_proj.weight"):
            data = permute_qk(data, n_kv)
        _add_tensor(writer, gguf, gguf_name, data, gguf_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _add_tensor(writer: Any, gguf: Any, name: str, data: np.ndarray, gguf_type: str) -> None:
    # Norms and other 1-D tensors stay f32, as llama.cpp keeps them.
    if gguf_type == "f32" or data.ndim == 1:
        writer.add_tensor(name, data.astype(np.float32))
    elif gguf_type == "q8_0" and data.shape[-1] % 32 == 0:
        qtype = gguf.GGMLQuantizationType.Q8_0
        writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    else:  # f16, and q8_0 rows that do not split into 32-wide blocks
        writer.add_tensor(name, data.astype(np.float16))


def _rope_theta(cfg: Any) -> float:
    params = getattr(cfg, "rope_parameters", None) or {}
    return params.get("rope_theta") or getattr(cfg, "rope_theta", None) or 10000.0


def _add_tokenizer(writer: Any, tokenizer: Any, vocab_size: int) -> None:
    import gguf

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec.get("model", {})
    if model.get("type") != "BPE" or "ByteLevel" not in json.dumps(spec.get("pre_tokenizer")):
        raise ExportError("GGUF export supports byte-level BPE tokenizers (GPT-2 style, as SmolLM and Llama 3 use); "
                          "export --format merged and convert it with llama.cpp")
    vocab = tokenizer.get_vocab()
    by_id = {i: t for t, i in vocab.items()}
    added = {t.content: t for t in tokenizer.added_tokens_decoder.values()}
    tokens, types = [], []
    for i in range(vocab_size):
        token = by_id.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(token)
            spec_token = added.get(token)
            if spec_token is None:
                types.append(gguf.TokenType.NORMAL)
            else:
                types.append(gguf.TokenType.CONTROL if spec_token.special else gguf.TokenType.USER_DEFINED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(tokenizer))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for setter, token_id in ((writer.add_bos_token_id, tokenizer.bos_token_id),
                             (writer.add_eos_token_id, tokenizer.eos_token_id),
                             (writer.add_pad_token_id, tokenizer.pad_token_id),
                             (writer.add_unk_token_id, tokenizer.unk_token_id)):
        if token_id is not None:
            setter(token_id)
    eot = sorted(end_of_turn_ids(tokenizer))
    if eot:
        writer.add_eot_token_id(tokenizer.eos_token_id if tokenizer.eos_token_id in eot else eot[0])
    # Chat-template models put their own markup first; a BOS added by llama.cpp would double it.
    writer.add_add_bos_token(False)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def pre_tokenizer_name(tokenizer: Any) -> str:
    """`tokenizer.ggml.pre`, decided as llama.cpp's converter decides it (conversion/base.py,
    get_vocab_base_pre): the SHA-256 of the ids `CHECK_TEXT` encodes to names the pre-tokenizer.
    llama.cpp refuses to load a file whose name it does not know, so an unknown tokenizer is
    refused here, before anything is written."""
    digest = hashlib.sha256(str(tokenizer.encode(CHECK_TEXT)).encode()).hexdigest()
    name = known_pre_tokenizers().get(digest)
    if name is None:
        raise ExportError(f"llama.cpp does not know this tokenizer's pre-tokenizer (check hash {digest[:16]}...), "
                          "so it would refuse the GGUF file: export --format merged and convert that folder with "
                          "llama.cpp's convert_hf_to_gguf.py once llama.cpp supports the tokenizer")
    return name


@functools.lru_cache(maxsize=1)
def known_pre_tokenizers() -> dict[str, str]:
    """Check hash -> pre-tokenizer name, copied from llama.cpp (see the file's `source`)."""
    return json.loads(PRE_TOKENIZERS_FILE.read_text(encoding="utf-8"))["pre_tokenizers"]
