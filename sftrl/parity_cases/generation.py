"""Level 8, generation: greedy tokens with the KV cache against recomputing with the NumPy model."""

from __future__ import annotations

import numpy as np

from sftrl.parity import Case
from sftrl.parity_cases.common import EXACT, keras_policy, padded_ids, random_state, tiny_config, torch_sft
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


def greedy_reference(d):
    """Greedy decoding by recomputing the whole sequence with the NumPy model at every step."""
    config = tiny_config("causal")
    ids, mask = d["input_ids"], d["attention_mask"]
    new = []
    for _ in range(GENERATE_STEPS):
        position_ids = np.maximum(np.cumsum(mask, -1) - 1, 0)
        logits = ref.model_logits(d["state"], ids, build_attention_mask(mask, True), config, position_ids)
        token = logits[:, -1].argmax(-1)
        new.append(token)
        ids = np.concatenate([ids, token[:, None]], 1)
        mask = np.concatenate([mask, np.ones_like(token)[:, None]], 1)
    return {"tokens": np.stack(new, 1).astype(np.float64)}


def greedy_torch(d, dtype):
    model = torch_sft(tiny_config("causal"), d["state"], dtype)
    tokens = torch_generate.generate(model, d["input_ids"], d["attention_mask"], GENERATE_STEPS)
    return {"tokens": tokens.numpy().astype(np.float64)}


def greedy_keras(d, dtype):
    model = keras_policy(tiny_config("causal"), d["state"], dtype)
    tokens = tf_generate.generate(model, d["input_ids"], d["attention_mask"], GENERATE_STEPS)
    return {"tokens": tokens.numpy().astype(np.float64)}


CASES = [
    Case("generation.greedy", "generation",
         "greedy tokens: KV-cached decoding (torch, TF) vs recomputing with the NumPy model",
         generation_inputs, greedy_reference, greedy_torch, greedy_keras, tol=dict(EXACT),
         shows=(greedy_reference, torch_generate.generate, tf_generate.generate)),
]


_names = [c.name for c in CASES]
assert len(_names) == len(set(_names)), "duplicate parity case names"
