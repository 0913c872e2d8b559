"""Answer with a run's tuned model (or its base), through the same chat template and system prompt as
training."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ContextManager

import torch

from ..config import TrainConfig
from ..data import data_options
from ..data.render import encode_prompt, end_of_turn_ids
from ..forgetting.measure import base_view
from ..model.loading import load_base_copy, load_tuned
from ..model.tokenizer import load_tokenizer
from ..settings import Sampling
from ..run import RunDir


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


def run_system_prompt(run_path: str | Path) -> str | None:
    """The system prompt the run trained with (its config's `system_prompt`, a file read), or None."""
    return data_options(RunDir.open(run_path).config())["system_prompt"]


def base_of(model: Any, config: TrainConfig) -> Callable[[], ContextManager[Any]]:
    """Enters the run's base model: the tuned model with its adapters disabled, or, for full
    fine-tuning, a frozen copy of the base loaded on first use (it costs a second model's memory)."""
    copy: list[Any] = []

    def enter() -> ContextManager[Any]:
        if config.method == "full" and not copy:
            copy.append(load_base_copy(config))
        return base_view(model, copy[0] if copy else None)()

    return enter


def base_model_id(config: TrainConfig, tuned_id: str) -> str:
    """The base model's own name beside a tuned one: its hub id or folder name (-base if they clash)."""
    path = Path(config.model).expanduser()
    name = path.name if path.is_dir() else config.model
    return name if name != tuned_id else f"{name}-base"


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
