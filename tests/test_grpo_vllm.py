"""GRPO's samples through vLLM (`grpo.sampler: vllm`), on the CPU: a stand-in `vllm` package records
what train asks of it (the real one needs an NVIDIA GPU; docs/benchmarks.md's GPU checklist runs it).
Checked: vLLM is started once with LoRA enabled, each step hands it the policy's adapter as it is at
that step under a new id, every completion is its own request seeded as the batched decoder seeds it,
and what vLLM returns is what the step trains on."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from test_rft_train import grpo_config
from tunesmith import load_config, train
from tunesmith.config import ConfigError
from tunesmith.inference.sample import completion_seeds, vllm_wanted
from tunesmith.run import RunDir
from tunesmith.training.grpo import step_seed

FAKE_VLLM = '''
from pathlib import Path
from safetensors.torch import load_file

STARTED, CALLS = [], []
ANSWERS = [[10, 11]]
"""The completions it gives (token ids), picked by each request's seed."""


class SamplingParams:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


class _Completion:
    def __init__(self, ids):
        self.token_ids = ids


class _Output:
    def __init__(self, ids):
        self.outputs = [_Completion(ids)]


class LLM:
    def __init__(self, **kwargs):
        STARTED.append(kwargs)

    def generate(self, inputs, params, lora_request=None, use_tqdm=True):
        weights = load_file(str(Path(lora_request.lora_path) / "adapter_model.safetensors"))
        CALLS.append({"prompts": [i["prompt_token_ids"] for i in inputs], "params": params,
                      "lora": (lora_request.lora_name, lora_request.lora_int_id), "weights": weights,
                      "path": lora_request.lora_path})
        # an answer chosen by the request's seed, then its first stop token (and a token past it, cut)
        return [_Output(ANSWERS[p.seed % len(ANSWERS)] + [p.stop_token_ids[0], 11]) for p in params]
'''

FAKE_REQUEST = '''
class LoRARequest:
    def __init__(self, lora_name, lora_int_id, lora_path):
        self.lora_name, self.lora_int_id, self.lora_path = lora_name, lora_int_id, lora_path
'''


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch):
    root = tmp_path / "fake"
    (root / "vllm" / "lora").mkdir(parents=True)
    (root / "vllm" / "__init__.py").write_text(textwrap.dedent(FAKE_VLLM))
    (root / "vllm" / "lora" / "__init__.py").write_text("")
    (root / "vllm" / "lora" / "request.py").write_text(textwrap.dedent(FAKE_REQUEST))
    monkeypatch.syspath_prepend(str(root))
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        monkeypatch.delitem(sys.modules, name)
    import vllm

    yield vllm
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        del sys.modules[name]  # not through monkeypatch, whose undo would put the stand-in back


def test_grpo_samples_through_vllm_with_the_policy_of_each_step(tmp_path, tiny_model_dir, tiny_tokenizer, fake_vllm):
    answers = [tiny_tokenizer.encode(text, add_special_tokens=False) for text in ("permit", "no")]
    fake_vllm.ANSWERS = answers  # rewarded 1 and about 0: the groups differ, so the step moves the policy
    out = tmp_path / "run"
    config = load_config(None, {**grpo_config(tmp_path, tiny_model_dir), "output": str(out), "max_steps": 2,
                                "lr": 1e-2, "eval_every": 2,
                                "grpo": {"group_size": 4, "max_completion_tokens": 6, "sampler": "vllm"}})
    train(config, show_progress=False)
    assert len(fake_vllm.STARTED) == 1
    started = fake_vllm.STARTED[0]
    assert started["model"] == str(tiny_model_dir) and started["enable_lora"] and started["max_lora_rank"] == 16
    assert len(fake_vllm.CALLS) == 2  # the steps' samples; the held-out evaluations decode with transformers
    for step, call in enumerate(fake_vllm.CALLS, start=1):
        assert len(call["prompts"]) == 4 * 4  # 4 prompts a step, each answered 4 times, prompt-major
        assert all(call["prompts"][4 * i] == call["prompts"][4 * i + 3] for i in range(4))
        assert [p.seed for p in call["params"]] == completion_seeds(step_seed(config.seed, step), range(16))
        assert {(p.temperature, p.top_p, p.max_tokens, p.n) for p in call["params"]} == {(1.0, 1.0, 6, 1)}
        assert call["lora"] == (f"policy-{step}", step)  # a new id each step: vLLM caches adapters by id
    first, second = (c["weights"] for c in fake_vllm.CALLS)
    assert all(float(w.abs().max()) == 0.0 for k, w in first.items() if "lora_B" in k)  # the fresh adapter
    assert any(float((second[k] - first[k]).abs().max()) > 0 for k in first)  # the policy after step 1
    steps = [r for r in RunDir(out).metrics() if "loss" in r]
    for step, row in enumerate(steps, start=1):  # vLLM's completions, cut after the stop token, were trained
        lengths = [len(answers[s % 2]) + 1 for s in completion_seeds(step_seed(config.seed, step), range(16))]
        assert row["completion_tokens"] == pytest.approx(sum(lengths) / 16) and row["reward_std"] > 0
    assert not Path(fake_vllm.CALLS[0]["path"]).parent.exists()  # the adapters' folder goes when train ends


def test_the_sampler_setting_is_checked_and_auto_keeps_the_cpu_on_transformers(tiny_model_dir):
    with pytest.raises(ConfigError, match="'grpo.sampler' vllm takes the policy as a LoRA adapter, and method is dora"):
        load_config(None, {"data": "d.jsonl", "objective": "grpo", "grader": "g.json", "method": "dora",
                           "grpo": {"sampler": "vllm"}})
    with pytest.raises(ConfigError, match="'grpo.sampler' must be one of auto, transformers, vllm"):
        load_config(None, {"data": "d.jsonl", "objective": "grpo", "grader": "g.json", "grpo": {"sampler": "sglang"}})
    assert not vllm_wanted("auto", "lora")  # no CUDA here
    assert vllm_wanted("vllm", "lora") and not vllm_wanted("transformers", "lora")
