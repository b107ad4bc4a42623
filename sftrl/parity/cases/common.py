"""Helpers every level uses: tensors in and out, the tiny model config, seeded weights."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import torch

from shared.config import ModelConfig
from shared.data import collate
from tf_impl import model as tf_model
from tf_impl.convert import assign_numpy_state_dict
from torch_impl import model as torch_model
from torch_impl.checkpoint import load_state_dict_strict, state_dict_for_saving


EXACT = {"float32": 0.0, "float64": 0.0}


def T(x):
    """NumPy -> torch tensor, dtype kept."""
    return torch.as_tensor(np.asarray(x))


def TF(x):
    """NumPy -> TensorFlow tensor, dtype kept."""
    return tf.constant(np.asarray(x))


def np_out(**outputs):
    """Outputs as NumPy arrays, whichever framework made them."""
    def convert(v):
        if isinstance(v, torch.Tensor):
            return v.detach().cpu().numpy()
        if isinstance(v, (tf.Tensor, tf.Variable)):
            return v.numpy()
        return np.asarray(v)
    return {k: convert(v) for k, v in outputs.items()}


TINY = dict(vocab_size=23, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=32, max_position_embeddings=32, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0)


def tiny_config(attention_type="bidirectional") -> ModelConfig:
    """The model every model-level case uses: 2 layers, 4 heads of 4, no dropout."""
    return ModelConfig(**TINY, attention_type=attention_type)


def random_state(config, rng, std=0.1):
    """Seeded weights for every parameter (HF names): N(0, std), LayerNorm scales around 1."""
    shapes = {k: tuple(v.shape) for k, v in state_dict_for_saving(torch_model.SFTModel(config)).items()}
    state = {}
    for name, shape in shapes.items():
        noise = rng.normal(0.0, std, size=shape)
        state[name] = 1.0 + noise if name.endswith("LayerNorm.weight") else noise
    return state


def torch_sft(config, state, dtype, with_value_head=False):
    model = torch_model.SFTModel(config, with_value_head)
    model = model.double() if dtype == "float64" else model
    load_state_dict_strict(model, {k: T(v) for k, v in state.items()}, "parity")
    return model.eval()


def keras_policy(config, state, dtype, with_value_head=False):
    model = tf_model.PolicyModel(config, with_value_head, dtype=dtype)
    assign_numpy_state_dict(model, state, "parity")
    return model


def padded_ids(rng, batch, lengths, vocab, side="right"):
    sequences = [list(rng.integers(5, vocab, size=n)) for n in lengths[:batch]]
    b = collate(sequences, pad_id=0, side=side)
    return b["input_ids"], b["attention_mask"]
