"""Eval's faster paths give the numbers the slow ones gave: batched decoding = one prompt at a time,
the merged adapter is restored exactly, and eval.json's figures are those of the one-at-a-time code
(computed in the test, in fp32), with or without the base side's cache."""

import contextlib
import functools
import time

import pytest

from tunesmith import load_config, train
from tunesmith.commands import evaluate as evaluate_module
from tunesmith.commands.evaluate import TASK_SIZES, TaskSizes, evaluate_run
from tunesmith.forgetting import measure as measure_module
from tunesmith.forgetting import probes as probe_module
from tunesmith.forgetting.probes import ProbeSizes

SIZES = ProbeSizes("standard", wiki_passages=4, wiki_max_tokens=48, analogies_per_section=1, trivia=4, kl_prompts=6,
                   kl_new_tokens=8)


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir):
    from conftest import faq_rows, write_jsonl

    root = tmp_path_factory.mktemp("evalspeed")
    data = write_jsonl(root / "faq.jsonl", faq_rows("chat") * 3)
    config = load_config(None, {"data": str(data), "model": str(tiny_model_dir), "output": str(root / "run"),
                                "max_steps": 6, "batch_size": 4, "lr": 3e-2, "val_fraction": 0.3,
                                "precision": "fp32", "forgetting": {"measure_during_training": False}})
    train(config, show_progress=False)
    return root / "run"


@pytest.fixture(autouse=True)
def sizes(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESMITH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(probe_module.PROBE_SIZES, "standard", SIZES)
    monkeypatch.setitem(TASK_SIZES, "standard", TaskSizes(generate=8, max_new_tokens=12))


def figures(result: dict) -> dict:
    task = result["task"]
    out = {f"task.{k}.{side}": task[k][side] for k in ("loss", "token_f1", "rouge_l") for side in ("base", "tuned")}
    out.update({f"general.{k}.{side}": v[side] for k, v in result["general"].items() for side in ("base", "tuned")})
    out["samples"] = [[s["base"], s["tuned"]] for s in task["samples"]]
    return out


def one_at_a_time(run) -> dict:
    """eval.json's figures from the slow paths, computed here: every prompt decoded alone, the adapter
    left unmerged, every base pass computed (no cache)."""
    from tunesmith.inference.decode import generate_batch

    alone = functools.partial(generate_batch, batch_size=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluate_module, "generate_batch", alone)
        patch.setattr(measure_module, "generate_batch", alone)
        patch.setattr(evaluate_module, "adapters_merged", contextlib.nullcontext)  # yields the model as it is
        return figures(evaluate_run(run, use_cache=False))


def assert_same(result: dict, reference: dict) -> None:
    """Answers and accuracies must not move at all. Loss and perplexity sums move in the last digits of
    fp32 when a pass is batched differently (other shapes, other summation order): rel 1e-5 is a
    hundred times that rounding and far below what a wrong mask or a wrong merge would change."""
    got = figures(result)
    assert got["samples"] == reference["samples"]
    for key, value in reference.items():
        if key != "samples":
            assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-9), key


@pytest.mark.numerics
def test_eval_gives_the_figures_of_the_one_at_a_time_code_with_and_without_the_cache(run):
    reference = one_at_a_time(run)
    assert reference["task.loss.tuned"] != reference["task.loss.base"]  # the run trained: the two sides differ
    first = evaluate_run(run)
    assert_same(first, reference)
    second = evaluate_run(run)  # the base side from the cache this time
    assert second["base_cached"] and second["task"]["base_cached"] and not first["task"]["base_cached"]
    assert_same(second, reference)
    assert figures(second) == figures(first)


def test_merging_the_adapter_for_decoding_restores_it_bit_for_bit(tiny_run):
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    from tunesmith.inference.decode import adapters_merged
    from tunesmith.run import load_run

    model, _ = load_run(tiny_run)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    ids = torch.tensor([[5, 17, 42, 8, 99, 3, 250, 11]])
    with torch.no_grad():
        unmerged = model(input_ids=ids).logits
        with adapters_merged(model) as merged:
            layers = [m for m in merged.modules() if isinstance(m, BaseTunerLayer)]
            assert layers and all(layer.merged for layer in layers)
            changed = [name for name, p in merged.named_parameters() if not torch.equal(p, before[name])]
            assert any("base_layer" in name for name in changed)  # the delta is in the weights now
            merged_logits = merged(input_ids=ids).logits
        after = model(input_ids=ids).logits
    assert not any(layer.merged for layer in layers)
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())
    assert torch.equal(after, unmerged)
    scale = unmerged.abs().max()
    assert (merged_logits - unmerged).abs().max() <= 0.02 * scale  # the same model, in other rounding
    with torch.no_grad(), model.disable_adapter(), adapters_merged(model) as base:  # the base view stays the base
        assert not any(layer.merged for layer in layers)
        base_logits = base(input_ids=ids).logits
    assert not torch.allclose(base_logits, unmerged)


def test_a_decoding_batch_takes_the_threads_the_other_processes_leave_free(monkeypatch):
    """All of torch's threads when the rest of the machine is idle, one when another job keeps a core
    busy (OpenMP's threads wait for each other, so a thread without its core stalls every step),
    and one where /proc/stat cannot be read."""
    from tunesmith.inference import decode

    monkeypatch.setattr(decode.os, "sched_getaffinity", lambda pid: {0, 1})
    samples = iter([(10.0, 1.0, 0.0),  # busy machine seconds, this process's CPU seconds, wall
                    (12.1, 3.0, 1.0),  # 2.1 busy, 2.0 our own: others used 0.1 of a core -> 2 threads
                    (15.2, 5.0, 2.0),  # 3.1 busy, 2.0 our own: others kept a core -> 1 thread
                    (17.2, 7.0, 3.0)])  # idle again -> 2
    monkeypatch.setattr(decode.FreeCores, "_sample", staticmethod(lambda: next(samples)))
    cores = decode.FreeCores(limit=2, probe_s=0)
    assert [cores.threads() for _ in range(3)] == [2, 1, 2]
    monkeypatch.setattr(decode.FreeCores, "_sample", staticmethod(lambda: (0.0, 0.0, time.monotonic())))
    assert decode.FreeCores(limit=1, probe_s=0).threads() == 1  # torch set to one thread stays there
    monkeypatch.setattr(decode.FreeCores, "_sample", staticmethod(lambda: None))
    assert decode.FreeCores(limit=2, probe_s=0).threads() == 1
