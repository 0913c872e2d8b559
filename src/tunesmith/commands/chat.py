"""A terminal chat with a run's tuned model: streamed answers, the run's own chat template.

`chat_loop` takes its input and output as functions, so scripts and tests drive it like a user.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Any, Callable, ContextManager

from ..data.render import encode_prompt
from ..inference.streaming import ReplyStream, Sampling

HELP = ("commands: /reset (forget the conversation), /system TEXT (set the system prompt), "
        "/base and /tuned (which model answers), /exit")


@dataclass(frozen=True)
class ChatSession:
    """The conversation so far; None as system prompt means the chat template's own default."""

    system: str | None = None
    turns: tuple[dict[str, str], ...] = ()
    model: str = "tuned"
    """Which model answers: 'tuned' or 'base' (the same model with its adapters disabled)."""

    def messages(self, user_text: str) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + list(self.turns) + [{"role": "user", "content": user_text}]


Augment = Callable[[list[dict[str, str]]], list[dict[str, str]]]
"""Rewrites a conversation before it is encoded (retrieval puts passages into the last user turn)."""
BaseView = Callable[[], ContextManager[Any]]
"""Enters the base model (model.base.base_view): adapters disabled, or a frozen copy."""


def apply_command(text: str, session: ChatSession, has_base: bool) -> tuple[ChatSession | None, str]:
    """A /command's new session (None: leave the chat) and what to tell the user."""
    if text == "/exit":
        return None, ""
    if text == "/reset":
        return replace(session, turns=()), "(conversation cleared)"
    if text == "/system" or text.startswith("/system "):
        new_system = text[len("/system"):].strip() or None
        return (ChatSession(system=new_system, model=session.model),
                f"(system prompt {'set' if new_system else 'back to the template default'}; conversation cleared)")
    if text in ("/base", "/tuned"):
        if text == "/base" and not has_base:
            return session, "(no base model here: this chat has only the tuned model)"
        return replace(session, model=text[1:]), f"(the {text[1:]} model answers now; the conversation goes on)"
    return session, f"unknown command {text.split()[0]}; {HELP}"


def chat_loop(model: Any, tokenizer: Any, sampling: Sampling, read: Callable[[str], str],
              write: Callable[[str], None], system: str | None = None, augment: Augment | None = None,
              base: BaseView | None = None, engine: Any = None,
              cite: Callable[[str], str] | None = None) -> ChatSession:
    """Read lines until /exit or end of input; stream each answer through `write`; return the session.

    `read(prompt)` returns one line and raises EOFError at the end (like `input`); `write(text)`
    prints text without adding a newline. `augment` changes only the prompt: the session keeps
    the user's own words, so retrieved passages of earlier turns do not pile up. With `base`,
    /base and /tuned switch which model answers, on the same conversation. With `engine` (an
    `EngineDecoder`, `--engine`), it answers for the tuned model. With `cite`, the line it makes of an
    answer (the sources of the passages it cites, for a run trained with `retrieval.cite`) follows it.
    """
    session = ChatSession(system=system)
    write(HELP + "\n")
    while True:
        try:
            line = read("you> ")
        except (EOFError, KeyboardInterrupt):
            write("\n")
            return session
        text = line.strip()
        if text.startswith("/"):
            new, message = apply_command(text, session, base is not None)
            if new is None:
                return session
            session = new
            write(message + "\n")
        elif text:
            messages = session.messages(text)
            prompt = encode_prompt(augment(messages) if augment else messages, tokenizer)
            label = f"{_LABELS[session.model]}> "
            if engine is not None and session.model == "tuned":
                answer = engine_answer(engine, prompt, sampling, write, label)
            else:
                with base() if session.model == "base" else contextlib.nullcontext(model) as answering:
                    answer = stream_answer(answering, tokenizer, prompt, sampling, write, label)
            session = replace(session, turns=session.turns + (messages[-1], {"role": "assistant", "content": answer}))
            if cite is not None and cite(answer):
                write(cite(answer) + "\n")


_LABELS = {"tuned": "bot", "base": "base"}


def stream_answer(model: Any, tokenizer: Any, prompt: list[int], sampling: Sampling, write: Callable[[str], None],
                  label: str = "bot> ") -> str:
    """Stream one answer through `write`; Ctrl-C stops this answer, not the chat. Returns the text."""
    stream = ReplyStream(model, tokenizer, prompt, sampling)
    write(label)
    pieces, said = iter(stream), []
    try:
        for piece in pieces:
            said.append(piece)
            write(piece)
    except KeyboardInterrupt:
        write(" [stopped]")
    finally:
        pieces.close()  # stops generation if the answer was cut short
    write("\n")
    return "".join(said).strip()


def engine_decoder(engine: str, run: str, tokenizer: Any) -> Any:
    """An `EngineDecoder` over `--engine` for RUN, or None for transformers (the chat's own model)."""
    from ..data.render import end_of_turn_ids
    from ..inference.batching import EngineDecoder
    from ..inference.engines import DEFAULT_ENGINE, open_engine

    if engine == DEFAULT_ENGINE:
        return None
    return EngineDecoder(tokenizer, open_engine(engine, run, sorted(end_of_turn_ids(tokenizer))))


def engine_answer(decoder: Any, prompt: list[int], sampling: Sampling, write: Callable[[str], None],
                  label: str = "bot> ") -> str:
    """`stream_answer` through an engine: the pieces written as they come; Ctrl-C stops this answer."""
    from ..inference.batching import DecodeJob

    said: list[str] = []

    def emit(item: Any) -> None:
        if isinstance(item, str):
            said.append(item)
            write(item)

    write(label)
    try:
        decoder.run(DecodeJob("tuned", prompt, sampling, emit))
    except KeyboardInterrupt:
        write(" [stopped]")
    write("\n")
    return "".join(said).strip()
