"""A terminal chat with a run's tuned model: streamed answers, the run's own chat template.

`chat_loop` takes its input and output as functions, so scripts and tests drive it like a user.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

from .data.render import encode_prompt
from .inference.streaming import ReplyStream, Sampling

HELP = "commands: /reset (forget the conversation), /system TEXT (set the system prompt), /exit"


@dataclass(frozen=True)
class ChatSession:
    """The conversation so far; None as system prompt means the chat template's own default."""

    system: str | None = None
    turns: tuple[dict[str, str], ...] = ()

    def messages(self, user_text: str) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + list(self.turns) + [{"role": "user", "content": user_text}]


Augment = Callable[[list[dict[str, str]]], list[dict[str, str]]]
"""Rewrites a conversation before it is encoded (retrieval puts passages into the last user turn)."""


def chat_loop(model: Any, tokenizer: Any, sampling: Sampling, read: Callable[[str], str],
              write: Callable[[str], None], system: str | None = None, augment: Augment | None = None) -> ChatSession:
    """Read lines until /exit or end of input; stream each answer through `write`; return the session.

    `read(prompt)` returns one line and raises EOFError at the end (like `input`); `write(text)`
    prints text without adding a newline. `augment` changes only the prompt: the session keeps
    the user's own words, so retrieved passages of earlier turns do not pile up.
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
        if not text:
            continue
        if text == "/exit":
            return session
        if text == "/reset":
            session = ChatSession(system=session.system)
            write("(conversation cleared)\n")
            continue
        if text == "/system" or text.startswith("/system "):
            new_system = text[len("/system"):].strip() or None
            session = ChatSession(system=new_system)
            write(f"(system prompt {'set' if new_system else 'back to the template default'}; conversation cleared)\n")
            continue
        if text.startswith("/"):
            write(f"unknown command {text.split()[0]}; {HELP}\n")
            continue
        messages = session.messages(text)
        prompt = encode_prompt(augment(messages) if augment else messages, tokenizer)
        stream = ReplyStream(model, tokenizer, prompt, sampling)
        write("bot> ")
        pieces, said = iter(stream), []
        try:
            for piece in pieces:
                said.append(piece)
                write(piece)
        except KeyboardInterrupt:  # Ctrl-C stops this answer, not the chat
            write(" [stopped]")
        finally:
            pieces.close()  # stops generation if the answer was cut short
        write("\n")
        answer = "".join(said).strip()
        session = replace(session, turns=session.turns + (messages[-1], {"role": "assistant", "content": answer}))
