"""Level 7, a training run: AdamW steps of the completion-only loss from the same weights and batches."""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
import torch

from sftrl.parity import GRADIENT_TOL, Case
from sftrl.parity_cases.common import T, TF, keras_policy, np_out, padded_ids, random_state, tiny_config, torch_sft
from sftrl.parity_cases.optimizer import ADAM
from shared.constants import IGNORE_INDEX
from tf_impl import model as tf_model
from torch_impl.checkpoint import state_dict_for_saving


TRAIN_STEPS = 20


def training_inputs(rng):
    config = tiny_config("causal")
    batches = []
    for _ in range(TRAIN_STEPS):
        input_ids, attention_mask = padded_ids(rng, 4, list(rng.integers(5, 11, size=4)), 23)
        labels = np.where(attention_mask == 1, input_ids, IGNORE_INDEX)
        labels[:, :3] = IGNORE_INDEX  # completion-only: the first tokens are the prompt
        batches.append((input_ids, attention_mask, labels))
    return {"state": random_state(config, rng), "batches": batches}


def training_torch(d, dtype):
    model = torch_sft(tiny_config("causal"), d["state"], dtype).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=ADAM["lr"], betas=(ADAM["beta1"], ADAM["beta2"]),
                                  eps=ADAM["eps"], weight_decay=ADAM["weight_decay"])
    losses = []
    for input_ids, attention_mask, labels in d["batches"]:
        loss = model(T(input_ids), T(attention_mask), T(labels))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return {"loss_curve": np.array(losses), **np_out(**state_dict_for_saving(model))}


def training_keras(d, dtype):
    config = tiny_config("causal")
    model = keras_policy(config, d["state"], dtype)
    optimizer = keras.optimizers.AdamW(
        learning_rate=ADAM["lr"], beta_1=np.float64(ADAM["beta1"]), beta_2=np.float64(ADAM["beta2"]),
        epsilon=ADAM["eps"], weight_decay=ADAM["weight_decay"])
    losses = []
    for step, (input_ids, attention_mask, labels) in enumerate(d["batches"], start=1):
        with tf.GradientTape() as tape:
            logits = model(input_ids, attention_mask, training=True)
            loss = tf_model.lm_loss(logits, TF(labels), causal=True)
        # Embedding gradients arrive as IndexedSlices; Keras' Adam then updates only the looked-up
        # rows (and sums repeated indices differently), unlike torch's dense update: densify.
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables)]
        optimizer.epsilon = ADAM["eps"] * math.sqrt(1.0 - ADAM["beta2"] ** step)  # torch's placement
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        losses.append(float(loss))
    from tf_impl.convert import to_numpy_state_dict
    return {"loss_curve": np.array(losses), **to_numpy_state_dict(model)}


def is_key_bias(name):
    return name.endswith("attention.self.key.bias")


def without_key_bias(run):
    return lambda d, dtype: {k: v for k, v in run(d, dtype).items() if not is_key_bias(k)}


def only_key_bias(run):
    return lambda d, dtype: {k: v for k, v in run(d, dtype).items() if is_key_bias(k)}


CASES = [
    Case("training.sft_20_steps", "training",
         f"{TRAIN_STEPS} AdamW steps of the completion-only loss from the same weights and batches",
         training_inputs, None, without_key_bias(training_torch), without_key_bias(training_keras),
         tol=dict(GRADIENT_TOL),
         note="Dropout off (rate 0); Keras AdamW matched to torch as in `optimizer.adamw`. Outputs: "
              "the loss curve and every final weight except the attention key biases, which are "
              "the case `training.key_bias_round_off` (their true gradient is zero).",
         shows=(None, training_torch, training_keras)),
    Case("training.key_bias_round_off", "training",
         "d loss / d b_K = 0: softmax(q.(k + b_K)) = softmax(q.k) since q.b_K is the same for every key",
         training_inputs, None, only_key_bias(training_torch), only_key_bias(training_keras),
         tol={"float32": 2 * ADAM["lr"] * TRAIN_STEPS, "float64": 1e-10}, min_error={"float32": 1e-5},
         note="Known difference: the attention key bias shifts every score of a query by the same "
              "amount, so its exact gradient is zero and what autograd returns is round-off. Adam "
              "divides by sqrt(v) + eps, turning float32 round-off (~1e-9, not small next to "
              "eps = 1e-8) into steps of up to lr, in directions that differ between frameworks. The matched "
              "variant is this case's float64 row: there the round-off is ~1e-17, far below eps, "
              "and the biases agree to 1e-10.",
         shows=(None, training_torch, training_keras)),
]
