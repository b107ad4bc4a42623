"""Level 8, generation: greedy and sampled tokens, with and without the KV cache, against recomputing
with the NumPy model."""

from __future__ import annotations

import numpy as np

from sftrl.parity.cases.common import EXACT, keras_policy, padded_ids, random_state, tiny_config, torch_sft
from sftrl.parity.registry import Case
from shared import reference as ref
from shared.data import build_attention_mask
from tf_impl import generate as tf_generate
from torch_impl import generate as torch_generate


def generation_inputs(rng):
    config = tiny_config("causal")
    input_ids, attention_mask = padded_ids(rng, 16, list(rng.integers(2, 8, size=16)), 23, side="left")
    return {"state": random_state(config, rng, std=0.3), "input_ids": input_ids,
            "attention_mask": attention_mask}


GENERATE_STEPS = 8


def recomputed_tokens(d, pick):
    """Decoding by recomputing the whole sequence with the NumPy model at every step:
    pick(logits of the last position (B, V), step t) -> the tokens (B,). Returns (B, steps)."""
    config = tiny_config("causal")
    ids, mask = d["input_ids"], d["attention_mask"]
    new = []
    for t in range(GENERATE_STEPS):
        position_ids = np.maximum(np.cumsum(mask, -1) - 1, 0)
        logits = ref.model_logits(d["state"], ids, build_attention_mask(mask, True), config, position_ids)
        token = pick(logits[:, -1], t)
        new.append(token)
        ids = np.concatenate([ids, token[:, None]], 1)
        mask = np.concatenate([mask, np.ones_like(token)[:, None]], 1)
    return np.stack(new, 1).astype(np.float64)


def greedy_reference(d):
    """Greedy decoding by the NumPy model: the argmax at every step."""
    return {"tokens": recomputed_tokens(d, lambda logits, t: logits.argmax(-1))}


def greedy_torch(d, dtype):
    model = torch_sft(tiny_config("causal"), d["state"], dtype)
    tokens = torch_generate.generate(model, d["input_ids"], d["attention_mask"], GENERATE_STEPS)
    return {"tokens": tokens.numpy().astype(np.float64)}


def greedy_keras(d, dtype):
    model = keras_policy(tiny_config("causal"), d["state"], dtype)
    tokens = tf_generate.generate(model, d["input_ids"], d["attention_mask"], GENERATE_STEPS,
                                  jit_compile=True)  # the XLA-compiled step, as PPO's rollouts
    return {"tokens": tokens.numpy().astype(np.float64)}


SAMPLING = dict(temperature=0.7, top_k=5)


def sampled_inputs(rng):
    """`generation_inputs` plus the Gumbel noise (B, steps, V) that fixes every sample."""
    d = generation_inputs(rng)
    d["noise"] = rng.gumbel(size=(len(d["input_ids"]), GENERATE_STEPS, tiny_config().vocab_size))
    return d


def sampled_reference(d):
    """Sampling by the Gumbel-max trick with the NumPy model: token = argmax(logits / T + noise)
    over the top_k most likely tokens."""
    def sample(logits, t):
        logits = logits / SAMPLING["temperature"]                           # (B, V)
        kth = np.sort(logits, -1)[:, -SAMPLING["top_k"]][:, None]           # (B, 1)
        return np.where(logits < kth, -np.inf, logits + d["noise"][:, t]).argmax(-1)
    tokens = recomputed_tokens(d, sample)
    return {"tokens_cached": tokens, "tokens_recomputed": tokens}


def sampled_tokens(module, model, d):
    """The framework's `generate` with the case's noise, with and without the KV cache."""
    noise = d["noise"].astype(d["state"]["cls.predictions.bias"].dtype)
    return {f"tokens_{kind}": np.asarray(module.generate(
        model, d["input_ids"], d["attention_mask"], GENERATE_STEPS, do_sample=True, noise=noise,
        use_cache=kind == "cached", **SAMPLING)).astype(np.float64) for kind in ("cached", "recomputed")}


CASES = [
    Case("generation.greedy", "generation",
         "greedy tokens: KV-cached decoding (torch; TF with the XLA-compiled step) vs recomputing with the "
         "NumPy model",
         generation_inputs, greedy_reference, greedy_torch, greedy_keras, tol=dict(EXACT),
         shows=(greedy_reference, torch_generate.generate, tf_generate.generate)),
    Case("generation.sampled", "generation",
         "sampled tokens, temperature 0.7 and top-k 5, the same Gumbel noise: argmax(z / T + g) over the top k",
         sampled_inputs, sampled_reference,
         lambda d, dt: sampled_tokens(torch_generate, torch_sft(tiny_config("causal"), d["state"], dt), d),
         lambda d, dt: sampled_tokens(tf_generate, keras_policy(tiny_config("causal"), d["state"], dt), d),
         tol=dict(EXACT), shows=(sampled_reference, torch_generate.next_token, tf_generate.next_token)),
]


_names = [c.name for c in CASES]
assert len(_names) == len(set(_names)), "duplicate parity case names"
