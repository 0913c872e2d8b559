"""Answer a prompt with a run's tuned model, through the same chat template as training."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from .config import GENERATION_BATCH, Sampling
from .data.render import encode_prompt, end_of_turn_ids
from .model.loading import load_tuned
from .model.tokenizer import load_tokenizer
from .training.rundir import RunDir


def load_run(run_path: str | Path) -> tuple[Any, Any]:
    """(model, tokenizer) of a finished run, in eval mode."""
    run = RunDir.open(run_path)
    config = run.config()
    saved = run.path / ("model" if config.method == "full" else "adapter")
    if not saved.exists():
        raise FileNotFoundError(f"run '{run.path}' has no {saved.name}/: it did not finish; train it again")
    tokenizer = load_tokenizer(str(saved), config.chat_template, config.trust_remote_code)
    model = load_tuned(run.path, config.model, config.method, trust_remote_code=config.trust_remote_code)
    return model.eval(), tokenizer


def generate(model: Any, tokenizer: Any, messages: list[dict[str, str]],
             max_new_tokens: int = Sampling.max_new_tokens, temperature: float = Sampling.temperature,
             top_p: float = Sampling.top_p) -> str:
    """The assistant's reply to `messages`; greedy unless temperature > 0."""
    prompt = torch.tensor([encode_prompt(messages, tokenizer)])
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
    with torch.no_grad():
        out = model.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=max_new_tokens,
            eos_token_id=sorted(end_of_turn_ids(tokenizer)),
            pad_token_id=tokenizer.pad_token_id,
            **sampling,
        )
    return tokenizer.decode(out[0, prompt.shape[1]:], skip_special_tokens=True).strip()


@torch.no_grad()
def generate_batch(model: Any, prompts: Sequence[list[int]], max_new_tokens: int, eos_ids: Sequence[int],
                   pad_id: int, batch_size: int = GENERATION_BATCH) -> list[list[int]]:
    """Greedy continuations of token-id prompts, decoded in left-padded batches of similar length;
    each stops after its first token of `eos_ids` (kept). Same answers as one prompt at a time,
    up to float rounding."""
    device = next(model.parameters()).device
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)  # as generate_greedy: on shared cores 2 threads decoded 3-7x slower
    try:
        return _generate_batches(model, prompts, max_new_tokens, eos_ids, pad_id, batch_size, device)
    finally:
        torch.set_num_threads(threads)


def _generate_batches(model: Any, prompts: Sequence[list[int]], max_new_tokens: int, eos_ids: Sequence[int],
                      pad_id: int, batch_size: int, device: torch.device) -> list[list[int]]:
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths pad little
    outputs: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), batch_size):
        group = order[start : start + batch_size]
        width = max(len(prompts[i]) for i in group)
        ids = torch.full((len(group), width), pad_id, dtype=torch.long)  # (B, T), padded on the left
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for row, i in enumerate(group):
            ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]):] = 1
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                             max_new_tokens=max_new_tokens, eos_token_id=list(eos_ids), pad_token_id=pad_id)
        for row, i in enumerate(group):
            new = out[row, width:].tolist()  # (max_new,) padded with pad_id after EOS
            cut = next((k + 1 for k, t in enumerate(new) if t in eos_ids), len(new))
            outputs[i] = new[:cut]
    return outputs
