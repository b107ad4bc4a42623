"""Level 2, attention: scaled dot-product (plain and fused kernels), multi-head vs keras.layers.MultiHeadAttention."""

from __future__ import annotations


import keras
import numpy as np
import torch
import torch.nn.functional as F

from sftrl.parity.cases.common import T, TF, np_out, tiny_config
from sftrl.parity.registry import Case
from shared import reference as ref
from shared.data import build_attention_mask
from tf_impl import model as tf_model
from torch_impl import model as torch_model


def attention_inputs(causal):
    def make(rng):
        lengths = [7, 5, 3]
        attention_mask = np.array([[1] * n + [0] * (7 - n) for n in lengths])
        return {"q": rng.normal(size=(3, 4, 7, 8)), "k": rng.normal(size=(3, 4, 7, 8)),
                "v": rng.normal(size=(3, 4, 7, 8)),
                "mask": build_attention_mask(attention_mask, causal=causal)}
    return make


def sdpa_case(name, causal):
    return Case(
        name, "attention", "Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V, masked keys -> 0 weight",
        attention_inputs(causal),
        lambda d: dict(zip(("output", "weights"), ref.scaled_dot_product_attention(d["q"], d["k"], d["v"], d["mask"]))),
        lambda d, dt: np_out(**dict(zip(("output", "weights"), torch_model.scaled_dot_product_attention(
            T(d["q"]), T(d["k"]), T(d["v"]), T(d["mask"]))))),
        lambda d, dt: np_out(**dict(zip(("output", "weights"), tf_model.scaled_dot_product_attention(
            TF(d["q"]), TF(d["k"]), TF(d["v"]), TF(d["mask"]))))),
        shows=(ref.scaled_dot_product_attention, torch_model.scaled_dot_product_attention,
               tf_model.scaled_dot_product_attention))


def fused_torch(d, dtype):
    """Our fused_attention: torch's F.scaled_dot_product_attention."""
    return np_out(output=torch_model.fused_attention(T(d["q"]), T(d["k"]), T(d["v"]), T(d["mask"])))


def fused_keras(d, dtype):
    """Our fused_attention: keras.ops.dot_product_attention, in Keras' (B, T, H, hs) layout."""
    return np_out(output=tf_model.fused_attention(TF(d["q"]), TF(d["k"]), TF(d["v"]), TF(d["mask"])))


def mha_inputs(rng):
    C = 16
    attention_mask = np.array([[1] * 6, [1] * 4 + [0] * 2])
    d = {"x": rng.normal(size=(2, 6, C)), "mask": build_attention_mask(attention_mask, causal=False)}
    for name in ("q", "k", "v", "o"):
        d[f"w_{name}"] = rng.normal(0, 0.3, size=(C, C))
        d[f"b_{name}"] = rng.normal(0, 0.1, size=C)
    return d


def mha_reference(d):
    out, weights = ref.multi_head_attention(d["x"], d["w_q"], d["b_q"], d["w_k"], d["b_k"], d["w_v"],
                                            d["b_v"], d["w_o"], d["b_o"], 4, d["mask"])
    return {"output": out, "weights": weights}


def mha_torch(d, dtype):
    """Our SelfAttention (Q, K, V and the heads) followed by the W^O projection."""
    config = tiny_config()
    attention = torch_model.SelfAttention(config).to(getattr(torch, dtype)).eval()
    with torch.no_grad():
        for name, layer in (("q", attention.query), ("k", attention.key), ("v", attention.value)):
            layer.weight.copy_(T(d[f"w_{name}"]))
            layer.bias.copy_(T(d[f"b_{name}"]))
    context, weights, _ = attention(T(d["x"]), T(d["mask"]), output_attentions=True)  # the weights are compared too
    return np_out(output=F.linear(context, T(d["w_o"]), T(d["b_o"])), weights=weights)


def mha_keras(d, dtype):
    """keras.layers.MultiHeadAttention with our (out, in) weights mapped to its einsum kernels."""
    C, H = 16, 4
    layer = keras.layers.MultiHeadAttention(num_heads=H, key_dim=C // H, dtype=dtype)
    x = TF(d["x"])
    layer(x, x)  # build
    for name, dense in (("q", layer._query_dense), ("k", layer._key_dense), ("v", layer._value_dense)):
        dense.kernel.assign(d[f"w_{name}"].T.reshape(C, H, C // H))   # (C, H, hs)
        dense.bias.assign(d[f"b_{name}"].reshape(H, C // H))
    layer._output_dense.kernel.assign(d["w_o"].T.reshape(H, C // H, C))  # (H, hs, C)
    layer._output_dense.bias.assign(d["b_o"])
    out, weights = layer(x, x, attention_mask=TF(d["mask"][:, 0]), return_attention_scores=True)
    return np_out(output=out, weights=weights)


CASES = [
    sdpa_case("attention.padding", causal=False),
    sdpa_case("attention.causal", causal=True),
    Case("attention.fused_kernels", "attention",
         "fused_attention: torch F.scaled_dot_product_attention vs keras.ops.dot_product_attention vs the formula",
         attention_inputs(True),
         lambda d: {"output": ref.scaled_dot_product_attention(d["q"], d["k"], d["v"], d["mask"])[0]},
         fused_torch, fused_keras,
         shows=(ref.scaled_dot_product_attention, torch_model.fused_attention, tf_model.fused_attention)),
    Case("attention.multi_head_vs_keras_layer", "attention",
         "MultiHead(X) = Concat(head_1..head_h) W^O; ours vs keras.layers.MultiHeadAttention",
         mha_inputs, mha_reference, mha_torch, mha_keras),
]
