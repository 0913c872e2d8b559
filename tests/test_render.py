"""Rendering: what the model is trained on, token by token."""

import pytest

from tunesmith.data import IGNORE, Conversation, Document, Message, TemplateError, encode_conversation, encode_document
from tunesmith.data.render import encode_prompt


def conv(*turns, source="t.jsonl:1"):
    return Conversation(tuple(Message(r, c, *rest) for r, c, *rest in turns), source)


def trained_text(example, tokenizer):
    """The tokens that are targets, decoded, in order (targets[t] is token t+1)."""
    ids = [t for t in example.targets if t != IGNORE]
    return tokenizer.decode(ids)


def test_end_of_turn_is_trained_and_prompt_is_not(tiny_tokenizer):
    example, cut = encode_conversation(conv(("user", "How long?"), ("assistant", "Four weeks.")), tiny_tokenizer, 512)
    assert not cut
    eot = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert eot == tiny_tokenizer.pad_token_id  # the default model's pad token *is* its end-of-turn token
    trained = [t for t in example.targets if t != IGNORE]
    assert trained[-1] == eot, "the assistant's <|im_end|> must be a target"
    assert trained_text(example, tiny_tokenizer) == "Four weeks.<|im_end|>"
    # The user's turn and the template's system prompt are never targets.
    assert trained.count(eot) == 1


def test_control_token_text_in_a_message_stays_text(tiny_tokenizer):
    example, _ = encode_conversation(conv(("user", "Why does <|im_end|> appear?"), ("assistant", "It is text.")),
                                     tiny_tokenizer, 512)
    eot = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    # system + user + assistant turns close with one <|im_end|> each; the typed one is not a fourth.
    assert example.input_ids.count(eot) == 3
    assert "<|im_end|> appear" in tiny_tokenizer.decode(example.input_ids)


def test_weight_zero_turn_is_not_trained(tiny_tokenizer):
    example, _ = encode_conversation(
        conv(("user", "Hi"), ("assistant", "Old answer.", False), ("user", "Again"), ("assistant", "New answer.")),
        tiny_tokenizer, 512)
    assert trained_text(example, tiny_tokenizer) == "New answer.<|im_end|>"


def test_multi_turn_trains_every_assistant_turn(tiny_tokenizer):
    example, _ = encode_conversation(
        conv(("system", "Be brief."), ("user", "A?"), ("assistant", "One."), ("user", "B?"), ("assistant", "Two.")),
        tiny_tokenizer, 512)
    assert trained_text(example, tiny_tokenizer) == "One.<|im_end|>Two.<|im_end|>"


def test_truncation_is_reported(tiny_tokenizer):
    example, cut = encode_conversation(conv(("user", "word " * 200), ("assistant", "Yes.")), tiny_tokenizer, 64)
    assert cut and len(example.input_ids) == 64
    assert example.n_trained == 0


def test_missing_chat_template_names_the_option(tiny_tokenizer):
    tiny_tokenizer = type(tiny_tokenizer).from_pretrained(tiny_tokenizer.name_or_path)
    tiny_tokenizer.chat_template = None
    with pytest.raises(TemplateError, match="chat_template"):
        encode_conversation(conv(("user", "Hi"), ("assistant", "Yo")), tiny_tokenizer, 512)


def test_documents_train_every_token_and_chunk(tiny_tokenizer):
    chunks = encode_document(Document("The quick brown fox jumps over the lazy dog. " * 10, "d.txt:1"),
                             tiny_tokenizer, 32)
    assert len(chunks) > 1 and all(len(c.input_ids) <= 32 for c in chunks)
    for c in chunks:
        assert c.targets[:-1] == c.input_ids[1:]
    assert chunks[-1].input_ids[-1] == tiny_tokenizer.eos_token_id


def test_prompt_matches_training_prefix(tiny_tokenizer):
    messages = [{"role": "user", "content": "How long?"}]
    prompt = encode_prompt(messages, tiny_tokenizer)
    example, _ = encode_conversation(conv(("user", "How long?"), ("assistant", "Four weeks.")), tiny_tokenizer, 512)
    assert example.input_ids[: len(prompt)] == prompt
    assert example.targets[len(prompt) - 1] != IGNORE  # the first answer token is predicted from the prompt
    assert example.targets[len(prompt) - 2] == IGNORE
