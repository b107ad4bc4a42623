"""The parity registry: one table of cases, from one op up to a training run.

Used by `tests/parity/` (pytest parametrised over CASES x dtypes) and by `sftrl parity`.
Each case's adapters are a few lines that turn NumPy inputs into framework tensors and call
the project's own functions (`shared.reference`, `torch_impl`, `tf_impl`).
"""

from __future__ import annotations

import math

import tf_impl  # noqa: F401  (first: imports TensorFlow without its start-up noise)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from sftrl.parity import GRADIENT_TOL, Case  # noqa: E402
from shared import reference as ref  # noqa: E402
from shared.config import ModelConfig  # noqa: E402
from shared.constants import IGNORE_INDEX  # noqa: E402
from shared.data import build_attention_mask, collate  # noqa: E402
from tf_impl import generate as tf_generate  # noqa: E402
from tf_impl import losses as tf_losses  # noqa: E402
from tf_impl import model as tf_model  # noqa: E402
from tf_impl.convert import assign_numpy_state_dict, hf_name  # noqa: E402
from torch_impl import generate as torch_generate  # noqa: E402
from torch_impl import losses as torch_losses  # noqa: E402
from torch_impl import model as torch_model  # noqa: E402
from torch_impl.checkpoint import load_state_dict_strict, state_dict_for_saving  # noqa: E402

EXACT = {"float32": 0.0, "float64": 0.0}


# ----------------------------------------------------------------------------- helpers

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


def random_state(config, rng, std=0.1):
    """Seeded weights for every parameter (HF names): N(0, std), LayerNorm scales around 1."""
    shapes = {k: tuple(v.shape) for k, v in state_dict_for_saving(torch_model.SFTModel(config)).items()}
    state = {}
    for name, shape in shapes.items():
        noise = rng.normal(0.0, std, size=shape)
        state[name] = 1.0 + noise if name.endswith("LayerNorm.weight") else noise
    return state


def torch_sft(config, state, dtype):
    model = torch_model.SFTModel(config)
    model = model.double() if dtype == "float64" else model
    load_state_dict_strict(model, {k: T(v) for k, v in state.items()}, "parity")
    return model.eval()


def keras_policy(config, state, dtype):
    model = tf_model.PolicyModel(config, dtype=dtype)
    assign_numpy_state_dict(model, state, "parity")
    return model


def padded_ids(rng, batch, lengths, vocab, side="right"):
    sequences = [list(rng.integers(5, vocab, size=n)) for n in lengths[:batch]]
    b = collate(sequences, pad_id=0, side=side)
    return b["input_ids"], b["attention_mask"]


# ----------------------------------------------------------------------------- ops

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


OPS = [
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


# ----------------------------------------------------------------------------- attention

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
    out = F.scaled_dot_product_attention(T(d["q"]), T(d["k"]), T(d["v"]), attn_mask=T(d["mask"]))
    return np_out(output=out)


def fused_keras(d, dtype):
    def heads_last(x):  # (B, H, T, hs) -> (B, T, H, hs), Keras' layout
        return TF(np.swapaxes(x, 1, 2))
    # The scale is passed as a float64 number: a Python float would be cast through float32
    # inside Keras (tf.cast of a Python float makes a float32 tensor first), costing ~2e-8
    # relative error in float64.
    scale = np.float64(1.0 / math.sqrt(d["q"].shape[-1])).astype(dtype)
    out = keras.ops.dot_product_attention(heads_last(d["q"]), heads_last(d["k"]), heads_last(d["v"]),
                                          mask=TF(d["mask"]), scale=scale)
    return np_out(output=tf.transpose(out, [0, 2, 1, 3]))


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
    config = ModelConfig(**{**TINY, "hidden_size": 16, "num_attention_heads": 4})
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


ATTENTION = [
    sdpa_case("attention.padding", causal=False),
    sdpa_case("attention.causal", causal=True),
    Case("attention.fused_kernels", "attention",
         "torch F.scaled_dot_product_attention vs keras.ops.dot_product_attention vs the formula",
         attention_inputs(True),
         lambda d: {"output": ref.scaled_dot_product_attention(d["q"], d["k"], d["v"], d["mask"])[0]},
         fused_torch, fused_keras),
    Case("attention.multi_head_vs_keras_layer", "attention",
         "MultiHead(X) = Concat(head_1..head_h) W^O; ours vs keras.layers.MultiHeadAttention",
         mha_inputs, mha_reference, mha_torch, mha_keras),
]


# ----------------------------------------------------------------------------- block and model

def block_inputs(rng):
    config = ModelConfig(**TINY)
    state = random_state(config, rng)
    prefix = "bert.encoder.layer.0."
    block = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    attention_mask = np.array([[1] * 6, [1] * 3 + [0] * 3])
    return {"x": rng.normal(size=(2, 6, 16)), "params": block,
            "mask": build_attention_mask(attention_mask, causal=False)}


def block_torch(d, dtype):
    block = torch_model.TransformerBlock(ModelConfig(**TINY)).to(getattr(torch, dtype)).eval()
    block.load_state_dict({k: T(v) for k, v in d["params"].items()}, strict=True)
    return np_out(y=block(T(d["x"]), T(d["mask"]))[0])


def block_keras(d, dtype):
    block = tf_model.TransformerBlock(ModelConfig(**TINY), name="block", dtype=dtype)
    block(TF(d["x"]), TF(d["mask"]))  # build
    assign_numpy_state_dict(block, d["params"], "parity")
    return np_out(y=block(TF(d["x"]), TF(d["mask"]))[0])


def model_inputs(attention_type):
    def make(rng):
        config = ModelConfig(**TINY, attention_type=attention_type)
        input_ids, attention_mask = padded_ids(rng, 3, [9, 6, 4], 23)
        return {"state": random_state(config, rng), "input_ids": input_ids,
                "mask": build_attention_mask(attention_mask, config.is_causal),
                "attention_type": attention_type}
    return make


def model_case(attention_type):
    def config(d):
        return ModelConfig(**TINY, attention_type=d["attention_type"])
    return Case(
        f"model.{attention_type}", "model", "logits of embeddings -> N post-LN blocks -> tied LM head",
        model_inputs(attention_type),
        lambda d: {"logits": ref.model_logits(d["state"], d["input_ids"], d["mask"], config(d))},
        lambda d, dt: np_out(logits=torch_sft(config(d), d["state"], dt)(T(d["input_ids"]), T(d["mask"]))),
        lambda d, dt: np_out(logits=keras_policy(config(d), d["state"], dt)(d["input_ids"], d["mask"])),
        shows=(ref.model_logits, torch_model.SFTModel, tf_model.PolicyModel))


MODEL = [
    Case("transformer_block", "block", "h = LN(x + MHA(x)); y = LN(h + W_2 GELU(W_1 h))", block_inputs,
         lambda d: {"y": ref.transformer_block(d["x"], d["params"], "", 4, d["mask"])},
         block_torch, block_keras,
         shows=(ref.transformer_block, torch_model.TransformerBlock, tf_model.TransformerBlock)),
    model_case("bidirectional"),
    model_case("causal"),
]


# ----------------------------------------------------------------------------- losses

def lm_inputs(rng):
    labels = rng.integers(0, 11, size=(3, 6))
    labels[rng.random((3, 6)) < 0.3] = IGNORE_INDEX
    labels[:, 0] = IGNORE_INDEX  # a prompt position, never a target
    mask = np.array([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4])
    return {"logits": rng.normal(0, 2, size=(3, 6, 11)), "labels": labels,
            "actions": rng.integers(0, 11, size=(3, 6)), "mask": mask}


def rl_inputs(rng):
    mask = np.array([[1] * 8, [1] * 5 + [0] * 3, [1] * 2 + [0] * 6, [1] * 7 + [0]])
    logprobs = -rng.random((4, 8)) * 3
    return {"logprobs": logprobs, "old_logprobs": logprobs + rng.normal(0, 0.3, (4, 8)),
            "ref_logprobs": logprobs + rng.normal(0, 0.5, (4, 8)),
            "advantages": rng.normal(size=(4, 8)), "values": rng.normal(size=(4, 8)),
            "old_values": rng.normal(size=(4, 8)), "returns": rng.normal(size=(4, 8)),
            "rewards": rng.normal(size=(4, 8)), "scores": rng.normal(size=4),
            "chosen": rng.normal(size=16), "rejected": rng.normal(size=16), "mask": mask,
            "logits": rng.normal(0, 2, size=(4, 8, 11)), "actions": rng.integers(0, 11, size=(4, 8))}


# Masks that are not a right-padded prefix: left padding (prompts are left-padded), a hole (masked
# tokens between unmasked ones), an empty row, and a full one so that no mean is over nothing.
IRREGULAR_MASK = np.array([[0, 0, 0, 1, 1, 1, 1, 1], [1, 1, 0, 0, 1, 1, 0, 1], [0] * 8, [1] * 8])


def rl_irregular_inputs(rng):
    """`rl_inputs` with IRREGULAR_MASK: one behaviour for every mask, the same in NumPy, torch, TF."""
    return {**rl_inputs(rng), "mask": IRREGULAR_MASK}


def loss_case(name, formula, inputs, numpy_fn, call, outputs=("y",)):
    """A case whose three sides call the function of the same name in reference / torch_impl.losses /
    tf_impl.losses with the same arguments; `call(module, d, to_tensor)` makes the call."""
    def as_dict(value):
        value = value if isinstance(value, tuple) else (value,)
        return dict(zip(outputs, value))
    function = name.split(".")[1]
    return Case(
        name, "losses", formula, inputs,
        lambda d: as_dict(call(ref, d, np.asarray)),
        lambda d, dt: np_out(**as_dict(call(torch_losses, d, T))),
        lambda d, dt: np_out(**as_dict(call(tf_losses, d, TF))),
        shows=(getattr(ref, function), getattr(torch_losses, function), getattr(tf_losses, function)))


def policy_evaluation_inputs(rng):
    S, A = 6, 3
    P = rng.random((S, A, S))
    pi = rng.random((S, A))
    return {"P": P / P.sum(-1, keepdims=True), "R": rng.normal(size=(S, A, S)),
            "pi": pi / pi.sum(-1, keepdims=True), "gamma": 0.9}


def policy_evaluation_framework(lib):
    def run(d, dtype):
        if lib is torch:
            P, R, pi = T(d["P"]), T(d["R"]), T(d["pi"])
            P_pi, r_pi = torch.einsum("sa,sat->st", pi, P), torch.einsum("sa,sat,sat->s", pi, P, R)
            V = torch.linalg.solve(torch.eye(len(r_pi), dtype=P.dtype) - d["gamma"] * P_pi, r_pi)
        else:
            P, R, pi = TF(d["P"]), TF(d["R"]), TF(d["pi"])
            P_pi, r_pi = tf.einsum("sa,sat->st", pi, P), tf.einsum("sa,sat,sat->s", pi, P, R)
            system = tf.eye(r_pi.shape[0], dtype=P.dtype) - d["gamma"] * P_pi
            V = tf.linalg.solve(system, r_pi[:, None])[:, 0]
        return np_out(V=V)
    return run


def whiten_unbiased_torch(d, dtype):
    """What `torch.var` gives by default: the unbiased (n - 1) variance."""
    x = T(d["advantages"])
    return np_out(y=(x - x.mean()) / torch.sqrt(torch.var(x) + ref.WHITEN_EPS))


def masked_cases(inputs, suffix):
    """The losses that take a mask of response tokens, on the masks `inputs` makes."""
    return [
        loss_case("loss.kl_to_reference.k1" + suffix, "k1 = -log r, r = ref(a) / pi(a)", inputs, None,
                  lambda m, d, t: m.kl_to_reference(t(d["logprobs"]), t(d["ref_logprobs"]), "k1", t(d["mask"]))),
        loss_case("loss.kl_to_reference.k3" + suffix, "k3 = (r - 1) - log r", inputs, None,
                  lambda m, d, t: m.kl_to_reference(t(d["logprobs"]), t(d["ref_logprobs"]), "k3", t(d["mask"]))),
        loss_case("loss.whiten" + suffix, "(x - mean) / sqrt(var + eps), biased var over the mask", inputs, None,
                  lambda m, d, t: m.whiten(t(d["advantages"]), t(d["mask"]))),
        loss_case("loss.gae" + suffix,
                  "A_t = delta_t + gamma lam A_{t+1}, delta_t = r_t + gamma V_{t+1} - V_t, t+1 the next unmasked step",
                  inputs, None, lambda m, d, t: m.gae(t(d["rewards"]), t(d["values"]), 0.99, 0.95, t(d["mask"])),
                  outputs=("advantages", "returns")),
        loss_case("loss.ppo_clip_loss" + suffix,
                  "mean max(-A r, -A clip(r, 1 - eps, 1 + eps)), r = exp(logp - logp_old)", inputs, None,
                  lambda m, d, t: m.ppo_clip_loss(t(d["logprobs"]), t(d["old_logprobs"]), t(d["advantages"]),
                                                  0.2, t(d["mask"])),
                  outputs=("loss", "clipfrac", "update_kl")),
        loss_case("loss.value_loss" + suffix, "0.5 mean max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2)",
                  inputs, None,
                  lambda m, d, t: m.value_loss(t(d["values"]), t(d["old_values"]), t(d["returns"]), 0.2,
                                               t(d["mask"])),
                  outputs=("loss", "clipfrac")),
        loss_case("loss.kl_penalty_rewards" + suffix,
                  "r_t = -beta (log pi - log ref) + score at the last unmasked token", inputs, None,
                  lambda m, d, t: m.kl_penalty_rewards(t(d["scores"]), t(d["logprobs"]), t(d["ref_logprobs"]),
                                                       0.1, t(d["mask"])),
                  outputs=("rewards", "kl")),
        loss_case("loss.sequence_log_prob" + suffix, "log P(w_1..w_m) = sum over unmasked i of log P(w_i | w_<i)",
                  inputs, None,
                  lambda m, d, t: m.sequence_log_prob(t(d["logits"]), t(d["actions"]), t(d["mask"]))),
    ]


LOSSES = [
    loss_case("loss.cross_entropy", "CE = -(1/N) sum_{y_i != -100} log softmax(z_i)[y_i]  (MLM loss)",
              lm_inputs, None, lambda m, d, t: m.cross_entropy(t(d["logits"]), t(d["labels"]))),
    loss_case("loss.completion_only_loss", "next-token CE on completion tokens: z_t scores y_{t+1}",
              lm_inputs, None, lambda m, d, t: m.completion_only_loss(t(d["logits"]), t(d["labels"]))),
    loss_case("loss.categorical_log_prob", "log pi(a|s) = log softmax(z)[a]  (TF: tfp Categorical)",
              lm_inputs, None, lambda m, d, t: m.categorical_log_prob(t(d["logits"]), t(d["actions"]))),
    loss_case("loss.entropy_from_logits", "H(pi) = -sum_a pi(a) log pi(a)  (TF: tfp Categorical)",
              lm_inputs, None, lambda m, d, t: m.entropy_from_logits(t(d["logits"]))),
    *masked_cases(rl_inputs, ""),
    *masked_cases(rl_irregular_inputs, ".irregular_masks"),
    Case("loss.whiten.torch_var_unbiased", "losses", "torch.var(x) divides by n - 1, tf.nn.moments by n",
         rl_inputs, lambda d: {"y": ref.whiten(d["advantages"])}, whiten_unbiased_torch,
         lambda d, dt: np_out(y=tf_losses.whiten(TF(d["advantages"]))),
         tol={"float32": 0.1, "float64": 0.1}, min_error={"float32": 1e-3, "float64": 1e-3},
         note="Known difference: torch.var defaults to the unbiased estimate (divide by n - 1) while "
              "tf.nn.moments is biased (divide by n), so whitened values differ by a factor "
              "sqrt((n - 1) / n). The matched case `loss.whiten` writes the biased variance in both.",
         shows=(ref.whiten, whiten_unbiased_torch, tf_losses.whiten)),
    loss_case("loss.bradley_terry_loss", "-mean log sigmoid(s_chosen - s_rejected)", rl_inputs, None,
              lambda m, d, t: m.bradley_terry_loss(t(d["chosen"]), t(d["rejected"]))),
    Case("loss.policy_evaluation", "losses", "V = (I - gamma P_pi)^-1 r_pi  (Bellman equation)",
         policy_evaluation_inputs,
         lambda d: {"V": ref.policy_evaluation(d["P"], d["R"], d["pi"], d["gamma"])},
         policy_evaluation_framework(torch), policy_evaluation_framework(tf),
         shows=(ref.policy_evaluation, policy_evaluation_framework, policy_evaluation_framework)),
]


# ----------------------------------------------------------------------------- gradients

def loss_grad(module, call, *names):
    """d loss / d inputs[names], by autograd (torch) or GradientTape (TF).

    `call(module, d, to_tensor, *leaves)` computes the loss with the module's functions.
    """
    def run(d, dtype):
        if module is torch_losses:
            leaves = [T(d[n]).clone().requires_grad_(True) for n in names]
            call(module, d, T, *leaves).backward()
            grads = [leaf.grad for leaf in leaves]
        else:
            leaves = [tf.Variable(d[n]) for n in names]
            with tf.GradientTape() as tape:
                loss = call(module, d, TF, *leaves)
            grads = tape.gradient(loss, leaves)
        return np_out(**{f"d_{n}": g for n, g in zip(names, grads)})
    return run


def loss_grad_case(name, formula, inputs, analytic, call, *names):
    return Case(name, "gradients", formula, inputs, analytic,
                loss_grad(torch_losses, call, *names), loss_grad(tf_losses, call, *names),
                tol=dict(GRADIENT_TOL), shows=(analytic, None, None))


def cross_entropy_grad(d):
    """dCE/dz = (softmax(z) - onehot(y)) / N on labelled rows, 0 elsewhere."""
    logits, labels = d["logits"], d["labels"]
    keep = labels != IGNORE_INDEX
    onehot = np.eye(logits.shape[-1])[np.where(keep, labels, 0)]
    return {"d_logits": (ref.softmax(logits) - onehot) * keep[..., None] / keep.sum()}


def ppo_clip_grad(d, clip_range=0.2):
    """dL/dlogp: -A r / N where the unclipped term is the max (or r is inside the clip range), else 0."""
    logp, old, A, mask = d["logprobs"], d["old_logprobs"], d["advantages"], d["mask"]
    r = np.exp(logp - old)
    inside = (r >= 1 - clip_range) & (r <= 1 + clip_range)
    unclipped_wins = -A * r > -A * np.clip(r, 1 - clip_range, 1 + clip_range)
    return {"d_logprobs": np.where(inside | unclipped_wins, -A * r, 0.0) * mask / mask.sum()}


def value_loss_grad(d, c=0.2):
    """dL/dV: (V - R)/N where the unclipped square wins, (V_clip - R)/N where the clipped one wins
    and V - V_old is inside the clip range, 0 where it wins clipped."""
    V, old, R, mask = d["values"], d["old_values"], d["returns"], d["mask"]
    v_clip = old + np.clip(V - old, -c, c)
    inside = np.abs(V - old) <= c
    unclipped_wins = (V - R) ** 2 >= (v_clip - R) ** 2
    grad = np.where(unclipped_wins, V - R, np.where(inside, v_clip - R, 0.0))
    return {"d_values": grad * mask / mask.sum()}


def bradley_terry_grad(d):
    """d/ds_c = -sigmoid(s_r - s_c) / N, d/ds_r = +sigmoid(s_r - s_c) / N."""
    s = 1.0 / (1.0 + np.exp(-(d["rejected"] - d["chosen"])))
    n = len(s)
    return {"d_chosen": -s / n, "d_rejected": s / n}


def model_grad_inputs(attention_type):
    def make(rng):
        config = ModelConfig(**TINY, attention_type=attention_type)
        input_ids, attention_mask = padded_ids(rng, 3, [9, 7, 5], 23)
        labels = np.where(attention_mask == 1, input_ids, IGNORE_INDEX)
        labels[:, :3] = IGNORE_INDEX  # the "prompt": no loss there
        if attention_type == "bidirectional":
            labels[rng.random(labels.shape) < 0.4] = IGNORE_INDEX
        return {"state": random_state(config, rng), "input_ids": input_ids,
                "attention_mask": attention_mask, "labels": labels, "attention_type": attention_type}
    return make


def model_grad_torch(d, dtype):
    config = ModelConfig(**TINY, attention_type=d["attention_type"])
    model = torch_sft(config, d["state"], dtype)
    model(T(d["input_ids"]), T(d["attention_mask"]), T(d["labels"])).backward()
    return np_out(**{name: p.grad for name, p in model.named_parameters()})


def model_grad_keras(d, dtype):
    config = ModelConfig(**TINY, attention_type=d["attention_type"])
    model = keras_policy(config, d["state"], dtype)
    with tf.GradientTape() as tape:
        logits = model(d["input_ids"], d["attention_mask"], training=True)
        loss = tf_model.lm_loss(logits, TF(d["labels"]), config.is_causal)
    grads = tape.gradient(loss, model.trainable_variables)
    out = {}
    for variable, grad in zip(model.trainable_variables, grads):
        name, transpose = hf_name(variable, model)
        grad = tf.convert_to_tensor(grad).numpy()  # embedding gradients arrive as IndexedSlices
        out[name] = grad.T if transpose else grad
    return out


GRADIENTS = [
    loss_grad_case("grad.cross_entropy", "dCE/dz = (softmax(z) - onehot(y)) / N", lm_inputs,
                   cross_entropy_grad, lambda m, d, t, z: m.cross_entropy(z, t(d["labels"])), "logits"),
    loss_grad_case("grad.ppo_clip_loss", "dL^CLIP/dlogp = -A r / N where the unclipped term is active",
                   rl_inputs, ppo_clip_grad,
                   lambda m, d, t, lp: m.ppo_clip_loss(lp, t(d["old_logprobs"]), t(d["advantages"]), 0.2,
                                                       t(d["mask"]))[0], "logprobs"),
    loss_grad_case("grad.value_loss", "dL^V/dV of the clipped value loss", rl_inputs, value_loss_grad,
                   lambda m, d, t, v: m.value_loss(v, t(d["old_values"]), t(d["returns"]), 0.2,
                                                   t(d["mask"]))[0], "values"),
    loss_grad_case("grad.bradley_terry_loss", "dL/ds_c = -sigmoid(s_r - s_c) / N = -dL/ds_r", rl_inputs,
                   bradley_terry_grad, lambda m, d, t, c, r: m.bradley_terry_loss(c, r), "chosen", "rejected"),
    Case("grad.model.mlm_loss", "gradients", "d(masked-LM loss)/d(every parameter), torch vs TF",
         model_grad_inputs("bidirectional"), None, model_grad_torch, model_grad_keras, tol=dict(GRADIENT_TOL)),
    Case("grad.model.completion_only_loss", "gradients",
         "d(completion-only loss)/d(every parameter), torch vs TF",
         model_grad_inputs("causal"), None, model_grad_torch, model_grad_keras, tol=dict(GRADIENT_TOL)),
]


# ----------------------------------------------------------------------------- optimizer

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


OPTIMIZER = [
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


# ----------------------------------------------------------------------------- training run

TRAIN_STEPS = 20


def training_inputs(rng):
    config = ModelConfig(**TINY, attention_type="causal")
    batches = []
    for _ in range(TRAIN_STEPS):
        input_ids, attention_mask = padded_ids(rng, 4, list(rng.integers(5, 11, size=4)), 23)
        labels = np.where(attention_mask == 1, input_ids, IGNORE_INDEX)
        labels[:, :3] = IGNORE_INDEX  # completion-only: the first tokens are the prompt
        batches.append((input_ids, attention_mask, labels))
    return {"state": random_state(config, rng), "batches": batches}


def training_torch(d, dtype):
    model = torch_sft(ModelConfig(**TINY, attention_type="causal"), d["state"], dtype).train()
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
    config = ModelConfig(**TINY, attention_type="causal")
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


TRAINING = [
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


# ----------------------------------------------------------------------------- generation

def generation_inputs(rng):
    config = ModelConfig(**TINY, attention_type="causal")
    input_ids, attention_mask = padded_ids(rng, 16, list(rng.integers(2, 8, size=16)), 23, side="left")
    return {"state": random_state(config, rng, std=0.3), "input_ids": input_ids,
            "attention_mask": attention_mask}


GENERATE_STEPS = 8


def greedy_reference(d):
    """Greedy decoding by recomputing the whole sequence with the NumPy model at every step."""
    config = ModelConfig(**TINY, attention_type="causal")
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
    model = torch_sft(ModelConfig(**TINY, attention_type="causal"), d["state"], dtype)
    tokens = torch_generate.generate(model, d["input_ids"], d["attention_mask"], GENERATE_STEPS)
    return {"tokens": tokens.numpy().astype(np.float64)}


def greedy_keras(d, dtype):
    model = keras_policy(ModelConfig(**TINY, attention_type="causal"), d["state"], dtype)
    tokens = tf_generate.generate(model, d["input_ids"], d["attention_mask"], GENERATE_STEPS)
    return {"tokens": tokens.numpy().astype(np.float64)}


GENERATION = [
    Case("generation.greedy", "generation",
         "greedy tokens: KV-cached decoding (torch, TF) vs recomputing with the NumPy model",
         generation_inputs, greedy_reference, greedy_torch, greedy_keras, tol=dict(EXACT),
         shows=(greedy_reference, torch_generate.generate, tf_generate.generate)),
]


CASES = OPS + ATTENTION + MODEL + LOSSES + GRADIENTS + OPTIMIZER + TRAINING + GENERATION
_names = [c.name for c in CASES]
assert len(_names) == len(set(_names)), "duplicate parity case names"
