"""Streamed generation for chat and serve: text pieces as they come, then exact usage and why it stopped.

`generate.generate` answers in one piece; this is the same generation (same prompt ids, same
end-of-turn stop set, greedy unless temperature > 0) run in a thread behind transformers'
`TextIteratorStreamer`, with stop strings and cancellation that `generate` does not need.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from ..data.render import end_of_turn_ids
from ..settings import Sampling  # its home is settings.py; importable from here with the stream it drives


@dataclass(frozen=True)
class Completion:
    """What one finished generation produced."""

    text: str
    """Exactly the streamed pieces joined (not stripped)."""
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    """'stop' (end-of-turn token or stop string), 'length' (max_new_tokens) or 'cancelled'."""


class _Cancelled:
    """A stopping criterion that ends generation once `event` is set (client gone, shutdown)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class ReplyStream:
    """Iterate for text pieces; afterwards `completion` holds the whole answer and its usage.

    Generation starts on the first iteration, in its own thread; `cancel()` ends it early.
    """

    def __init__(self, model: Any, tokenizer: Any, prompt_ids: Sequence[int], sampling: Sampling) -> None:
        self.model, self.tokenizer, self.sampling = model, tokenizer, sampling
        self.prompt_ids = list(prompt_ids)
        self.completion: Completion | None = None
        self._cancel = threading.Event()
        self._output: list[torch.Tensor] = []
        self._error: list[BaseException] = []

    def cancel(self) -> None:
        self._cancel.set()

    def __iter__(self) -> Iterator[str]:
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        s = self.sampling
        prompt = torch.tensor([self.prompt_ids], device=self.model.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        if s.seed is not None:
            torch.manual_seed(s.seed)
        kwargs = dict(
            input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=s.max_new_tokens,
            eos_token_id=sorted(end_of_turn_ids(self.tokenizer)), pad_token_id=self.tokenizer.pad_token_id,
            streamer=streamer, stopping_criteria=StoppingCriteriaList([_Cancelled(self._cancel)]),
            **s.generate_kwargs(),
        )
        thread = threading.Thread(target=self._run, args=(kwargs, streamer), daemon=True)
        thread.start()
        cutter, raw = StopCutter(s.stop), ""
        exhausted = False
        try:
            for piece in streamer:
                raw += piece
                shown = cutter.feed(raw)
                if shown:
                    yield shown
                if cutter.stopped:
                    self._cancel.set()
                    break
            else:
                exhausted = True
            rest = cutter.flush()
            if rest:
                yield rest
        finally:
            if not exhausted:
                self._cancel.set()  # stop string, or the consumer left early: stop generating
                for _ in streamer:  # drain so the generation thread can finish
                    pass
            thread.join()
        if self._error:
            raise self._error[0]
        self.completion = self._finish(cutter.text, cutter.stopped)

    def _run(self, kwargs: dict[str, Any], streamer: Any) -> None:
        try:
            with torch.no_grad():
                self._output.append(self.model.generate(**kwargs))
        except BaseException as exc:  # surfaced in the consumer's thread
            self._error.append(exc)
            streamer.end()

    def _finish(self, text: str, stopped_by_string: bool) -> Completion:
        new = self._output[0][0, len(self.prompt_ids):].tolist() if self._output else []
        eot = end_of_turn_ids(self.tokenizer)
        if stopped_by_string or (new and new[-1] in eot):
            reason = "stop"
        elif self._cancel.is_set():
            reason = "cancelled"
        else:
            reason = "length"
        return Completion(text, len(self.prompt_ids), len(new), reason)


def complete(model: Any, tokenizer: Any, prompt_ids: Sequence[int], sampling: Sampling) -> Completion:
    """The whole answer at once (the stream, drained)."""
    stream = ReplyStream(model, tokenizer, prompt_ids, sampling)
    for _ in stream:
        pass
    assert stream.completion is not None
    return stream.completion


class StopCutter:
    """An answer's text as it grows, cut at its first stop string: `feed` hands out only what is
    safe to show, holding back a tail that could still grow into a stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self.text = ""
        """The answer so far, cut at a stop string once one appeared."""
        self.stopped = False
        """A stop string appeared: the answer is complete."""
        self._sent = 0

    def feed(self, text: str) -> str:
        """`text` is the whole answer so far; returns its newly showable part (may be empty)."""
        cut = _first_stop(text, self.stops)
        if cut is not None:
            text, self.stopped = text[:cut], True
        self.text = text
        safe = len(text) if self.stopped else max(self._sent, len(text) - _longest(self.stops) + 1)
        piece = text[self._sent:safe]
        self._sent = max(self._sent, safe)
        return piece

    def flush(self) -> str:
        """The held-back tail, once the answer has ended."""
        piece = self.text[self._sent:]
        self._sent = len(self.text)
        return piece


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None


def _longest(stops: Sequence[str]) -> int:
    return max((len(s) for s in stops), default=1)
