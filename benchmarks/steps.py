"""The model configs, MLM batches and train steps the suites time, importing each framework only
where a step of that framework is built: `benchmarks.scaling` times one framework's step in a
process of its own, without the other framework's imports in its time or its memory."""

from __future__ import annotations

import numpy as np

from shared.config import ModelConfig
from shared.data import mask_tokens


def model_config(s, attention_type="bidirectional", positions=None):
    return ModelConfig(vocab_size=s["vocab"], hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                       num_attention_heads=s["heads"], intermediate_size=4 * s["hidden"],
                       max_position_embeddings=positions or max(2 * s["seq"], 64), attention_type=attention_type,
                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def mlm_batch(s, rng):
    ids = rng.integers(5, s["vocab"], size=(s["batch"], s["seq"]))
    masked, labels = mask_tokens(ids, np.ones_like(ids), {0, 1, 2, 3, 4}, 4, s["vocab"], rng)
    return masked, np.ones_like(ids), labels


def keras_train_step(model, loss_fn, jit_compile=False):
    """One AdamW step of a Keras model on (ids, mask, labels), as a tf.function (XLA-compiled with
    jit_compile=True), for timing."""
    import tf_impl  # noqa: F401  (TensorFlow, quietly)
    import keras
    import tensorflow as tf

    optimizer = keras.optimizers.AdamW(learning_rate=1e-4)
    optimizer.build(model.trainable_variables)

    @tf.function(jit_compile=jit_compile)
    def step(ids, mask, labels):
        with tf.GradientTape() as tape:
            logits = model(ids, mask, training=True) if mask is not None else model(ids, training=True)
            loss = loss_fn(logits, labels)
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables)]
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss
    return step


def torch_train_step(model, loss):
    """One AdamW step of `loss()` (a closure over the model and its batch), for timing."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss().backward()
        optimizer.step()
    return step
