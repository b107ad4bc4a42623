"""Level 3, a transformer block, the whole model's logits, every layer inside it, and LoRA."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import torch

from sftrl.parity.cases.common import T, TF, keras_policy, np_out, padded_ids, random_state, tiny_config, torch_sft
from sftrl.parity.registry import GRADIENT_TOL, Case
from shared import reference as ref
from shared.constants import IGNORE_INDEX, LORA_TARGETS_BY_ARCHITECTURE, PEFT_PREFIX
from shared.data import build_attention_mask
from tf_impl import lora as tf_lora
from tf_impl import losses as tf_losses
from tf_impl import model as tf_model
from tf_impl.convert import assign_numpy_state_dict, hf_name
from torch_impl import losses as torch_losses
from torch_impl import model as torch_model
from torch_impl import sft as torch_sft_lora


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


# ----------------------------------------------------------------------------- LoRA

LORA_RANK, LORA_ALPHA = 4, 8.0  # scale alpha / r = 2


def lora_inputs(rng):
    """A causal model, non-zero adapters on every target of both blocks (every linear layer: query,
    key, value, attention output, both feed-forward layers) in `peft`'s names, and a batch. Adapter
    entries are multiples of 2^-10 below 2^-1: exact in float32, and so is A B, which Keras computes
    in float32 (its adapter kernels are float32 whatever the model's dtype)."""
    config = tiny_config("causal")
    state = random_state(config, rng)
    adapters = {}
    for i in range(config.num_hidden_layers):
        for target in LORA_TARGETS_BY_ARCHITECTURE["bert"]:
            name = f"bert.encoder.layer.{i}.{target}"
            n_out, n_in = state[f"{name}.weight"].shape
            adapters[f"{PEFT_PREFIX}{name}.lora_A.weight"] = rng.integers(-512, 512, size=(LORA_RANK, n_in)) / 2.0 ** 10
            adapters[f"{PEFT_PREFIX}{name}.lora_B.weight"] = rng.integers(-512, 512, size=(n_out, LORA_RANK)) / 2.0 ** 10
    input_ids, attention_mask = padded_ids(rng, 3, [9, 6, 4], 23)
    return {"state": state, "adapters": adapters, "input_ids": input_ids, "attention_mask": attention_mask}


def lora_merged(d, alpha=LORA_ALPHA):
    """The reference: each adapted weight merged, W + (alpha / r) B A, through the plain model."""
    state = dict(d["state"])
    for name in d["adapters"]:
        if name.endswith(".lora_A.weight"):
            layer = name.removeprefix(PEFT_PREFIX).removesuffix(".lora_A.weight")
            B, A = d["adapters"][name.replace(".lora_A.", ".lora_B.")], d["adapters"][name]
            state[f"{layer}.weight"] = ref.lora_merge(state[f"{layer}.weight"], A, B, alpha, LORA_RANK)  # (out, in)
    mask = build_attention_mask(d["attention_mask"], causal=True)
    return {"logits": ref.model_logits(state, d["input_ids"], mask, tiny_config("causal"))}


def lora_torch(d, dtype, alpha=LORA_ALPHA):
    """peft's LoRA on our SFTModel: logits, and the completion loss' gradient w.r.t. every adapter."""
    lora = torch_sft_lora.add_lora(torch_sft(tiny_config("causal"), d["state"], dtype), LORA_RANK, alpha)
    torch_sft_lora.load_lora_state_dict(lora, d["adapters"])
    ids, mask = T(d["input_ids"]), T(d["attention_mask"])
    logits = lora(ids, mask)
    labels = torch.where(mask == 1, ids, IGNORE_INDEX)
    adapters = torch_sft_lora.lora_state_dict(lora)
    named = {n: p for n, p in lora.named_parameters() if "lora_" in n}
    grads = torch.autograd.grad(torch_losses.completion_only_loss(logits, labels), list(named.values()))
    return np_out(logits=logits, **{f"grad/{k}": g for k, g in zip(adapters, grads)})


def lora_keras(d, dtype):
    """Keras 3's own LoRA (Dense.enable_lora) on our PolicyModel, the same adapters loaded by name."""
    model = keras_policy(tiny_config("causal"), d["state"], dtype)
    tf_lora.enable_lora(model, LORA_RANK, LORA_ALPHA)
    tf_lora.load_lora_state_dict(model, d["adapters"])
    ids, mask = d["input_ids"], d["attention_mask"]
    variables = [v for v in model.weights if "lora_kernel" in v.path]
    with tf.GradientTape() as tape:
        logits = model(ids, mask)
        loss = tf_losses.completion_only_loss(logits, tf.where(mask == 1, ids, IGNORE_INDEX))
    grads = {PEFT_PREFIX + hf_name(v, model)[0]: np.asarray(g).T for v, g in zip(variables, tape.gradient(loss, variables))}
    return np_out(logits=logits, **{f"grad/{k}": g for k, g in grads.items()})


def only(prefix, run):
    return lambda d, dtype: {k: v for k, v in run(d, dtype).items() if k.startswith(prefix)}


CASES += [
    Case("model.lora", "model", "logits of W x + (alpha / r) B A x on every linear layer of every block: "
         "merged weights vs peft vs Keras enable_lora",
         lora_inputs, lora_merged, only("logits", lora_torch), only("logits", lora_keras),
         note="Non-zero adapters (rank 4, alpha 8) on query, key, value, attention output and both "
              "feed-forward layers, converted between peft's and Keras' names (tf_impl.lora); the "
              "reference merges them into the weights. Gradients: `model.lora.gradients`.",
         shows=(lora_merged, torch_sft_lora.add_lora, tf_lora.enable_lora)),
    Case("model.lora.gradients", "model", "d(completion loss)/d(every adapter A, B): peft vs Keras enable_lora",
         lora_inputs, None, only("grad", lora_torch), only("grad", lora_keras),
         tol={"float32": GRADIENT_TOL["float32"], "float64": GRADIENT_TOL["float32"]},
         min_error={"float64": 1e-13},
         note="Known difference: Keras keeps LoRA kernels in float32 whatever the layer's dtype, so a "
              "float64 model's adapter gradients carry float32 round-off (~5e-8 here) where peft's are "
              "float64. The matched row is float32, the precision LoRA trains in: there they agree to 1e-4.",
         shows=(None, torch_sft_lora.add_lora, tf_lora.enable_lora)),
]


# ----------------------------------------------------------------------------- sparse prediction

def sparse_inputs(attention_type):
    """`model_inputs` plus labels: MLM -- a third of the real tokens; causal -- the tokens after a
    3-token prompt (completion-only)."""
    def make(rng):
        d = model_inputs(attention_type)(rng)
        ids, real = d["input_ids"], d["input_ids"] != 0
        chosen = real & (rng.random(ids.shape) < 1 / 3) if attention_type == "bidirectional" else real
        if attention_type == "causal":
            chosen[:, :3] = False
        d["labels"] = np.where(chosen, ids, IGNORE_INDEX)
        return d
    return make


def sparse_reference(d):
    config = tiny_config(d["attention_type"])
    logits = ref.model_logits(d["state"], d["input_ids"], d["mask"], config)
    loss = ref.completion_only_loss(logits, d["labels"]) if config.is_causal else ref.cross_entropy(logits, d["labels"])
    return {"loss_sparse": loss, "loss_dense": loss}


def sparse_torch(d, dtype):
    """Our SFTModel's loss with the LM head on the labelled positions only, and on every position."""
    model = torch_sft(tiny_config(d["attention_type"]), d["state"], dtype)
    ids, mask, labels = T(d["input_ids"]), T(d["mask"]), T(d["labels"])
    return np_out(loss_sparse=model(ids, mask, labels), loss_dense=model(ids, mask, labels, sparse=False))


def sparse_keras(d, dtype):
    """The same two ways in Keras: `labelled_logits`, and `lm_loss` of every position's logits."""
    config = tiny_config(d["attention_type"])
    model = keras_policy(config, d["state"], dtype)
    labels = TF(d["labels"])
    logits, targets = model.labelled_logits(model.bert(d["input_ids"], d["mask"])[0], labels)
    return np_out(loss_sparse=tf_losses.cross_entropy(logits, targets),
                  loss_dense=tf_model.lm_loss(model(d["input_ids"], d["mask"]), labels, config.is_causal))


CASES += [
    Case(f"model.sparse_head.{attention_type}", "model",
         "the LM loss with the head on the labelled positions only = the loss of every position's logits",
         sparse_inputs(attention_type), sparse_reference, sparse_torch, sparse_keras,
         shows=(sparse_reference, torch_model.SFTModel.labelled_logits, tf_model.PolicyModel.labelled_logits))
    for attention_type in ("bidirectional", "causal")
]
