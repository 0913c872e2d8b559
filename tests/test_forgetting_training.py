"""Forgetting inside training: probes at each evaluation, the budget picks the final model,
replay and the KL-to-base term train and resume exactly."""

import pytest

from tunesmith import load_config, train
from tunesmith.run import RunDir
from tunesmith.training.checkpoint import list_complete
from tunesmith.training.events import CheckpointEvent


def settings(data, model, out, **extra):
    base = {"data": str(data), "model": str(model), "output": str(out), "max_steps": 8, "eval_every": 2,
            "batch_size": 3, "precision": "fp32", "lr": 5e-2, "keep_last": 1}
    return {**base, **extra}


def rows(run):
    return RunDir(run).metrics()


def test_probes_run_at_each_evaluation_and_the_budget_picks_the_final_model(faq_file, tiny_model_dir, tmp_path):
    # A budget nothing can meet: the best-on-task evaluation is kept, the last one beside it, labelled.
    run = tmp_path / "strict"
    cfg = load_config(None, settings(faq_file("chat"), tiny_model_dir, run, forgetting={
        "budget": {"max_ppl_increase": 0.0, "max_kl": 0.0, "max_accuracy_drop": 0.0}}))
    result = train(cfg, show_progress=False)
    probe_rows = [r for r in rows(run) if "within_budget" in r]
    assert [r["step"] for r in probe_rows] == [2, 4, 6, 8] and not any(r["within_budget"] for r in probe_rows)
    vals = {r["step"]: r["val_loss"] for r in rows(run) if "val_loss" in r and r["step"] > 0}
    best = min(vals, key=vals.get)
    summary = RunDir(run).summary()
    assert summary["selected_step"] == best and "NO evaluation" in summary["selection"]
    assert result.final_val_loss == vals[best] and summary["last_val_loss"] == vals[8]
    assert (run / "adapter-last").exists() == (best != 8)
    assert best in {s for s, _ in list_complete(run)}  # retention never deletes the chosen checkpoint

    # A budget anything meets: the best validation loss among all evaluations.
    run = tmp_path / "loose"
    cfg = load_config(None, settings(faq_file("chat"), tiny_model_dir, run, forgetting={
        "budget": {"max_ppl_increase": 1e9, "max_kl": 1e9, "max_accuracy_drop": 1.0}}))
    train(cfg, show_progress=False)
    summary = RunDir(run).summary()
    assert summary["within_budget"] is True and summary["selected_step"] == best
    assert summary["selection"] == "best validation loss within the forgetting budget"


def test_final_adapter_holds_the_chosen_checkpoint(faq_file, tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    run = tmp_path / "run"
    cfg = load_config(None, settings(faq_file("chat"), tiny_model_dir, run, lr=0.5, keep_last=10, forgetting={
        "budget": {"max_ppl_increase": 0.0, "max_kl": 0.0, "max_accuracy_drop": 0.0}}))
    train(cfg, show_progress=False)
    chosen = RunDir(run).summary()["selected_step"]
    saved = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    ckpt = load_file(str(run / "checkpoints" / f"step-{chosen}" / "trainable.safetensors"))
    for name, tensor in saved.items():
        match = [k for k in ckpt if k.replace(".default", "").endswith(name.split("base_model.model.", 1)[-1])]
        assert match and (ckpt[match[0]] == tensor).all()


@pytest.mark.parametrize("mitigation", [{"replay_fraction": 0.3}, {"kl_weight": 0.5},
                                        {"kl_weight": 0.5, "kl_tokens": 0.25}])
def test_mitigations_train_and_resume_exactly(mitigation, faq_file, tiny_model_dir, tmp_path):
    extra = {"save_every": 1, "forgetting": {"measure_during_training": False, **mitigation}}
    ref = tmp_path / "ref"
    train(load_config(None, settings(faq_file("chat"), tiny_model_dir, ref, **extra)), show_progress=False)
    plain = tmp_path / "plain"
    train(load_config(None, settings(faq_file("chat"), tiny_model_dir, plain, save_every=1)), show_progress=False)
    losses = [r["loss"] for r in rows(ref) if "loss" in r]
    assert losses != [r["loss"] for r in rows(plain) if "loss" in r]  # the mitigation changes training

    run = tmp_path / "run"
    cfg = load_config(None, settings(faq_file("chat"), tiny_model_dir, run, **extra))

    def crash(event):  # right after step 3's checkpoint is complete
        if isinstance(event, CheckpointEvent) and event.step == 3:
            raise RuntimeError("preempted")

    with pytest.raises(RuntimeError):
        train(cfg, show_progress=False, subscribers=[crash])
    train(cfg, resume="auto", show_progress=False)
    assert [r["loss"] for r in rows(run) if "loss" in r] == losses


def test_kl_tokens_sizes_the_kl_terms_general_text(faq_file, tiny_model_dir, tmp_path, monkeypatch):
    """kl_tokens 0.25: each micro-batch's KL term reads a quarter as many general-text tokens as the
    micro-batch trains (1.0, the default, as many)."""
    from tunesmith.forgetting.mitigate import ReplaySource

    asked: list[int] = []
    real = ReplaySource.batch
    monkeypatch.setattr(ReplaySource, "batch", lambda self, n: asked.append(n) or real(self, n))

    def fractions(kl_tokens):
        asked.clear()
        extra = {"max_steps": 2, "forgetting": {"measure_during_training": False, "kl_weight": 0.5,
                                                "kl_tokens": kl_tokens, "replay_fraction": 0.0}}
        train(load_config(None, settings(faq_file("chat"), tiny_model_dir, tmp_path / str(kl_tokens), **extra)),
              show_progress=False)
        return list(asked)

    full, quarter = fractions(1.0), fractions(0.25)
    assert len(full) == len(quarter) == 2 and all(n > 8 for n in full)
    assert quarter == [max(1, round(n * 0.25)) for n in full]
