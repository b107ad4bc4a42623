"""The Keras decoders (tf_impl/gpt2.py, tf_impl/llama.py) against their PyTorch twins.

Tiny random models: GPT-2 (C 32, 2 layers, 4 heads, V 97), Llama with grouped-query attention
(4 heads, 2 key/value heads, rope_theta 500, untied LM head) and Qwen2 (q/k/v bias, tied). The
torch model's weights are written as a `transformers` folder would hold them (GPT-2's Conv1D
weights (in, out), no tied duplicate) and read by `tf_impl.convert.load_pretrained`.

Bounds: float64 logits within 1e-10 (the same arithmetic in another order: ~1e-15 relative), float32
within 1e-5 (logits reach ~7, where a float32 ulp is 5e-7: rounding differences of each op, summed
over 2 layers, come to some ulps). Left-padded batches: a pad query
sees no key under the causal mask (the fused kernels let it see every key), and no real token
reads it, so logits are compared on the real positions only.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from conftest import bf16_relative_error_bound, bf16_result
from shared.config import GPT2Config, LlamaConfig
from shared.constants import GPT2_CONV1D_LAYERS
from shared.errors import CheckpointError
from tf_impl.convert import assign_numpy_state_dict, load_pretrained, to_numpy_state_dict
from torch_impl.architectures import build_model as torch_build_model

NO_DROPOUT = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
TINY = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=32)
CONFIGS = {
    "gpt2": GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=4, **NO_DROPOUT),
    "llama": LlamaConfig(**TINY, num_key_value_heads=2, rope_theta=500.0),
    "qwen2": LlamaConfig(**TINY, model_type="qwen2", num_key_value_heads=2, tie_word_embeddings=True),
}
TIED_HEAD = "lm_head.weight"
LENGTHS = (9, 6, 3)  # a left-padded batch of three rows; T = 9


def random_state(config, seed=0, std=0.3):
    """Seeded weights for every entry of the torch model's state dict: N(0, std), norm scales
    1 + N(0, 0.1) (biases random too, so a bias in the wrong place shows); a tied LM head is the
    token table under both names."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, tensor in torch_build_model(config).state_dict().items():
        is_scale = name.endswith("weight") and tensor.dim() == 1
        state[name] = 1.0 + rng.normal(0.0, 0.1, tensor.shape) if is_scale else rng.normal(0.0, std, tensor.shape)
    if config.tie_word_embeddings:
        table = "transformer.wte.weight" if config.model_type == "gpt2" else "model.embed_tokens.weight"
        state[TIED_HEAD] = state[table]
    return state


def file_layout(state, config):
    """The torch state dict as a `transformers` folder holds it: GPT-2's Conv1D weights (in, out),
    no tied `lm_head.weight`."""
    def conv1d(name):
        *_, layer, leaf = name.split(".")
        return config.model_type == "gpt2" and layer in GPT2_CONV1D_LAYERS and leaf == "weight"
    return {name: np.ascontiguousarray(value.T if conv1d(name) else value) for name, value in state.items()
            if not (config.tie_word_embeddings and name == TIED_HEAD)}


def write_folder(directory, config, state):
    directory.mkdir(parents=True, exist_ok=True)
    config.to_json_file(directory / "config.json")
    save_file(file_layout(state, config), str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


def torch_model(config, state, dtype):
    model = torch_build_model(config).to(dtype)
    model.load_state_dict({k: torch.tensor(v, dtype=dtype) for k, v in state.items()}, strict=True)
    return model.eval()


def left_padded(vocab_size, seed=1):
    """ids (B, T), attention mask (B, T) with 1 on real tokens, position ids counting real tokens."""
    rng = np.random.default_rng(seed)
    T = max(LENGTHS)
    mask = np.array([[0] * (T - n) + [1] * n for n in LENGTHS], dtype=np.int32)
    ids = np.where(mask == 1, rng.integers(1, vocab_size, size=mask.shape), 0).astype(np.int32)
    return ids, mask, np.maximum(np.cumsum(mask, -1) - 1, 0).astype(np.int32)


def max_abs_on_real(a, b, mask):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, f"shapes {a.shape} vs {b.shape}"
    return float(np.abs(a - b)[mask.astype(bool)].max())


@pytest.fixture(scope="module")
def states():
    return {kind: random_state(config) for kind, config in CONFIGS.items()}


@pytest.fixture(scope="module")
def folders(tmp_path_factory, states):
    root = tmp_path_factory.mktemp("keras_decoders")
    return {kind: write_folder(root / kind, config, states[kind]) for kind, config in CONFIGS.items()}


@pytest.fixture(scope="module")
def keras_models(folders):
    """load_pretrained(folder, dtype=precision), once per (kind, precision): building is the slow part."""
    built = {}

    def get(kind, precision="float32"):
        if (kind, precision) not in built:
            built[kind, precision] = load_pretrained(folders[kind], dtype=precision)
        return built[kind, precision]
    return get


# ----------------------------------------------------------------------------- names and layout

@pytest.mark.parametrize("kind", CONFIGS)
def test_keras_variables_are_named_as_the_torch_state_dict(states, keras_models, kind):
    config = CONFIGS[kind]
    state = states[kind]
    model = keras_models(kind)
    assert model.config == config
    got = to_numpy_state_dict(model)
    expected = file_layout(state, config)
    torch_names = set(torch_build_model(config).state_dict()) - ({TIED_HEAD} if config.tie_word_embeddings else set())
    assert set(got) == torch_names == set(expected), f"{kind}: {sorted(set(got) ^ torch_names)}"
    for name, value in expected.items():  # every variable got its own tensor, in the files' layout
        assert got[name].shape == value.shape, f"{kind}: {name} {got[name].shape} vs {value.shape}"
        assert np.array_equal(got[name], value.astype(np.float32)), f"{kind}: {name} differs"


# ----------------------------------------------------------------------------- logits

@pytest.mark.parametrize("kind", CONFIGS)
@pytest.mark.parametrize("precision,tolerance", [("float64", 1e-10), ("float32", 1e-5)])
def test_keras_logits_equal_torch_logits(states, keras_models, kind, precision, tolerance):
    config = CONFIGS[kind]
    ids, mask, positions = left_padded(config.vocab_size)
    dtype = getattr(torch, precision)
    with torch.no_grad():
        expected = torch_model(config, states[kind], dtype)(torch.tensor(ids, dtype=torch.long), torch.tensor(mask),
                                                             position_ids=torch.tensor(positions, dtype=torch.long))
    model = keras_models(kind, precision)
    got = model(ids, mask, position_ids=positions)
    assert got.dtype.name == precision
    error = max_abs_on_real(got, expected.numpy(), mask)
    print(f"{kind} {precision}: max |keras - torch| logits = {error:.2e}")
    assert error <= tolerance, f"{kind} {precision}: logits differ by {error:.3e} > {tolerance}"


@pytest.mark.parametrize("kind", CONFIGS)
def test_cached_decoding_equals_the_uncached_logits(keras_models, kind):
    """The prompt's first P tokens in one pass, then one token at a time through the KV cache
    (Hkv heads for Llama/Qwen2): the same logits as the whole sequence at once."""
    config = CONFIGS[kind]
    ids, mask, positions = left_padded(config.vocab_size)
    model = keras_models(kind, "float64")
    expected = model(ids, mask, position_ids=positions).numpy()
    B, T = ids.shape
    P = 4
    cache = model.backbone.init_cache(B, T)
    assert tuple(cache[0][0].shape) == (B, config.num_key_value_heads, T, config.head_size)
    written = (np.arange(T)[None, :] < P).astype(np.int32)
    logits, cache, _ = model.forward_with_cache(ids[:, :P], mask * written, cache, 0, position_ids=positions[:, :P])
    steps = [logits.numpy()]
    for t in range(P, T):
        written = (np.arange(T)[None, :] <= t).astype(np.int32)
        logits, cache, _ = model.forward_with_cache(ids[:, t:t + 1], mask * written, cache, t,
                                                    position_ids=positions[:, t:t + 1])
        steps.append(logits.numpy())
    error = max_abs_on_real(np.concatenate(steps, 1), expected, mask)
    print(f"{kind}: max |cached - uncached| logits (float64) = {error:.2e}")
    assert error <= 1e-10, f"{kind}: cached logits differ by {error:.3e}"


# ----------------------------------------------------------------------------- folders

def test_load_pretrained_drops_old_gpt2_buffers_and_reads_a_sharded_folder(states, keras_models, tmp_path):
    config = CONFIGS["gpt2"]
    files = file_layout(states["gpt2"], config)
    files["transformer.h.0.attn.bias"] = np.tril(np.ones((1, 1, 32, 32), np.float32))  # older transformers
    files["transformer.h.0.attn.masked_bias"] = np.array(-1e4, np.float32)
    names = sorted(files)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    folder = tmp_path / "sharded"
    folder.mkdir()
    config.to_json_file(folder / "config.json")
    for shard, shard_names in shards.items():
        save_file({n: files[n] for n in shard_names}, str(folder / shard))
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {n: shard for shard, shard_names in shards.items() for n in shard_names}}))
    model = load_pretrained(folder)
    reference = keras_models("gpt2")
    ids, mask, positions = left_padded(config.vocab_size)
    assert np.array_equal(model(ids, mask, position_ids=positions).numpy(),
                          reference(ids, mask, position_ids=positions).numpy())


def test_load_pretrained_names_the_folder_and_the_tensor(states, tmp_path):
    config = CONFIGS["llama"]
    files = file_layout(states["llama"], config)
    del files["model.layers.1.mlp.up_proj.weight"]
    folder = tmp_path / "incomplete"
    folder.mkdir()
    config.to_json_file(folder / "config.json")
    save_file(files, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=f"{folder}.*missing 1 weight.*model.layers.1.mlp.up_proj.weight"):
        load_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**config.to_dict(), "num_key_value_heads": 3}))
    with pytest.raises(CheckpointError, match="config.json.*num_key_value_heads"):
        load_pretrained(folder)
    with pytest.raises(CheckpointError, match="no such model folder"):
        load_pretrained(tmp_path / "absent")


def test_a_fresh_value_head_is_added_to_a_decoder_folder(folders):
    model = load_pretrained(folders["qwen2"], with_value_head=True)
    ids, mask, positions = left_padded(CONFIGS["qwen2"].vocab_size)
    logits, values = model.logits_and_values(ids, mask, position_ids=positions)
    assert tuple(values.shape) == ids.shape and float(np.abs(values.numpy()).max()) == 0.0  # zero-initialised
    assert tuple(logits.shape) == ids.shape + (CONFIGS["qwen2"].vocab_size,)


# ----------------------------------------------------------------------------- bfloat16

def bf16_against_fp32(folder, kind, fp32=None) -> dict:
    """One decoder in mixed bfloat16 (float32 variables, bfloat16 compute) and in float32 (`fp32`,
    else loaded from the folder), the same weights: the largest logit error relative to the largest
    logit, uncached and through the KV cache, and the dtypes."""
    import tensorflow as tf

    from tf_impl.architectures import build_model

    config = CONFIGS[kind]
    fp32 = fp32 if fp32 is not None else load_pretrained(folder)
    bf16 = build_model(config, dtype="mixed_bfloat16")
    assign_numpy_state_dict(bf16, to_numpy_state_dict(fp32), "fp32 weights")
    ids, mask, positions = left_padded(config.vocab_size)
    expected = fp32(ids, mask, position_ids=positions).numpy()
    got = bf16(ids, mask, position_ids=positions)
    cache = bf16.backbone.init_cache(ids.shape[0], ids.shape[1])
    step, _, _ = bf16.forward_with_cache(ids, mask, cache, 0, position_ids=positions)
    real = mask.astype(bool)
    return {"logits_dtype": got.dtype.name, "cache_dtype": cache[0][0].dtype.name,
            "variable_dtypes": sorted({w.dtype for w in bf16.weights}),
            "relative_error": float(np.abs(tf.cast(got, tf.float32).numpy() - expected)[real].max()
                                    / np.abs(expected[real]).max()),
            "cached_relative_error": float(np.abs(tf.cast(step, tf.float32).numpy() - expected)[real].max()
                                           / np.abs(expected[real]).max())}


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_mixed_bfloat16_decoders_build_and_run_close_to_float32(folders, keras_models, kind):
    """Bound: `conftest.bf16_relative_error_bound` for 2 layers (a pre-norm block rounds about as
    many times as the post-LN one it counts)."""
    result = bf16_result("test_decoders_keras", "bf16_against_fp32", str(folders[kind]), kind,
                         run_here=lambda: bf16_against_fp32(folders[kind], kind, keras_models(kind)))
    print(f"{kind} bf16 vs fp32:", json.dumps(result))
    assert result["logits_dtype"] == "bfloat16" and result["cache_dtype"] == "bfloat16"
    assert result["variable_dtypes"] == ["float32"]
    bound = bf16_relative_error_bound(2)
    assert 0 < result["relative_error"] <= bound, f"{kind}: {result['relative_error']:.3f} > {bound:.3f}"
    assert 0 < result["cached_relative_error"] <= bound, f"{kind}: {result['cached_relative_error']:.3f}"
