"""The chunked LM head + cross-entropy gives the plain head's loss and gradients."""

import pytest
import torch
import torch.nn.functional as F

from tunesmith.config import LoraConfig
from tunesmith.data import Conversation, Message, encode_conversation
from tunesmith.model.head_loss import chunked_head, linear_cross_entropy
from tunesmith.model.loading import add_adapter, load_model
from tunesmith.training import batching
from tunesmith.training.batching import loss_sum, pack_examples

pytestmark = pytest.mark.numerics  # compares kernels' figures: `make test-isa` runs it again


def examples(tokenizer, answers):
    return [encode_conversation(Conversation((Message("user", f"Question {i}?"), Message("assistant", a)), f"t:{i}"),
                                tokenizer, 512)[0] for i, a in enumerate(answers)]


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_chunks_give_the_full_logits_loss_and_gradients(chunk):
    torch.manual_seed(0)
    hidden = torch.randn(50, 16, requires_grad=True)
    weight = torch.randn(300, 16, requires_grad=True)
    targets = torch.randint(0, 300, (50,))
    expected = F.cross_entropy(hidden @ weight.T, targets, reduction="sum")
    (expected * 0.25).backward()
    want = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    found = linear_cross_entropy(hidden, weight, targets, chunk=chunk)
    (found * 0.25).backward()
    torch.testing.assert_close(found, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hidden.grad, want[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weight.grad, want[1], rtol=1e-5, atol=1e-6)


def test_without_autograd_only_the_loss_is_computed():
    hidden, weight = torch.randn(10, 8, requires_grad=True), torch.randn(40, 8, requires_grad=True)
    targets = torch.randint(0, 40, (10,))
    with torch.no_grad():
        loss = linear_cross_entropy(hidden, weight, targets, chunk=3)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, F.cross_entropy(hidden @ weight.T, targets, reduction="sum"))


@pytest.mark.parametrize("method", ["full", "lora"])
def test_model_loss_and_gradients_match_the_plain_head(tiny_model_dir, tiny_tokenizer, monkeypatch, method):
    batch = pack_examples(examples(tiny_tokenizer, ["Yes.", "The quick brown fox jumps.", "Four to six weeks."]))
    device = torch.device("cpu")
    found = []
    for chunked in (True, False):
        torch.manual_seed(0)
        model = add_adapter(load_model(str(tiny_model_dir)), method, LoraConfig())
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.1)
        if chunked:
            assert chunked_head(model) is not None
            monkeypatch.setattr("tunesmith.model.head_loss.CHUNK_ROWS", 3)
        else:
            monkeypatch.setattr(batching, "chunked_head", lambda model: None)
        loss = loss_sum(model, batch, device)
        loss.backward()
        assert "forward" not in vars(model.get_output_embeddings())  # the head is a plain Linear again
        found.append((loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
        monkeypatch.undo()
    (loss_c, grads_c), (loss_p, grads_p) = found
    torch.testing.assert_close(loss_c, loss_p, rtol=1e-5, atol=1e-5)
    assert grads_c.keys() == grads_p.keys() and grads_c
    if method == "full":
        assert any("embed_tokens" in n for n in grads_c)  # the tied head's weight trains through the chunks
    for name in grads_p:
        torch.testing.assert_close(grads_c[name], grads_p[name], rtol=1e-4, atol=1e-6)


def test_bf16_autocast_matches_the_plain_head_within_bf16_rounding(tiny_model_dir, tiny_tokenizer, monkeypatch):
    batch = pack_examples(examples(tiny_tokenizer, ["Yes.", "The quick brown fox jumps."]))
    model = load_model(str(tiny_model_dir)).eval()
    device = torch.device("cpu")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        chunked = loss_sum(model, batch, device)
        monkeypatch.setattr(batching, "chunked_head", lambda model: None)
        plain = loss_sum(model, batch, device)
    torch.testing.assert_close(chunked, plain, rtol=1e-3, atol=1e-3)


def test_models_that_post_process_logits_keep_the_plain_head(tiny_model_dir):
    model = load_model(str(tiny_model_dir))
    assert chunked_head(model) is model.lm_head
    model.config.final_logit_softcapping = 30.0  # Gemma's soft-capping rewrites the logits after the head
    assert chunked_head(model) is None
