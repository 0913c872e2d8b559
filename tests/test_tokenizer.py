"""Loading a tokenizer: the fast path that skips the model's config gives AutoTokenizer's tokenizer,
and does not import torch (so `data check` starts in about a second)."""

from __future__ import annotations

import subprocess
import sys

from tunesmith.model.tokenizer import load_tokenizer


def test_fast_path_tokenizes_as_autotokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    ours, auto = load_tokenizer(str(tiny_model_dir)), AutoTokenizer.from_pretrained(tiny_model_dir)
    text = "What is a building permit? <|im_end|> 0123"
    assert ours.encode(text) == auto.encode(text)
    messages = [{"role": "user", "content": "hi"}]
    assert ours.apply_chat_template(messages, tokenize=False) == auto.apply_chat_template(messages, tokenize=False)
    assert (ours.eos_token_id, ours.pad_token_id, len(ours)) == (auto.eos_token_id, auto.pad_token_id, len(auto))


def test_loading_a_tokenizer_does_not_import_torch(tiny_model_dir):
    code = ("import sys; from tunesmith.model.tokenizer import load_tokenizer; "
            f"load_tokenizer({str(tiny_model_dir)!r}); "
            "print(sorted(m for m in ('torch', 'transformers.modeling_utils') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
