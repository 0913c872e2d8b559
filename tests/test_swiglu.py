"""The SwiGLU MLP that saves only its inputs: same values and gradients, fewer saved tensors."""

import pytest
import torch

from tunesmith.model.loading import load_model
from tunesmith.model.swiglu import is_swiglu_mlp, silu_mul, use_fused_swiglu

pytestmark = pytest.mark.numerics  # compares kernels' figures: `make test-isa` runs it again


def test_silu_mul_matches_autograd_bit_for_bit():
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        gate, up = (torch.randn(37, 64, dtype=dtype, requires_grad=True) for _ in range(2))
        grad = torch.randn(37, 64, dtype=dtype)
        (torch.nn.functional.silu(gate) * up).backward(grad)
        expected = gate.grad.clone(), up.grad.clone()
        gate.grad = up.grad = None
        out = silu_mul(gate, up)
        out.backward(grad)
        assert torch.equal(out, torch.nn.functional.silu(gate) * up)
        assert torch.equal(gate.grad, expected[0]) and torch.equal(up.grad, expected[1])


def saved_bytes(fn):
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


def test_fused_mlp_gives_the_same_loss_and_gradients_and_saves_less(tiny_model_dir):
    ids = torch.randint(0, 100, (1, 24))
    results = []
    for fused in (False, True):
        model = load_model(str(tiny_model_dir)).train()
        mlps = [m for m in model.modules() if is_swiglu_mlp(m)]
        assert len(mlps) == model.config.num_hidden_layers
        if fused:
            assert use_fused_swiglu(model) == len(mlps)
        torch.manual_seed(0)
        x = torch.randn(1, 24, model.config.hidden_size, requires_grad=True)
        out, saved = saved_bytes(lambda: mlps[0](x))
        out.sum().backward()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        results.append((out.detach(), x.grad, saved, loss.detach(),
                        {n: p.grad for n, p in model.named_parameters()}))
    (out0, gx0, saved0, loss0, g0), (out1, gx1, saved1, loss1, g1) = results
    assert torch.equal(out1, out0) and torch.equal(gx1, gx0) and torch.equal(loss1, loss0)
    for name, grad in g0.items():
        torch.testing.assert_close(g1[name], grad, rtol=0, atol=0)
    intermediate = 24 * model.config.intermediate_size * 4
    assert saved0 - saved1 == intermediate  # silu(gate) is no longer kept


def test_other_mlps_are_left_alone():
    class GeluMLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gate_proj, self.up_proj, self.down_proj = (torch.nn.Linear(4, 4) for _ in range(3))
            self.act_fn = torch.nn.GELU()

    class WithDropout(GeluMLP):
        def __init__(self):
            super().__init__()
            self.act_fn, self.dropout = torch.nn.SiLU(), torch.nn.Dropout(0.1)

    assert not is_swiglu_mlp(GeluMLP()) and not is_swiglu_mlp(WithDropout())
    assert use_fused_swiglu(torch.nn.Sequential(GeluMLP(), WithDropout())) == 0
