"""Training events: every subscriber sees every step once, in order, with the numbers metrics.jsonl
records; across a crash and resume each kept step is seen once; FinishedEvent or StopEvent is last."""

import dataclasses
import os
import signal

import pytest

from tunesmith import load_config, train
from tunesmith.run import RunDir
from tunesmith.training.events import (
    METRICS_EVENTS,
    CheckpointEvent,
    EvaluationEvent,
    FinishedEvent,
    ProbesEvent,
    StepEvent,
    StopEvent,
)


def settings(data, model, out, **extra):
    # fp32 on the CPU is deterministic: a recomputed step has bit-for-bit the same loss.
    base = {"data": str(data), "model": str(model), "output": str(out), "max_steps": 6, "batch_size": 3,
            "eval_every": 2, "save_every": 2, "precision": "fp32", "lr": 1e-2,
            "forgetting": {"measure_during_training": False}}
    return {**base, **extra}


def kinds(events, kind):
    return [e for e in events if isinstance(e, kind)]


def unclocked(steps):
    """StepEvents without their throughput, the one field a rerun changes."""
    return [dataclasses.replace(e, tokens_per_s=0.0) for e in steps]


def test_a_subscriber_sees_every_event_once_in_order_as_metrics_jsonl_records_it(faq_file, tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    events = []
    cfg = load_config(None, settings(faq_file("chat"), tiny_model_dir, run, max_steps=4,
                                     forgetting={"measure_during_training": True}))
    result = train(cfg, show_progress=False, subscribers=[events.append])
    assert [e.step for e in kinds(events, StepEvent)] == [1, 2, 3, 4]
    # metrics.jsonl is written through the same seam: its rows are the metrics events, in order.
    assert RunDir(run).metrics() == [e.to_dict() for e in events if isinstance(e, METRICS_EVENTS)]
    assert [(type(e).__name__, e.step) for e in events if not isinstance(e, FinishedEvent)] == [
        ("EvaluationEvent", 0),
        ("StepEvent", 1),
        ("StepEvent", 2), ("EvaluationEvent", 2), ("ProbesEvent", 2), ("CheckpointEvent", 2),
        ("StepEvent", 3),
        ("StepEvent", 4), ("EvaluationEvent", 4), ("ProbesEvent", 4), ("CheckpointEvent", 4),
    ]
    assert kinds(events, FinishedEvent) == [events[-1]]
    assert events[-1].to_dict() == RunDir(run).summary()
    assert events[-1].final_val_loss == result.final_val_loss
    assert [e.path for e in kinds(events, CheckpointEvent)] == [str(run / "checkpoints" / f"step-{s}") for s in (2, 4)]
    probes = kinds(events, ProbesEvent)[0]
    assert probes.probes and all("delta" in figures for figures in probes.probes.values())
    steps = kinds(events, StepEvent)
    assert all(len(e.examples) == 3 and all("faq-chat.jsonl:" in x for x in e.examples) for e in steps)
    assert all(e.tokens > 0 and e.grad_norm > 0 for e in steps)


@pytest.fixture
def reference(faq_file, tiny_model_dir, tmp_path):
    """The uninterrupted run's StepEvents."""
    events = []
    train(load_config(None, settings(faq_file("chat"), tiny_model_dir, tmp_path / "ref")), show_progress=False,
          subscribers=[events.append])
    return faq_file("chat"), kinds(events, StepEvent)


def crash_at(kind, step):
    def crash(event):
        if isinstance(event, kind) and event.step == step:
            raise RuntimeError(f"crash at {kind.__name__} {step}")
    return crash


def test_across_a_crash_right_after_a_checkpoint_each_step_is_seen_exactly_once(reference, tiny_model_dir, tmp_path):
    data, expected = reference
    cfg = load_config(None, settings(data, tiny_model_dir, tmp_path / "run"))
    before, after = [], []
    with pytest.raises(RuntimeError, match="CheckpointEvent 4"):
        train(cfg, show_progress=False, subscribers=[before.append, crash_at(CheckpointEvent, 4)])
    train(cfg, resume="auto", show_progress=False, subscribers=[after.append])
    assert [e.step for e in kinds(after, StepEvent)] == [5, 6]  # the resumed part starts after the checkpoint
    assert unclocked(kinds(before + after, StepEvent)) == unclocked(expected)  # each step once, the same numbers
    # metrics.jsonl holds each step once as well (the resumed run rewrote it from the checkpoint).
    assert [r["step"] for r in RunDir(tmp_path / "run").metrics() if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert not kinds(before, FinishedEvent) and kinds(after, FinishedEvent) == [after[-1]]


def test_steps_lost_in_a_crash_are_seen_again_when_recomputed(reference, tiny_model_dir, tmp_path):
    """A crash at step 5 (the last checkpoint is step 4) loses step 5: the resumed run recomputes it
    and sends it again, with the same loss. "Exactly once" holds for the steps a checkpoint kept;
    a subscriber that needs once-only delivery keeps what it saw up to the last CheckpointEvent."""
    data, expected = reference
    cfg = load_config(None, settings(data, tiny_model_dir, tmp_path / "run"))
    before, after = [], []
    with pytest.raises(RuntimeError, match="StepEvent 5"):
        train(cfg, show_progress=False, subscribers=[before.append, crash_at(StepEvent, 5)])
    train(cfg, resume="auto", show_progress=False, subscribers=[after.append])
    assert [e.step for e in kinds(before, StepEvent)] == [1, 2, 3, 4, 5]
    assert [e.step for e in kinds(after, StepEvent)] == [5, 6]
    assert kinds(before, StepEvent)[4].loss == kinds(after, StepEvent)[0].loss == expected[4].loss
    kept = kinds(before, CheckpointEvent)[-1].step
    assert unclocked([e for e in kinds(before, StepEvent) if e.step <= kept] + kinds(after, StepEvent)) == \
        unclocked(expected)


def test_a_signal_stops_at_the_step_boundary_with_a_stop_event_last(faq_file, tiny_model_dir, tmp_path):
    events = []

    def send_sigterm(event):
        events.append(event)
        if isinstance(event, StepEvent) and event.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # the run's handler only sets a flag

    cfg = load_config(None, settings(faq_file("chat"), tiny_model_dir, tmp_path / "run"))
    result = train(cfg, show_progress=False, subscribers=[send_sigterm])
    assert result.interrupted and result.steps == 3
    assert [(type(e).__name__, e.step) for e in events[-2:]] == [("CheckpointEvent", 3), ("StopEvent", 3)]
    assert events[-1] == StopEvent(3, "SIGTERM") and not kinds(events, FinishedEvent)


def test_events_are_json_ready_with_the_metrics_keys():
    import json

    step = StepEvent(1, 2.5, 1e-3, 0, 100, 50.0, 0.7, ("a.jsonl:1",))
    assert list(step.to_dict()) == ["step", "loss", "lr", "epoch", "tokens", "tokens_per_s", "grad_norm"]
    assert json.loads(json.dumps(step.to_dict())) == step.to_dict()
    assert EvaluationEvent(2, 1.5).to_dict() == {"step": 2, "val_loss": 1.5}
    assert StopEvent(3, "SIGINT").to_dict() == {"step": 3, "signal": "SIGINT"}
    assert CheckpointEvent(2, "run/checkpoints/step-2").to_dict() == {"step": 2, "path": "run/checkpoints/step-2"}
