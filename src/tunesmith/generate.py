"""Answer a prompt with a run's tuned model, through the same chat template as training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .data.render import encode_prompt, end_of_turn_ids
from .models import load_tokenizer, load_tuned
from .rundir import RunDir


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


def generate(model: Any, tokenizer: Any, messages: list[dict[str, str]], max_new_tokens: int = 256,
             temperature: float = 0.0, top_p: float = 1.0) -> str:
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
