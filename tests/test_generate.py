"""Generation: PyTorch, TensorFlow and transformers give the same greedy tokens; the KV cache
changes speed, not tokens."""

import numpy as np
import pytest
import torch
import transformers

from shared.config import ModelConfig
from shared.data import collate
from shared.errors import ConfigError
from shared.generation import gumbel_noise
from tf_impl import generate as tf_generate
from tf_impl.convert import assign_numpy_state_dict, load_safetensors
from tf_impl.model import PolicyModel
from torch_impl import generate as torch_generate
from torch_impl.checkpoint import save_pretrained, state_dict_for_saving
from torch_impl.model import SFTModel

NEW = 12


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A causal model in torch, the same weights in Keras, and the folder they came from.

    A wide init (std 0.2) spreads the logits, so greedy choices are not near-ties that float32
    rounding could flip.
    """
    config = ModelConfig(vocab_size=61, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=40, attention_type="causal",
                         initializer_range=0.2)
    torch.manual_seed(0)
    model = SFTModel(config).eval()
    folder = tmp_path_factory.mktemp("causal")
    save_pretrained(model, folder)
    keras_model = PolicyModel(config)
    load_safetensors(keras_model, folder / "model.safetensors")
    return model, keras_model, folder


@pytest.fixture(scope="module")
def prompts():
    """60 left-padded prompts of 2 to 11 tokens."""
    rng = np.random.default_rng(0)
    sequences = [list(rng.integers(5, 61, size=n)) for n in rng.integers(2, 12, size=60)]
    batch = collate(sequences, pad_id=0, side="left")
    return batch["input_ids"], batch["attention_mask"]


def test_greedy_tokens_identical_everywhere(models, prompts):
    model, keras_model, folder = models
    input_ids, attention_mask = prompts
    cached = torch_generate.generate(model, input_ids, attention_mask, NEW).numpy()
    recomputed = torch_generate.generate(model, input_ids, attention_mask, NEW, use_cache=False).numpy()
    tf_cached = tf_generate.generate(keras_model, input_ids, attention_mask, NEW).numpy()
    tf_recomputed = tf_generate.generate(keras_model, input_ids, attention_mask, NEW, use_cache=False).numpy()
    tf_xla = tf_generate.generate(keras_model, input_ids, attention_mask, NEW, jit_compile=True).numpy()
    assert cached.shape == (60, NEW)
    np.testing.assert_array_equal(tf_cached, tf_xla)
    np.testing.assert_array_equal(cached, recomputed)
    np.testing.assert_array_equal(cached, tf_cached)
    np.testing.assert_array_equal(tf_cached, tf_recomputed)
    assert len(np.unique(cached)) > 5  # not one token repeated: the comparison means something

    hf = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    out = hf.generate(input_ids=torch.tensor(input_ids), attention_mask=torch.tensor(attention_mask),
                      max_new_tokens=NEW, do_sample=False, pad_token_id=0)
    np.testing.assert_array_equal(out[:, input_ids.shape[1]:].numpy(), cached)


def test_generation_stops_at_eos_and_pads_after(models, prompts):
    model, keras_model, folder = models
    input_ids, attention_mask = prompts
    free = torch_generate.generate(model, input_ids, attention_mask, NEW).numpy()
    values, counts = np.unique(free[:, 1:], return_counts=True)
    eos = int(values[np.argmax(counts)])  # a token that does occur, so rows really stop
    stopped = torch_generate.generate(model, input_ids, attention_mask, NEW, eos_id=eos).numpy()
    tf_stopped = tf_generate.generate(keras_model, input_ids, attention_mask, NEW, eos_id=eos).numpy()
    tf_xla_stopped = tf_generate.generate(keras_model, input_ids, attention_mask, NEW, eos_id=eos,
                                          jit_compile=True).numpy()
    np.testing.assert_array_equal(tf_xla_stopped, tf_stopped)
    np.testing.assert_array_equal(stopped, tf_stopped)
    rows_that_stop = 0
    for row_free, row in zip(free, stopped):
        hits = np.flatnonzero(row_free == eos)
        if len(hits):
            k = hits[0]
            rows_that_stop += 1
            np.testing.assert_array_equal(row[:k + 1], row_free[:k + 1])
            assert np.all(row[k + 1:] == 0)
        else:
            np.testing.assert_array_equal(row, row_free)
    assert rows_that_stop >= 10
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    out = hf.generate(input_ids=torch.tensor(input_ids), attention_mask=torch.tensor(attention_mask),
                      max_new_tokens=NEW, do_sample=False, pad_token_id=0, eos_token_id=eos)
    hf_new = out[:, input_ids.shape[1]:].numpy()
    hf_new = np.pad(hf_new, ((0, 0), (0, NEW - hf_new.shape[1])))
    np.testing.assert_array_equal(hf_new, stopped)


def test_sampling_is_seeded(models, prompts):
    model, keras_model, _ = models
    input_ids, attention_mask = prompts
    for generate, m in ((torch_generate.generate, model), (tf_generate.generate, keras_model)):
        a = np.asarray(generate(m, input_ids, attention_mask, NEW, do_sample=True, seed=1))
        b = np.asarray(generate(m, input_ids, attention_mask, NEW, do_sample=True, seed=1))
        c = np.asarray(generate(m, input_ids, attention_mask, NEW, do_sample=True, seed=2))
        greedy = np.asarray(generate(m, input_ids, attention_mask, NEW))
        top1 = np.asarray(generate(m, input_ids, attention_mask, NEW, do_sample=True, top_k=1, seed=3))
        np.testing.assert_array_equal(a, b)
        assert (a != c).mean() > 0.2
        np.testing.assert_array_equal(top1, greedy)
    # The compiled loop's seeded samples are reproducible, but XLA's stateless generator is not
    # TensorFlow's kernel (other numbers for the same seed): the same samples on both paths need
    # `noise`, as PPO's rollouts and the parity cases pass it.
    xla = [np.asarray(tf_generate.generate(keras_model, input_ids, attention_mask, NEW, do_sample=True, seed=s,
                                           jit_compile=True)) for s in (1, 1, 2)]
    np.testing.assert_array_equal(xla[0], xla[1])
    assert (xla[0] != xla[2]).mean() > 0.2
    noise = np.random.default_rng(0).gumbel(size=(len(input_ids), NEW, keras_model.config.vocab_size))
    stepwise, compiled = (np.asarray(tf_generate.generate(keras_model, input_ids, attention_mask, NEW, do_sample=True,
                                                          top_k=5, temperature=0.7, noise=noise, jit_compile=j))
                          for j in (False, True))
    np.testing.assert_array_equal(compiled, stepwise)


def test_tf_decoding_step_is_traced_once_not_per_step(models, prompts):
    _, keras_model, _ = models
    input_ids, attention_mask = prompts
    tf_generate.generate(keras_model, input_ids[:8], attention_mask[:8], NEW)
    step = tf_generate._step_function(keras_model)
    traces = step.experimental_get_tracing_count()
    tf_generate.generate(keras_model, input_ids[:8], attention_mask[:8], NEW)
    assert step.experimental_get_tracing_count() == traces  # same shapes: no new trace
    assert traces <= 4  # prefill and decode step (per batch shape), not one per token


def test_tf_compiled_loop_is_traced_for_shapes_not_per_step(models, prompts):
    """The whole-loop XLA decode traces once for every batch size, prompt length and number of new
    tokens (XLA still compiles each shape) and gives the tokens of the step-by-step path."""
    _, keras_model, _ = models
    input_ids, attention_mask = prompts
    shapes = [(8, 0, NEW), (5, 1, NEW - 1), (7, 2, NEW)]   # rows, prompt columns dropped, new tokens
    loop = tf_generate._loop_function(keras_model, False, 0, False, None)
    for rows, cut, new in shapes:
        ids, mask = input_ids[:rows, cut:], attention_mask[:rows, cut:]
        compiled = tf_generate.generate(keras_model, ids, mask, new, jit_compile=True)
        np.testing.assert_array_equal(compiled, tf_generate.generate(keras_model, ids, mask, new))
        assert loop.experimental_get_tracing_count() == 1   # whatever shapes earlier tests decoded


@pytest.mark.parametrize("module", [torch_generate, tf_generate])
def test_generation_argument_errors(models, prompts, module):
    model, keras_model, _ = models
    m = model if module is torch_generate else keras_model
    input_ids, attention_mask = prompts
    with pytest.raises(ValueError, match="left-padded"):
        module.generate(m, input_ids, np.fliplr(attention_mask).copy(), 4)
    with pytest.raises(ConfigError, match="max_new_tokens: prompt length 11 \\+ 30 new tokens exceeds"):
        module.generate(m, input_ids, attention_mask, 30)
    with pytest.raises(ConfigError, match="temperature"):
        module.generate(m, input_ids, attention_mask, 4, do_sample=True, temperature=0)


def test_greedy_completions_are_the_same_text_in_both_frameworks(tokenizer, builtin_data):
    """`greedy_completions` (one per framework, same name): text prompts in, completions cut at
    [SEP] out, the same in PyTorch and TensorFlow for the same weights; an early [SEP] ends the
    token list and batches of 7 give what one batch gives."""
    config = ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                         attention_type="causal", initializer_range=0.2, pad_token_id=tokenizer.pad_id)
    torch.manual_seed(3)
    model = SFTModel(config).eval()
    with torch.no_grad():  # make [SEP] likely, so some rows stop early
        model.cls.predictions.bias[tokenizer.sep_id] = 3.0
    keras_model = PolicyModel(config)
    assign_numpy_state_dict(keras_model, {k: v.numpy() for k, v in state_dict_for_saving(model).items()})
    prompts = [r["prompt"] for r in builtin_data["prompt.eval"]]
    texts, token_lists = torch_generate.greedy_completions(model, tokenizer, prompts, NEW)
    assert (texts, token_lists) == tf_generate.greedy_completions(keras_model, tokenizer, prompts, NEW)
    assert (texts, token_lists) == torch_generate.greedy_completions(model, tokenizer, prompts, NEW, batch_size=7)
    ended = [ids for ids in token_lists if ids[-1] == tokenizer.sep_id]
    assert 0 < len(ended) < len(prompts), len(ended)  # both kinds of row occur
    assert all(tokenizer.sep_id not in ids[:-1] for ids in token_lists)
    assert all(len(ids) == NEW for ids in token_lists if ids[-1] != tokenizer.sep_id)
    assert texts == [tokenizer.decode(ids) for ids in token_lists]


def test_gumbel_noise_is_numpys_gumbel_draw_for_draw():
    """The vectorised -log(-log(1 - u)) gives NumPy's `Generator.gumbel` draws. In float64 each of the
    two logs is within 1 ulp of the true value (NumPy's accuracy tests hold its log to that; C's log
    too), so NumPy's and C's differ by at most 2 ulps: the inner one's 2 ulps of y = -log(1 - u), a
    relative error of at most 2^-51, move the result by at most 2^-51, the outer one's by 2 ulps. In
    float32 (what the samplers use) these seeds' draws are equal: a float64 draw would have to lie
    within 1e-16 of a float32 rounding boundary to differ, about 1 draw in 10^8."""
    for seed in range(3):
        ours = gumbel_noise(np.random.default_rng(seed), (64, 512))
        assert ours.dtype == np.float32
        np.testing.assert_array_equal(ours, np.random.default_rng(seed).gumbel(size=(64, 512)).astype(np.float32))
        ours = gumbel_noise(np.random.default_rng(seed), (64, 512), "float64")
        theirs = np.random.default_rng(seed).gumbel(size=(64, 512))
        assert np.all(np.abs(ours - theirs) <= 2.0 ** -51 + 2 * np.spacing(np.abs(theirs)))


@pytest.mark.slow  # torch.compile's first compile: about half a minute on 2 cores
def test_torch_jit_compile_decodes_the_eager_tokens(models, prompts):
    """generate(jit_compile=True) runs the cached forward compiled by torch.compile: greedy tokens
    (with a stop at eos) and noise-driven samples are the eager path's; it compiles once per model."""
    model, _, _ = models
    input_ids, attention_mask = prompts
    eager = torch_generate.generate(model, input_ids, attention_mask, NEW, eos_id=7).numpy()
    compiled = torch_generate.generate(model, input_ids, attention_mask, NEW, eos_id=7, jit_compile=True).numpy()
    np.testing.assert_array_equal(compiled, eager)
    noise = np.random.default_rng(1).gumbel(size=(len(input_ids), NEW, model.config.vocab_size))
    sampled = [torch_generate.generate(model, input_ids, attention_mask, NEW, do_sample=True, noise=noise,
                                       jit_compile=flag).numpy() for flag in (False, True)]
    np.testing.assert_array_equal(sampled[1], sampled[0])
    assert (sampled[0] != eager).any()  # sampling chose other tokens: two different checks
    first = model._compiled_forward_with_cache
    torch_generate.generate(model, input_ids[:7], attention_mask[:7], NEW, jit_compile=True)
    assert model._compiled_forward_with_cache is first
