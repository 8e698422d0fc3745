"""Configs: typed overrides, YAML files, and errors that name the key."""

from __future__ import annotations

import pytest

from instructrl.config import GenerateConfig, PPOConfig, load_config
from instructrl.errors import ConfigError


def test_overrides_are_typed():
    cfg = load_config(
        GenerateConfig,
        ["prompt=hi", "samples=3", "sampling.temperature=0.5", "sampling.stop=[END,STOP]"],
    )
    assert cfg.samples == 3 and isinstance(cfg.samples, int)
    assert cfg.sampling.temperature == 0.5
    assert cfg.sampling.stop == ["END", "STOP"]
    assert cfg.sampling.top_p == 0.9  # generate's own default for the nested sampling config


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "gen.yaml"
    path.write_text("prompts: p.jsonl\nsampling:\n  max_new_tokens: 12\n  seed: 5\n")
    cfg = load_config(GenerateConfig, [str(path), "sampling.seed=9"])
    assert (cfg.prompts, cfg.sampling.max_new_tokens, cfg.sampling.seed) == ("p.jsonl", 12, 9)
    cfg = load_config(GenerateConfig, [f"config={path}"])
    assert cfg.sampling.seed == 5


def test_unknown_key_lists_valid_ones():
    with pytest.raises(ConfigError) as e:
        load_config(GenerateConfig, ["prompt=hi", "modle=x"])
    msg = str(e.value)
    assert msg.startswith(
        "config: unknown key 'modle' for generate; valid keys: model, prompt, prompts,"
    )
    assert "sampling.temperature" in msg
    with pytest.raises(ConfigError, match=r"unknown key 'sampling.temp' for generate"):
        load_config(GenerateConfig, ["prompt=hi", "sampling.temp=1"])


def test_wrong_type_names_key_and_type():
    with pytest.raises(ConfigError) as e:
        load_config(GenerateConfig, ["prompt=hi", "samples=abc"])
    assert str(e.value) == "config: samples: expected int, got 'abc'"
    with pytest.raises(ConfigError) as e:
        load_config(GenerateConfig, ["prompt=hi", "sampling.temperature=hot"])
    assert str(e.value) == "config: sampling.temperature: expected float, got 'hot'"


def test_cross_field_and_range_checks():
    with pytest.raises(ConfigError, match=r"prompt and prompts: expected exactly one of them"):
        load_config(GenerateConfig, [])
    with pytest.raises(ConfigError, match=r"sampling.top_p: expected a value in \(0, 1\], got 1.5"):
        load_config(GenerateConfig, ["prompt=x", "sampling.top_p=1.5"])


def test_bad_files_and_args(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(GenerateConfig, [str(tmp_path / "missing.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="expected YAML"):
        load_config(GenerateConfig, [str(bad)])
    with pytest.raises(ConfigError, match=r"expected key=value or a \.yaml file, got 'oops'"):
        load_config(GenerateConfig, ["oops"])


def test_direct_values_keep_free_text():
    cfg = load_config(GenerateConfig, [], {"prompt": "a, b: [c] ${d}"})
    assert cfg.prompt == "a, b: [c] ${d}"


def test_kl_estimator_is_checked():
    assert load_config(PPOConfig, ["kl_estimator=k3"]).kl_estimator == "k3"
    with pytest.raises(ConfigError, match="kl_estimator: expected k1, k2 or k3, got 'k4'"):
        load_config(PPOConfig, ["kl_estimator=k4"])
