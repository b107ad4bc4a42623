"""Level 3, a transformer block, the whole model's logits, and every layer inside it."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import torch

from sftrl.parity import Case
from sftrl.parity_cases.common import T, TF, keras_policy, np_out, padded_ids, random_state, tiny_config, torch_sft
from shared import reference as ref
from shared.data import build_attention_mask
from tf_impl import model as tf_model
from tf_impl.convert import assign_numpy_state_dict
from torch_impl import model as torch_model


def block_inputs(rng):
    config = tiny_config()
    state = random_state(config, rng)
    prefix = "bert.encoder.layer.0."
    block = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    attention_mask = np.array([[1] * 6, [1] * 3 + [0] * 3])
    return {"x": rng.normal(size=(2, 6, 16)), "params": block,
            "mask": build_attention_mask(attention_mask, causal=False)}


def block_torch(d, dtype):
    block = torch_model.TransformerBlock(tiny_config()).to(getattr(torch, dtype)).eval()
    block.load_state_dict({k: T(v) for k, v in d["params"].items()}, strict=True)
    return np_out(y=block(T(d["x"]), T(d["mask"]))[0])


def block_keras(d, dtype):
    block = tf_model.TransformerBlock(tiny_config(), name="block", dtype=dtype)
    block(TF(d["x"]), TF(d["mask"]))  # build
    assign_numpy_state_dict(block, d["params"], "parity")
    return np_out(y=block(TF(d["x"]), TF(d["mask"]))[0])


def model_inputs(attention_type):
    def make(rng):
        config = tiny_config(attention_type)
        input_ids, attention_mask = padded_ids(rng, 3, [9, 6, 4], 23)
        return {"state": random_state(config, rng), "input_ids": input_ids,
                "mask": build_attention_mask(attention_mask, config.is_causal),
                "attention_type": attention_type}
    return make


def model_case(attention_type):
    def config(d):
        return tiny_config(d["attention_type"])
    return Case(
        f"model.{attention_type}", "model", "logits of embeddings -> N post-LN blocks -> tied LM head",
        model_inputs(attention_type),
        lambda d: {"logits": ref.model_logits(d["state"], d["input_ids"], d["mask"], config(d))},
        lambda d, dt: np_out(logits=torch_sft(config(d), d["state"], dt)(T(d["input_ids"]), T(d["mask"]))),
        lambda d, dt: np_out(logits=keras_policy(config(d), d["state"], dt)(d["input_ids"], d["mask"])),
        shows=(ref.model_logits, torch_model.SFTModel, tf_model.PolicyModel))


def every_layer_torch(config, d, dtype):
    """Each block of our PyTorch model run in turn: its output and its attention probabilities."""
    bert = torch_sft(config, d["state"], dtype).bert
    ids = T(d["input_ids"])
    x = bert.embeddings(ids, position_ids=torch.arange(ids.shape[1]).expand_as(ids), token_type_ids=0 * ids)
    hidden_states, attentions = [x], []
    for block in bert.encoder.layer:
        x, weights, _ = block(hidden_states[-1], T(d["mask"]), output_attentions=True)
        hidden_states.append(x)
        attentions.append(weights)
    return hidden_states, attentions


def every_layer_keras(config, d, dtype):
    """The same walk through our Keras model."""
    bert = keras_policy(config, d["state"], dtype).bert
    ids = TF(d["input_ids"].astype(np.int32))
    x = bert.embeddings(ids, position_ids=tf.broadcast_to(tf.range(ids.shape[1]), ids.shape), token_type_ids=0 * ids)
    hidden_states, attentions = [x], []
    for block in bert.encoder.layer:
        x, weights, _ = block(hidden_states[-1], TF(d["mask"]), output_attentions=True)
        hidden_states.append(x)
        attentions.append(weights)
    return hidden_states, attentions


def every_layer_case(quantity, attention_type):
    """`model.hidden_states.*`: the embeddings' output and each block's (B, T, C);
    `model.attention_probs.*`: each layer's attention probabilities (B, H, T, T), every head."""
    which = 0 if quantity == "hidden_states" else 1
    name = "layer" if which == 0 else "attention"

    def outputs(pair):
        return {f"{name}{i}": value for i, value in enumerate(pair[which])}
    config = tiny_config(attention_type)
    formula = ("h_0 = LN(embeddings), h_l = Block_l(h_(l-1)), every l" if which == 0 else
               "softmax(Q K^T / sqrt(d_k)) of every head of every layer, padding masked")
    return Case(
        f"model.{quantity}.{attention_type}", "model", formula, model_inputs(attention_type),
        lambda d: outputs(ref.model_hidden_states(d["state"], d["input_ids"], d["mask"], config)),
        lambda d, dt: np_out(**outputs(every_layer_torch(config, d, dt))),
        lambda d, dt: np_out(**outputs(every_layer_keras(config, d, dt))),
        shows=(ref.model_hidden_states, torch_model.TransformerBlock, tf_model.TransformerBlock))


CASES = [
    Case("transformer_block", "block", "h = LN(x + MHA(x)); y = LN(h + W_2 GELU(W_1 h))", block_inputs,
         lambda d: {"y": ref.transformer_block(d["x"], d["params"], "", 4, d["mask"])[0]},
         block_torch, block_keras,
         shows=(ref.transformer_block, torch_model.TransformerBlock, tf_model.TransformerBlock)),
    model_case("bidirectional"),
    model_case("causal"),
    *(every_layer_case(quantity, attention_type) for quantity in ("hidden_states", "attention_probs")
      for attention_type in ("bidirectional", "causal")),
]
