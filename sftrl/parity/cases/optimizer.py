"""Level 6, one AdamW step."""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
import torch

from sftrl.parity.cases.common import T, TF, np_out
from sftrl.parity.registry import GRADIENT_TOL, Case
from shared import reference as ref


# lr and weight decay are powers of two, exact in float32: Keras keeps the learning rate in a
# float32 variable and casts the weight decay through float32, so values such as 1e-2 would
# already differ from torch's float64 ones by ~2e-10 relative.
ADAM = dict(lr=2.0 ** -7, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=2.0 ** -7)


def adam_inputs(rng):
    # Small gradients: there sqrt(v_hat) is close to eps and the epsilon placement shows.
    return {"param": rng.normal(size=(6, 5)),
            "grads": np.stack([rng.normal(size=(6, 5)) * s for s in (1e-2, 1e-5, 1e-4)])}


def adam_reference(d):
    param, m, v = d["param"], np.zeros_like(d["param"]), np.zeros_like(d["param"])
    for step, grad in enumerate(d["grads"], start=1):
        param, m, v = ref.adamw_step(param, grad, m, v, step, **ADAM)
    return {"param": param}


def adam_torch(d, dtype):
    param = T(d["param"]).clone().requires_grad_(True)
    optimizer = torch.optim.AdamW([param], lr=ADAM["lr"], betas=(ADAM["beta1"], ADAM["beta2"]),
                                  eps=ADAM["eps"], weight_decay=ADAM["weight_decay"])
    for grad in d["grads"]:
        param.grad = T(grad)
        optimizer.step()
    return np_out(param=param)


def keras_adamw(match_torch: bool):
    """keras.optimizers.AdamW, either as it comes or matched to torch.optim.AdamW.

    Keras adds epsilon to sqrt(v) ("epsilon hat" of Kingma & Ba), torch to sqrt(v_hat) =
    sqrt(v) / sqrt(1 - beta2^t); the two agree when Keras' epsilon is eps * sqrt(1 - beta2^t),
    reset before every step. Betas are passed as float64 numbers: Keras casts Python floats
    through float32 (tf.cast of a Python float), which alone costs ~1e-5 relative in float64.
    """
    def run(d, dtype):
        param = tf.Variable(d["param"])
        optimizer = keras.optimizers.AdamW(
            learning_rate=ADAM["lr"], beta_1=np.float64(ADAM["beta1"]), beta_2=np.float64(ADAM["beta2"]),
            epsilon=ADAM["eps"], weight_decay=ADAM["weight_decay"])
        for step, grad in enumerate(d["grads"], start=1):
            if match_torch:
                optimizer.epsilon = ADAM["eps"] * math.sqrt(1.0 - ADAM["beta2"] ** step)
            optimizer.apply_gradients([(TF(grad), param)])
        return np_out(param=param)
    return run


CASES = [
    Case("optimizer.adamw", "optimizer",
         "theta -= lr (m_hat / (sqrt(v_hat) + eps) + wd theta), three steps", adam_inputs,
         adam_reference, adam_torch, keras_adamw(match_torch=True), tol=dict(GRADIENT_TOL),
         note="Matched: Keras' epsilon rescaled by sqrt(1 - beta2^t) each step, betas as float64.",
         shows=(ref.adamw_step, adam_torch, keras_adamw)),
    Case("optimizer.adamw.keras_epsilon_hat", "optimizer",
         "Keras: theta -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)", adam_inputs,
         adam_reference, adam_torch, keras_adamw(match_torch=False),
         tol={"float32": 1e-4, "float64": 1e-4}, min_error={"float32": 1e-7, "float64": 1e-7},
         note="Known difference: torch.optim.AdamW adds eps to sqrt(v_hat), Keras adds it to sqrt(v) "
              "(the paper's 'epsilon hat'), i.e. Keras' effective eps is eps / sqrt(1 - beta2^t) in "
              "torch's terms -- 31x larger at step 1. It matters where gradients are small. The "
              "matched case `optimizer.adamw` removes it.",
         shows=(ref.adamw_step, adam_torch, keras_adamw)),
]
