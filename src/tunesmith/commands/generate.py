"""Answer with a run's tuned model (or its base), through the same chat template and system prompt as
training. The run's model, base and system prompt come from `tunesmith.run`'s loader."""

from __future__ import annotations

from typing import Any

import torch

from ..data.render import encode_prompt, end_of_turn_ids
from ..settings import Sampling


def generate(model: Any, tokenizer: Any, messages: list[dict[str, str]],
             max_new_tokens: int = Sampling.max_new_tokens, temperature: float = Sampling.temperature,
             top_p: float = Sampling.top_p, sampling: Sampling | None = None) -> str:
    """The assistant's reply to `messages`; greedy unless temperature > 0. `sampling` (with its
    repetition settings) wins over the three plain arguments."""
    sampling = sampling or Sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
    prompt = torch.tensor([encode_prompt(messages, tokenizer)])
    with torch.no_grad():
        out = model.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=sampling.max_new_tokens,
            eos_token_id=sorted(end_of_turn_ids(tokenizer)),
            pad_token_id=tokenizer.pad_token_id,
            **sampling.generate_kwargs(),
        )
    return tokenizer.decode(out[0, prompt.shape[1]:], skip_special_tokens=True).strip()
