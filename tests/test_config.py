"""Config: one home per default, unknown keys suggested, shipped configs parse."""

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
    assert resolved.epochs == default_epochs(10) == 10.0 and resolved.lr is not None


def test_resolved_config_round_trips(tmp_path):
    config = config_from_dict({"data": "x", "method": "dora", "lora": {"r": 4}}).resolve(100)
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(config))
    assert load_config(path) == config


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_parse(path):
    assert load_config(path).data


def test_readme_documents_every_config_key():
    from dataclasses import fields

    from tunesmith.config import LoraConfig

    readme = (ROOT / "README.md").read_text()
    keys = [f.name for f in fields(TrainConfig) if f.name != "lora"] + [f"lora.{f.name}" for f in fields(LoraConfig)]
    missing = [k for k in keys if f"| `{k}` |" not in readme]
    assert not missing, f"README's config table lacks {missing}"
