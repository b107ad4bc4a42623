"""Autoregressive generation with a fixed-size key/value cache. Mirrored by `tf_impl/generate.py`.

Prompts come left-padded (every prompt ends in the last column), so the new token of step t is
written at the same position P + t for the whole batch. Position ids count real tokens only
(cumsum of the attention mask - 1), so a padded prompt is read as its unpadded self -- the rule
`transformers`' `generate()` uses too.
"""

from __future__ import annotations

import torch

from shared.generation import check_generation_inputs, completion_ids, prompt_batches


def next_token(logits, do_sample, temperature, top_k, generator=None, noise=None):
    """Pick one token per row from logits (B, V): argmax, or a sample of softmax(logits / T)
    restricted to the top_k most likely tokens (top_k = 0: all).

    noise: optional Gumbel(0, 1) noise (B, V); then the sample is argmax(logits / T + noise)
    (the Gumbel-max trick), so a caller that supplies the noise decides the sample exactly.
    """
    if not do_sample:
        return logits.argmax(-1)                                            # (B,)
    logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]              # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if noise is not None:
        return (logits + noise).argmax(-1)
    probs = torch.softmax(logits.float(), dim=-1)                           # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


@torch.no_grad()
def generate(model, input_ids, attention_mask, max_new_tokens, do_sample=False, temperature=1.0,
             top_k=0, seed=None, eos_id=None, use_cache=True, noise=None, jit_compile=False):
    """New tokens (B, max_new_tokens) continuing left-padded prompts (B, P).

    A row stops at `eos_id` (kept) and is padded with the model's pad id after it.
    use_cache=False recomputes the whole sequence at every step (the slow reference path).
    noise: Gumbel noise (B, max_new_tokens, V) that fixes the samples (see `next_token`).
    jit_compile: run the cached forward (prefill and each step) compiled by `torch.compile`,
    once per model, with dynamic shapes (the cache index, batch and lengths do not recompile).
    The first call compiles (tens of seconds on a CPU); the tokens are the eager path's.
    """
    config = model.config
    device = next(model.parameters()).device
    input_ids = torch.as_tensor(input_ids, device=device)
    attention_mask = torch.as_tensor(attention_mask, device=device).long()
    check_generation_inputs(config, tuple(input_ids.shape), bool(attention_mask[:, -1].all()),
                            max_new_tokens, temperature, top_k)
    was_training = model.training
    model.eval()
    B, P = input_ids.shape
    Tmax = P + max_new_tokens
    pad_id = config.pad_token_id
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None

    ids = torch.cat([input_ids, torch.full((B, max_new_tokens), pad_id, dtype=input_ids.dtype, device=device)], 1)
    mask = torch.cat([attention_mask, torch.zeros(B, max_new_tokens, dtype=torch.long, device=device)], 1)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)                      # (B, Tmax) for the prompt part
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    cache = model.backbone.init_cache(B, Tmax) if use_cache else None
    forward_with_cache = _compiled_forward(model) if jit_compile else model.forward_with_cache

    # Prefill: the whole prompt in one pass fills the cache at positions 0 .. P-1.
    if use_cache:
        logits, cache, _ = forward_with_cache(input_ids, mask, cache, 0, position_ids[:, :P])  # (B, P, V)
    else:
        logits = model(input_ids, attention_mask, position_ids=position_ids[:, :P])  # (B, P, V)
    for t in range(max_new_tokens):
        last_logits = logits[:, -1]                                         # (B, V): the next token's
        step_noise = (None if noise is None
                      else torch.as_tensor(noise[:, t], dtype=last_logits.dtype, device=device))
        token = next_token(last_logits, do_sample, temperature, top_k, generator, step_noise)  # (B,)
        token = torch.where(finished, torch.full_like(token, pad_id), token)
        ids[:, P + t] = token
        if eos_id is not None:
            finished |= token == eos_id
        if t == max_new_tokens - 1 or bool(finished.all()):
            break
        # Decode: one new token at position P + t, attending to everything written so far.
        mask[:, P + t] = 1
        position = position_ids[:, P - 1:P] + t + 1                         # (B, 1)
        if use_cache:
            logits, cache, _ = forward_with_cache(token[:, None], mask, cache, P + t, position)
        else:
            positions = torch.cat([position_ids[:, :P], position_ids[:, P - 1:P] + torch.arange(1, t + 2, device=device)], 1)
            logits = model(ids[:, :P + t + 1], mask[:, :P + t + 1], position_ids=positions)
    if was_training:
        model.train()
    return ids[:, P:]


def _compiled_forward(model):
    """model.forward_with_cache compiled by torch.compile, kept on the model: compiled once."""
    if getattr(model, "_compiled_forward_with_cache", None) is None:
        model._compiled_forward_with_cache = torch.compile(model.forward_with_cache, dynamic=True)
    return model._compiled_forward_with_cache


@torch.no_grad()
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
        for row in new.tolist():
            token_lists.append(completion_ids(row, tokenizer.sep_id))
            texts.append(tokenizer.decode(token_lists[-1]))
    return texts, token_lists
