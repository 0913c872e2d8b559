"""Config: one home per default, unknown keys suggested, shipped configs parse."""

import re
from pathlib import Path

import pytest

from tunesmith.config import ConfigError, TrainConfig, config_from_dict, default_epochs, dump_config, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_unknown_key_suggests_the_closest(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: x.jsonl\nlearning_rat: 0.1\n")
    with pytest.raises(ConfigError, match="did you mean"):
        load_config(path)
    with pytest.raises(ConfigError, match="did you mean 'lora.alpha'"):
        config_from_dict({"data": "x", "lora": {"alpah": 3}})


def test_wrong_types_and_ranges_are_named():
    with pytest.raises(ConfigError, match="'max_steps' must be int"):
        config_from_dict({"data": "x", "max_steps": "ten"})
    with pytest.raises(ConfigError, match="'method' must be one of"):
        config_from_dict({"data": "x", "method": "qlora-magic"})
    with pytest.raises(ConfigError, match="'lora.dropout'"):
        config_from_dict({"data": "x", "lora": {"dropout": 1.5}})


def test_flags_override_yaml_and_resolution_fills_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: x.jsonl\nlr: 1e-4\nepochs: 2\n")
    config = load_config(path, {"lr": 3e-4, "seed": None})
    assert config.lr == 3e-4 and config.epochs == 2.0 and config.seed == 0
    resolved = TrainConfig(data="x").resolve(n_train_examples=10)
    assert resolved.epochs == default_epochs(10) == 3.0 and resolved.lr is not None


@pytest.mark.parametrize("n, epochs", [(1, 3.0), (32, 3.0), (134, 3.0), (150, 3.0), (200, 2.0), (399, 2.0),
                                       (400, 1.0), (453, 1.0), (1589, 1.0)])
def test_default_epochs_aim_at_400_examples_seen_between_1_and_3_passes(n, epochs):
    # The FAQ's 453 training rows: one epoch; the 32 brand-voice posts: three, never ten (docs/forgetting.md).
    assert default_epochs(n) == epochs


def test_resolved_config_round_trips(tmp_path):
    config = config_from_dict({"data": "x", "method": "dora", "lora": {"r": 4}}).resolve(100)
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(config))
    assert load_config(path) == config


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_parse(path):
    assert load_config(path).data



def test_each_choice_has_one_home():
    from typing import get_args, get_type_hints

    from tunesmith.config import DISTRIBUTED, METHODS, PRECISIONS, default_lr
    from tunesmith.export.gguf import GGUF_TOLERANCE
    from tunesmith.settings import GGUF_TYPES, Sampling, ServeLimits

    hints = get_type_hints(TrainConfig)
    assert (get_args(hints["method"]), get_args(hints["precision"]), get_args(hints["distributed"])) == \
        (METHODS, PRECISIONS, DISTRIBUTED) == \
        (("lora", "dora", "full", "qlora"), ("auto", "bf16", "fp32"), ("ddp", "fsdp"))
    assert [default_lr(m) for m in METHODS] == [1e-3, 1e-3, 5e-5, 1e-3]
    assert tuple(GGUF_TOLERANCE) == GGUF_TYPES  # a type added to the config has a tolerance to pass
    assert ServeLimits().default_max_tokens == Sampling().max_new_tokens == 256


def test_moved_settings_are_checked_as_config():
    from tunesmith.commands.compare import CompareSettings as FromCompare
    from tunesmith.retrieval import RetrievalSettings as FromRetrieval
    from tunesmith.settings import CompareSettings, RetrievalSettings

    assert FromCompare is CompareSettings and FromRetrieval is RetrievalSettings
    with pytest.raises(ConfigError, match="'compare.seen' must be non-negative, got -1"):
        CompareSettings(seen=-1)
    with pytest.raises(ConfigError, match=r"'retrieval.overlap_words' must be in \[0, chunk_words\), got 120"):
        RetrievalSettings(overlap_words=120)


def test_a_method_that_is_an_objective_names_the_objective_key():
    with pytest.raises(ConfigError,
                       match="config key 'method' is the kind of weights trained; for dpo set objective: dpo"):
        load_config(None, {"data": "x.jsonl", "method": "dpo"})
    with pytest.raises(ConfigError, match="must be one of lora, dora, full, qlora, got 'lorax'"):
        load_config(None, {"data": "x.jsonl", "method": "lorax"})


def test_a_refused_value_names_the_file_and_line_of_its_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data: d.jsonl\nlr: 0.001\nretrieval:\n  knowledge: kb.jsonl\n  min_relevance: 1.5\n")
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert str(refused.value) == f"{path}:5: config key 'retrieval.min_relevance' must be in [0, 1], got 1.5"
    path.write_text("data: d.jsonl\nlr: -1\n")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}:2: config key 'lr' must be positive"):
        load_config(path)
    path.write_text("data: d.jsonl\n")  # a flag's value is not the file's: no file or line is named
    with pytest.raises(ConfigError, match="^config key 'lr' must be positive"):
        load_config(path, {"lr": -1.0})
