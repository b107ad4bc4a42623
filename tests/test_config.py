import json

import pytest

from shared.config import EvalConfig, ModelConfig, PPOConfig, SFTConfig
from shared.errors import ConfigError

transformers = pytest.importorskip("transformers")


def small(**overrides):
    values = dict(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=40)
    values.update(overrides)
    return ModelConfig(**values)


@pytest.mark.parametrize("attention_type", ["bidirectional", "causal"])
def test_config_json_round_trip(tmp_path, attention_type):
    config = small(attention_type=attention_type, hidden_dropout_prob=0.0)
    config.to_json_file(tmp_path / "config.json")
    assert ModelConfig.from_json_file(tmp_path / "config.json") == config


@pytest.mark.parametrize("attention_type,architecture", [("bidirectional", "BertForMaskedLM"),
                                                         ("causal", "BertLMHeadModel")])
def test_transformers_reads_our_config(tmp_path, attention_type, architecture):
    config = small(attention_type=attention_type, layer_norm_eps=1e-7, initializer_range=0.05)
    config.to_json_file(tmp_path / "config.json")
    hf = transformers.BertConfig.from_pretrained(tmp_path)
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "intermediate_size", "max_position_embeddings", "type_vocab_size",
                 "hidden_dropout_prob", "attention_probs_dropout_prob", "layer_norm_eps",
                 "initializer_range", "hidden_act", "pad_token_id"):
        assert getattr(hf, name) == getattr(config, name), name
    assert hf.is_decoder == (attention_type == "causal")
    assert hf.architectures == [architecture]
    assert hf.model_type == "bert"


def test_we_read_a_config_written_by_transformers(tmp_path):
    hf = transformers.BertConfig(vocab_size=321, hidden_size=48, num_hidden_layers=3,
                                 num_attention_heads=6, intermediate_size=96, is_decoder=True)
    hf.save_pretrained(tmp_path)
    config = ModelConfig.from_json_file(tmp_path / "config.json")
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers) == (321, 48, 3)
    assert config.num_attention_heads == 6 and config.head_size == 8
    assert config.attention_type == "causal"
    assert config.layer_norm_eps == 1e-12 and config.max_position_embeddings == 512


@pytest.mark.parametrize("overrides,field", [
    (dict(hidden_size=30, num_attention_heads=4), "num_attention_heads"),
    (dict(vocab_size=0), "vocab_size"),
    (dict(num_hidden_layers=-1), "num_hidden_layers"),
    (dict(hidden_size=32.0), "hidden_size"),
    (dict(hidden_dropout_prob=1.0), "hidden_dropout_prob"),
    (dict(attention_probs_dropout_prob=-0.1), "attention_probs_dropout_prob"),
    (dict(layer_norm_eps=0.0), "layer_norm_eps"),
    (dict(hidden_act="swish"), "hidden_act"),
    (dict(attention_type="sideways"), "attention_type"),
    (dict(pad_token_id=300), "pad_token_id"),
])
def test_invalid_model_config_names_the_field(overrides, field):
    with pytest.raises(ConfigError) as info:
        small(**overrides)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


def test_config_file_errors_name_file_and_field(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"hiden_size": 64}))
    with pytest.raises(ConfigError, match=r"config.json: hiden_size: unknown field"):
        ModelConfig.from_json_file(path)
    path.write_text(json.dumps({"hidden_size": 64, "num_attention_heads": 5}))
    with pytest.raises(ConfigError, match=r"config.json: num_attention_heads: must divide"):
        ModelConfig.from_json_file(path)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=r"invalid JSON at line 1"):
        ModelConfig.from_json_file(path)
    with pytest.raises(ConfigError, match=r"no such file"):
        ModelConfig.from_json_file(tmp_path / "missing.json")
    path.write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ConfigError, match=r"model_type: must be 'bert'"):
        ModelConfig.from_json_file(path)


@pytest.mark.parametrize("cls,overrides,field", [
    (SFTConfig, dict(lr=-1e-3), "lr"),
    (SFTConfig, dict(lr=0.0), "lr"),
    (SFTConfig, dict(batch_size=0), "batch_size"),
    (SFTConfig, dict(objective="dpo"), "objective"),
    (SFTConfig, dict(steps=-5), "steps"),
    (PPOConfig, dict(minibatch_size=128, batch_size=64), "minibatch_size"),
    (PPOConfig, dict(gamma=1.5), "gamma"),
    (PPOConfig, dict(lr=float("nan")), "lr"),
    (PPOConfig, dict(target_kl=-0.1), "target_kl"),
    (EvalConfig, dict(confidence=1.0), "confidence"),
])
def test_invalid_training_config_names_the_field(cls, overrides, field):
    with pytest.raises(ConfigError) as info:
        cls(**overrides)
    assert info.value.field == field


@pytest.mark.parametrize("cls", [SFTConfig, PPOConfig, EvalConfig])
def test_training_configs_round_trip(tmp_path, cls):
    config = cls(seed=7)
    config.to_json_file(tmp_path / "c.json")
    assert cls.from_json_file(tmp_path / "c.json") == config
