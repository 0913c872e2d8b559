"""The parity check of an export: the exported model's logits against base + adapter on sample prompts."""

from __future__ import annotations

import copy
from typing import Any

import torch

from ..data.render import encode_prompt, encode_text
from ..errors import ExportError
from ..model.loading import merge_adapter
from ..run import RunDir, load_run

# Prompts the parity checks run through both models: chat-rendered, so the template's control
# tokens are in them, plus one long plain text.
SAMPLE_MESSAGES = (
    [{"role": "user", "content": "What is a building permit?"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "How long does it take?"}],
)
SAMPLE_TEXT = "The quick brown fox jumps over the lazy dog. 0123456789 " * 4


def merged_model(run: RunDir) -> tuple[Any, Any, Any]:
    """(merged model, base + adapter model, tokenizer); for a full fine-tune both are the same model."""
    tuned, tokenizer = load_run(run.path)
    if run.config().method == "full":
        return tuned, tuned, tokenizer
    merged = merge_adapter(copy.deepcopy(tuned))  # a copy: the adapter model stays the reference
    bad = [name for name, p in merged.state_dict().items() if not torch.isfinite(p).all()]
    if bad:
        raise ExportError(f"the merged weights are not finite in {bad[:3]}: the adapter is broken; nothing was written")
    return merged.eval(), tuned, tokenizer


def sample_inputs(tokenizer: Any) -> list[torch.Tensor]:
    """Token ids (1, T) of the parity prompts."""
    prompts = [encode_prompt(m, tokenizer) for m in SAMPLE_MESSAGES]
    prompts.append(encode_text(tokenizer, SAMPLE_TEXT))
    return [torch.tensor([p]) for p in prompts]


def logit_diff(reference: Any, candidate: Any, inputs: list[torch.Tensor]) -> tuple[float, float]:
    """(max |Δ logit|, ‖Δ‖ / ‖reference‖) over all sample inputs."""
    worst, _, rel = compare_logits(reference, candidate, inputs)
    return worst, rel


def compare_logits(reference: Any, candidate: Any, inputs: list[torch.Tensor]) -> tuple[float, float, float]:
    """(max |Δ|, max |Δ| / (1 + |reference|) elementwise, ‖Δ‖ / ‖reference‖) of the logits."""
    worst, scaled, err_sq, ref_sq = 0.0, 0.0, 0.0, 0.0
    with torch.no_grad():
        for ids in inputs:
            ref = reference(input_ids=ids).logits.float()  # (1, T, vocab)
            delta = (candidate(input_ids=ids).logits.float() - ref).abs()
            worst = max(worst, float(delta.max()))
            scaled = max(scaled, float((delta / (1 + ref.abs())).max()))
            err_sq += float(delta.pow(2).sum())
            ref_sq += float(ref.pow(2).sum())
    return worst, scaled, (err_sq / max(ref_sq, 1e-24)) ** 0.5
