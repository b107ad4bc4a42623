"""Autoregressive generation with a fixed-size key/value cache. Mirrored by `torch_impl/generate.py`.

Prompts come left-padded (every prompt ends in the last column), so the new token of step t is
written at the same position P + t for the whole batch. Position ids count real tokens only
(cumsum of the attention mask - 1), so a padded prompt is read as its unpadded self -- the rule
`transformers`' `generate()` uses too.

Two ways to run the cached decode, the same tokens either way:

* `jit_compile=True`: the whole decode -- prefill, every step's sampling, cache write and the stop
  at `eos_id` -- is one XLA program around a `tf.while_loop` (as keras-hub compiles its
  `generate`), so no token pays a round trip to Python. Compiled once per batch shape.
* `jit_compile=False`: a Python loop around one `tf.function` step whose inputs keep their shapes
  from step to step (the cache is fixed-size, the step index is a tensor), traced once per batch
  shape; each token is visible to Python (the gymnasium env steps this way).
"""

from __future__ import annotations

import weakref

import numpy as np
import tensorflow as tf

from shared.generation import check_generation_inputs, completion_ids, prompt_batches

_STEP_FUNCTIONS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_LOOP_FUNCTIONS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def next_token(logits, do_sample, temperature, top_k, seed=None, noise=None):
    """Pick one token per row from logits (B, V): argmax, or a sample of softmax(logits / T)
    restricted to the top_k most likely tokens (top_k = 0: all). `seed` is a stateless-RNG
    seed pair, so the same seed gives the same tokens.

    noise: optional Gumbel(0, 1) noise (B, V); then the sample is argmax(logits / T + noise)
    (the Gumbel-max trick), so a caller that supplies the noise decides the sample exactly.
    """
    if logits.dtype in (tf.bfloat16, tf.float16):  # mixed precision: choose in float32
        logits = tf.cast(logits, tf.float32)
    if not do_sample:
        return tf.argmax(logits, -1, output_type=tf.int32)                 # (B,)
    logits = logits / temperature
    if top_k:
        kth = tf.math.top_k(logits, top_k).values[:, -1:]                   # (B, 1)
        logits = tf.where(logits < kth, tf.cast(-np.inf, logits.dtype), logits)
    if noise is not None:
        return tf.argmax(logits + tf.cast(noise, logits.dtype), -1, output_type=tf.int32)
    return tf.squeeze(tf.random.stateless_categorical(tf.cast(logits, tf.float32), 1, seed,
                                                      dtype=tf.int32), 1)


def _step_function(model):
    """The model's decoding step as a tf.function (one per model, kept while the model lives)."""
    if model not in _STEP_FUNCTIONS:
        @tf.function(reduce_retracing=True)
        def step(input_ids, mask, cache, cache_index, position_ids):
            logits, cache, _ = model.forward_with_cache(input_ids, mask, cache, cache_index, position_ids)
            return logits[:, -1], cache                                     # (B, V), the last position's
        _STEP_FUNCTIONS[model] = step
    return _STEP_FUNCTIONS[model]


def _noise_dtype(model):
    """The dtype Gumbel noise is added in: the logits' (float64 for a float64 model, else float32)."""
    return tf.float64 if model.compute_dtype == "float64" else tf.float32


def _loop_function(model, do_sample, top_k, has_noise, eos_id):
    """The whole cached decode as one XLA-compiled tf.function (one per model and setting of the
    Python-level choices; each traces once per batch shape)."""
    loops = _LOOP_FUNCTIONS.setdefault(model, {})
    key = (do_sample, top_k, has_noise, eos_id)
    if key in loops:
        return loops[key]
    pad_id = model.config.pad_token_id
    # One trace for every batch size, prompt length and number of new tokens (XLA still compiles
    # each shape): the inputs' sizes are left open, the cache's heads and head size are the model's.
    ids = tf.TensorSpec([None, None], tf.int32)
    cache_spec = [tuple(tf.TensorSpec([None, t.shape[1], None, t.shape[3]], t.dtype) for t in layer)
                  for layer in model.backbone.init_cache(1, 1)]
    signature = [ids, ids, ids, cache_spec, tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.int32),
                 tf.TensorSpec([None, None, None], _noise_dtype(model))]

    @tf.function(input_signature=signature, jit_compile=True)
    def decode(input_ids, mask, position_ids, cache, temperature, seed_base, noise):
        B, P = tf.shape(input_ids)[0], tf.shape(input_ids)[1]              # dynamic: one trace for every shape
        N = tf.shape(mask)[1] - P                                           # max_new_tokens

        def choose(last_logits, t, finished):
            step_noise = noise[:, t] if has_noise else None
            token = next_token(last_logits, do_sample, temperature, top_k, tf.stack([seed_base, t]), step_noise)
            return tf.where(finished, tf.fill([B], pad_id), token)          # (B,)

        # Prefill: the whole prompt in one pass fills the cache at positions 0 .. P-1.
        logits, cache, _ = model.forward_with_cache(input_ids, mask, cache, tf.constant(0), position_ids[:, :P])
        tokens = tf.fill([B, N], pad_id)                                    # (B, N)
        finished = tf.zeros([B], tf.bool)

        def not_done(t, last_logits, cache, mask, tokens, finished):
            return (t < N - 1) & ~tf.reduce_all(finished)

        def decode_one(t, last_logits, cache, mask, tokens, finished):
            token = choose(last_logits, t, finished)
            tokens = tf.where(tf.range(N)[None, :] == t, token[:, None], tokens)
            if eos_id is not None:
                finished = finished | (token == eos_id)
            # One new token at position P + t, attending to everything written so far.
            mask = tf.maximum(mask, tf.one_hot(P + t, P + N, dtype=mask.dtype)[None, :])
            position = position_ids[:, P - 1:P] + t + 1                     # (B, 1)
            logits, cache, _ = model.forward_with_cache(token[:, None], mask, cache, P + t, position)
            return t + 1, logits[:, -1], cache, mask, tokens, finished

        t, last_logits, cache, mask, tokens, finished = tf.while_loop(
            not_done, decode_one, (tf.constant(0), logits[:, -1], cache, mask, tokens, finished))
        # The last token needs no forward pass after it (rows all finished: it is padding).
        token = choose(last_logits, t, finished)
        return tf.where(tf.range(N)[None, :] == t, token[:, None], tokens)

    loops[key] = decode
    return decode


def _generate_compiled(model, input_ids, mask, position_ids, do_sample, temperature, top_k, seed_base, eos_id,
                       noise):
    """`generate` with jit_compile=True: the whole decode in the model's compiled loop."""
    B, Tmax = mask.shape
    decode = _loop_function(model, do_sample, int(top_k), noise is not None, eos_id)
    noise = tf.zeros([B, 0, 0], _noise_dtype(model)) if noise is None else tf.cast(noise, _noise_dtype(model))
    return decode(input_ids, mask, position_ids, model.backbone.init_cache(B, Tmax),
                  tf.constant(temperature, tf.float32), tf.constant(seed_base, tf.int32), noise)


def generate(model, input_ids, attention_mask, max_new_tokens, do_sample=False, temperature=1.0,
             top_k=0, seed=None, eos_id=None, use_cache=True, noise=None, jit_compile=False):
    """New tokens (B, max_new_tokens) continuing left-padded prompts (B, P).

    A row stops at `eos_id` (kept) and is padded with the model's pad id after it.
    use_cache=False recomputes the whole sequence at every step (the slow reference path).
    noise: Gumbel noise (B, max_new_tokens, V) that fixes the samples (see `next_token`).
    jit_compile: decode in one XLA-compiled loop (with the cache; see the module's docstring), one
    compile per batch shape. Greedy tokens and samples drawn with `noise` are the step path's;
    samples from `seed` alone are reproducible but others (XLA's generator is not TF's kernel).
    """
    config = model.config
    input_ids = tf.cast(tf.convert_to_tensor(input_ids), tf.int32)
    attention_mask = tf.cast(tf.convert_to_tensor(attention_mask), tf.int32)
    check_generation_inputs(config, tuple(input_ids.shape), bool(tf.reduce_all(attention_mask[:, -1] == 1)),
                            max_new_tokens, temperature, top_k)
    B, P = input_ids.shape
    Tmax = P + max_new_tokens
    pad_id = config.pad_token_id
    seed_base = 0 if seed is None else int(seed)

    mask = tf.concat([attention_mask, tf.zeros([B, max_new_tokens], tf.int32)], 1)  # (B, Tmax)
    position_ids = tf.maximum(tf.cumsum(mask, -1) - 1, 0)                  # (B, Tmax) for the prompt part
    if use_cache and jit_compile:
        return _generate_compiled(model, input_ids, mask, position_ids, do_sample, temperature, top_k, seed_base,
                                  eos_id, noise)
    finished = tf.zeros([B], tf.bool)
    cache = model.backbone.init_cache(B, Tmax) if use_cache else None
    step = _step_function(model)
    new_tokens = []

    # Prefill: the whole prompt in one pass fills the cache at positions 0 .. P-1.
    if use_cache:
        last_logits, cache = step(input_ids, mask, cache, tf.constant(0), position_ids[:, :P])  # (B, V)
    else:
        logits = model(input_ids, attention_mask, position_ids=position_ids[:, :P])  # (B, P, V)
        last_logits = logits[:, -1]                                         # (B, V): the next token's
    for t in range(max_new_tokens):
        step_noise = None if noise is None else noise[:, t]
        token = next_token(last_logits, do_sample, temperature, top_k, [seed_base, t], step_noise)  # (B,)
        token = tf.where(finished, tf.fill([B], pad_id), token)
        new_tokens.append(token)
        if eos_id is not None:
            finished = finished | (token == eos_id)
        if t == max_new_tokens - 1 or bool(tf.reduce_all(finished)):
            break
        # Decode: one new token at position P + t, attending to everything written so far.
        written = tf.one_hot(P + t, Tmax, dtype=tf.int32)[None, :]          # (1, Tmax)
        mask = tf.maximum(mask, written)
        position = position_ids[:, P - 1:P] + t + 1                         # (B, 1)
        if use_cache:
            last_logits, cache = step(token[:, None], mask, cache, tf.constant(P + t), position)
        else:
            so_far = tf.concat([input_ids, tf.stack(new_tokens, 1)], 1)    # (B, P + t + 1)
            positions = tf.concat([position_ids[:, :P], position_ids[:, P - 1:P] + tf.range(1, t + 2)[None]], 1)
            logits = model(so_far, mask[:, :P + t + 1], position_ids=positions)  # (B, P + t + 1, V)
            last_logits = logits[:, -1]
    out = tf.stack(new_tokens, 1)                                           # (B, steps)
    out = tf.pad(out, [[0, 0], [0, max_new_tokens - out.shape[1]]], constant_values=pad_id)
    return out


def greedy_completions(model, tokenizer, prompts, max_new_tokens, batch_size=64, max_prompt_length=None):
    """Greedy completions of text prompts: (texts, token-id lists up to and including [SEP]).

    Each prompt is `[CLS] prompt [SEP]`, cut to leave room for max_new_tokens in the position
    table (and to max_prompt_length), left-padded in batches of batch_size.
    """
    room = model.config.max_position_embeddings - max_new_tokens
    room = room if max_prompt_length is None else min(room, max_prompt_length)
    texts, token_lists = [], []
    for batch in prompt_batches(tokenizer, prompts, room, batch_size):
        new = generate(model, batch["input_ids"], batch["attention_mask"], max_new_tokens, eos_id=tokenizer.sep_id)
        for row in new.numpy().tolist():
            token_lists.append(completion_ids(row, tokenizer.sep_id))
            texts.append(tokenizer.decode(token_lists[-1]))
    return texts, token_lists
