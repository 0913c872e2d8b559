"""The `forgetting:` config section: defaults, nesting, checks and file-relative probe paths."""

import pytest
import yaml

from tunesmith.config import ConfigError, ForgettingBudget, ForgettingConfig, config_from_dict, dump_config, load_config


def test_defaults_and_round_trip():
    config = config_from_dict({"data": "x.jsonl"})
    assert config.forgetting == ForgettingConfig()
    # The KL-to-base term is on by default at a quarter of the task's tokens; replay is off (docs/forgetting.md).
    assert config.forgetting.replay_fraction == 0.0
    assert config.forgetting.kl_weight == 1.0 and config.forgetting.kl_tokens == 0.25
    custom = config_from_dict({"data": "x.jsonl", "forgetting": {
        "budget": {"max_ppl_increase": 0.02, "max_kl": 1, "max_accuracy_drop": 0.1},
        "replay_fraction": 0.25, "kl_weight": 0.5, "probes": ["mine.jsonl"]}})
    assert custom.forgetting.budget == ForgettingBudget(0.02, 1.0, 0.1)
    assert config_from_dict(yaml.safe_load(dump_config(custom))) == custom


@pytest.mark.parametrize("section, message", [
    ({"replay_fraction": 1.0}, "forgetting.replay_fraction"),
    ({"kl_weight": -1}, "forgetting.kl_weight"),
    ({"budget": {"max_accuracy_drop": 2}}, "forgetting.budget.max_accuracy_drop"),
    ({"budget": {"max_kll": 1}}, "did you mean 'forgetting.budget.max_kl'"),
    ({"replay": 0.1}, "'forgetting.replay'"),
    ({"probes": "one.jsonl"}, "forgetting.probes"),
    ({"budget": 3}, "'forgetting.budget' must be a mapping"),
])
def test_bad_values_name_the_key(section, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        config_from_dict({"data": "x.jsonl", "forgetting": section})


def test_probe_paths_are_relative_to_the_config_file(tmp_path):
    (tmp_path / "mine.jsonl").write_text('{"text": "hello there"}\n')
    (tmp_path / "run.yaml").write_text("data: x.jsonl\nforgetting:\n  probes: [mine.jsonl]\n")
    assert load_config(tmp_path / "run.yaml").forgetting.probes == [str(tmp_path / "mine.jsonl")]
