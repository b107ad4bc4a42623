"""Level 1, single ops: softmax, log-softmax, GELU, LayerNorm."""

from __future__ import annotations

import keras
import tensorflow as tf
import torch
import torch.nn.functional as F

from sftrl.parity.cases.common import T, TF, np_out
from sftrl.parity.registry import Case
from shared import reference as ref
from tf_impl import model as tf_model
from torch_impl import model as torch_model


def logits_inputs(rng):
    return {"x": rng.normal(0, 3, size=(4, 7, 11))}


def layer_norm_inputs(rng):
    return {"x": rng.normal(2.0, 3.0, size=(4, 7, 16)), "weight": rng.normal(1, 0.1, 16),
            "bias": rng.normal(0, 0.1, 16)}


def keras_layer_norm(d, dtype):
    layer = keras.layers.LayerNormalization(epsilon=ref.LAYER_NORM_EPS, dtype=dtype)
    layer.build(d["x"].shape)
    layer.gamma.assign(d["weight"])
    layer.beta.assign(d["bias"])
    return np_out(y=layer(TF(d["x"])))


CASES = [
    Case("softmax", "ops", "softmax(x)_i = exp(x_i) / sum_j exp(x_j)", logits_inputs,
         lambda d: {"y": ref.softmax(d["x"])},
         lambda d, dt: np_out(y=torch.softmax(T(d["x"]), -1)),
         lambda d, dt: np_out(y=tf.nn.softmax(TF(d["x"]), -1))),
    Case("log_softmax", "ops", "log softmax(x)_i = x_i - log sum_j exp(x_j)", logits_inputs,
         lambda d: {"y": ref.log_softmax(d["x"])},
         lambda d, dt: np_out(y=F.log_softmax(T(d["x"]), -1)),
         lambda d, dt: np_out(y=tf.nn.log_softmax(TF(d["x"]), -1))),
    Case("gelu", "ops", "GELU(x) = 0.5 x (1 + erf(x / sqrt 2))", logits_inputs,
         lambda d: {"y": ref.gelu(d["x"])},
         lambda d, dt: np_out(y=torch_model.gelu(T(d["x"]))),
         lambda d, dt: np_out(y=tf_model.gelu(TF(d["x"]))),
         shows=(ref.gelu, torch_model.gelu, tf_model.gelu)),
    Case("gelu.tf_nn_gelu_erfc", "ops", "tf.nn.gelu(approximate=False) = 0.5 x erfc(-x / sqrt 2)",
         logits_inputs,
         lambda d: {"y": ref.gelu(d["x"])},
         lambda d, dt: np_out(y=torch_model.gelu(T(d["x"]))),
         lambda d, dt: np_out(y=tf.nn.gelu(TF(d["x"]), approximate=False)),
         tol={"float32": 1e-5, "float64": 1e-8}, min_error={"float64": 1e-10},
         note="Known difference: TensorFlow's float64 erfc is accurate to ~5e-9 only, so "
              "tf.nn.gelu misses 1e-10 parity in float64. The matched case `gelu` writes "
              "0.5 x (1 + erf(x / sqrt 2)) out (tf.math.erf is exact) and passes at 1e-10."),
    Case("layer_norm", "ops", "LayerNorm(x) = (x - mean) / sqrt(var + eps) * gamma + beta",
         layer_norm_inputs,
         lambda d: {"y": ref.layer_norm(d["x"], d["weight"], d["bias"])},
         lambda d, dt: np_out(y=F.layer_norm(T(d["x"]), (16,), T(d["weight"]), T(d["bias"]), ref.LAYER_NORM_EPS)),
         keras_layer_norm),
]
