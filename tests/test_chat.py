"""`tunesmith chat` through its function layer: scripted input lines, captured streamed output."""

from __future__ import annotations

import pytest

from tunesmith.commands.chat import ChatSession, chat_loop
from tunesmith.commands.generate import generate
from tunesmith.data.render import encode_prompt
from tunesmith.inference.streaming import ReplyStream, Sampling, complete
from tunesmith.run import load_run


@pytest.fixture(scope="module")
def tuned(tiny_run):
    return load_run(tiny_run)


def script(lines: list[str]):
    """A `read` that answers the given lines, then raises EOFError like `input` at end of input."""
    queue = list(lines)

    def read(prompt: str) -> str:
        if not queue:
            raise EOFError
        return queue.pop(0)

    return read


def run_chat(tuned, lines: list[str], system: str | None = None, sampling: Sampling = Sampling(max_new_tokens=8)):
    model, tokenizer = tuned
    out: list[str] = []
    session = chat_loop(model, tokenizer, sampling, script(lines), out.append, system)
    return session, out


def test_answers_stream_and_match_generate(tuned):
    model, tokenizer = tuned
    session, out = run_chat(tuned, ["What is a building permit?", "/exit", "never read"])
    expected = generate(model, tokenizer, [{"role": "user", "content": "What is a building permit?"}], max_new_tokens=8)
    assert session.turns == ({"role": "user", "content": "What is a building permit?"},
                             {"role": "assistant", "content": expected})
    text = "".join(out)
    assert "bot> " in text and expected in text
    answer_pieces = out[out.index("bot> ") + 1: out.index("\n", out.index("bot> "))]
    assert "".join(answer_pieces).strip() == expected


def test_second_turn_sees_the_first(tuned):
    model, tokenizer = tuned
    session, out = run_chat(tuned, ["Hello", "How long does a permit take?"])
    assert [m["role"] for m in session.turns] == ["user", "assistant", "user", "assistant"]
    history = list(session.turns[:3])
    assert session.turns[3]["content"] == generate(model, tokenizer, history, max_new_tokens=8)


def test_reset_and_system_commands(tuned):
    session, out = run_chat(tuned, ["Hello", "/reset"])
    assert session.turns == () and "(conversation cleared)\n" in out
    session, out = run_chat(tuned, ["Hello", "/system Answer in one word.", "Hi"])
    assert session.system == "Answer in one word."
    assert [m["content"] for m in session.turns if m["role"] == "user"] == ["Hi"]
    session, _ = run_chat(tuned, ["/system"], system="old")
    assert session.system is None  # back to the template's own default
    _, out = run_chat(tuned, ["/nonsense"])
    assert any("unknown command /nonsense" in line for line in out)


def test_system_prompt_reaches_the_prompt(tuned):
    _, tokenizer = tuned
    with_system = ChatSession(system="Be brief.").messages("Hi")
    assert with_system[0] == {"role": "system", "content": "Be brief."}
    default = ChatSession().messages("Hi")
    # Without one, the run's template adds its own default system prompt, as in training.
    assert "You are a helpful assistant." in tokenizer.decode(encode_prompt(default, tokenizer))


def test_sampling_flags_are_used(tuned):
    model, tokenizer = tuned
    prompt = encode_prompt([{"role": "user", "content": "Hi"}], tokenizer)
    one = complete(model, tokenizer, prompt, Sampling(max_new_tokens=1))
    assert one.completion_tokens == 1 and one.finish_reason in ("length", "stop")
    hot = [complete(model, tokenizer, prompt, Sampling(max_new_tokens=6, temperature=1.5, seed=s)).text
           for s in range(4)]
    assert hot[0] == complete(model, tokenizer, prompt, Sampling(max_new_tokens=6, temperature=1.5, seed=0)).text
    assert len(set(hot)) > 1  # sampling with different seeds differs on this random model


def test_leaving_a_stream_early_stops_generation(tuned):
    model, tokenizer = tuned
    prompt = encode_prompt([{"role": "user", "content": "Hi"}], tokenizer)
    stream = ReplyStream(model, tokenizer, prompt, Sampling(max_new_tokens=40))
    pieces = iter(stream)
    next(pieces)
    pieces.close()  # returns only once the generation thread has ended
    assert stream.completion is None


def test_base_and_tuned_answer_the_same_conversation(tuned):
    from tunesmith.model.base import base_view

    model, tokenizer = tuned
    question = [{"role": "user", "content": "What is a building permit?"}]
    with model.disable_adapter():
        base_answer = generate(model, tokenizer, question, max_new_tokens=8)
    tuned_answer = generate(model, tokenizer, question, max_new_tokens=8)
    assert base_answer != tuned_answer  # the tiny run's adapter is not the identity (conftest)
    out: list[str] = []
    session = chat_loop(model, tokenizer, Sampling(max_new_tokens=8), script(
        ["/base", "What is a building permit?", "/tuned", "What is a building permit?"]), out.append,
        base=base_view(model))
    # The tuned model answers the second question with the base model's first answer in its history.
    followed = generate(model, tokenizer, question + [{"role": "assistant", "content": base_answer}] + question,
                        max_new_tokens=8)
    assert [t["content"] for t in session.turns if t["role"] == "assistant"] == [base_answer, followed]
    assert "base> " in "".join(out) and f"bot> {followed}" in "".join(out)
    assert session.model == "tuned" and any(p.requires_grad for p in model.parameters())  # adapters back on


def test_base_without_a_base_view_says_so(tuned):
    session, out = run_chat(tuned, ["/base"])
    assert session.model == "tuned" and "no base model here" in "".join(out)
