"""Autoregressive generation with a fixed-size key/value cache. Mirrored by `torch_impl/generate.py`.

Prompts come left-padded (every prompt ends in the last column), so the new token of step t is
written at the same position P + t for the whole batch. Position ids count real tokens only
(cumsum of the attention mask - 1), so a padded prompt is read as its unpadded self -- the rule
`transformers`' `generate()` uses too.

The decoding step runs inside one `tf.function` whose inputs keep their shapes from step to
step (the cache is fixed-size, the step index is a tensor), so it is traced once per batch
shape, not once per step.
"""

from __future__ import annotations

import weakref

import numpy as np
import tensorflow as tf

from shared.generation import check_generation_inputs, completion_ids, prompt_batches

_STEP_FUNCTIONS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


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


def _step_function(model, jit_compile):
    """The model's decoding step as a tf.function, XLA-compiled or not (one of each per model,
    kept while the model lives)."""
    steps = _STEP_FUNCTIONS.setdefault(model, {})
    if jit_compile not in steps:
        @tf.function(reduce_retracing=True, jit_compile=jit_compile)
        def step(input_ids, mask, cache, cache_index, position_ids):
            logits, cache, _ = model.forward_with_cache(input_ids, mask, cache, cache_index, position_ids)
            return logits[:, -1], cache                                     # (B, V), the last position's
        steps[jit_compile] = step
    return steps[jit_compile]


def generate(model, input_ids, attention_mask, max_new_tokens, do_sample=False, temperature=1.0,
             top_k=0, seed=None, eos_id=None, use_cache=True, noise=None, jit_compile=False):
    """New tokens (B, max_new_tokens) continuing left-padded prompts (B, P).

    A row stops at `eos_id` (kept) and is padded with the model's pad id after it.
    use_cache=False recomputes the whole sequence at every step (the slow reference path).
    noise: Gumbel noise (B, max_new_tokens, V) that fixes the samples (see `next_token`).
    jit_compile: XLA-compile the cached decoding step (one compile for the prefill's shape, one
    for the one-token step's; worth it when many tokens are decoded at one shape).
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
    finished = tf.zeros([B], tf.bool)
    step = _step_function(model, jit_compile)
    cache = model.backbone.init_cache(B, Tmax) if use_cache else None
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
