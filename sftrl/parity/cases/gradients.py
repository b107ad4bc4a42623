"""Level 5, gradients: of each loss (against its analytic form) and of the whole model."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import torch

from sftrl.parity.cases.common import T, TF, keras_policy, np_out, padded_ids, random_state, tiny_config, torch_sft
from sftrl.parity.cases.losses import dpo_inputs, lm_inputs, rl_inputs
from sftrl.parity.registry import FORWARD_TOL, GRADIENT_TOL, Case
from shared import reference as ref
from shared.constants import IGNORE_INDEX
from tf_impl import losses as tf_losses
from tf_impl import model as tf_model
from tf_impl.convert import hf_name
from torch_impl import losses as torch_losses


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


def loss_grad_case(name, formula, inputs, analytic, call, *names, tol=GRADIENT_TOL):
    return Case(name, "gradients", formula, inputs, analytic,
                loss_grad(torch_losses, call, *names), loss_grad(tf_losses, call, *names),
                tol=dict(tol), shows=(analytic, None, None))


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


def reinforce_grad(d):
    """dL/dlogp = -A m / N."""
    return {"d_logprobs": -d["advantages"] * d["mask"] / d["mask"].sum()}


def dpo_grad(d, beta=0.1):
    """x = beta [(c - c_ref) - (r - r_ref)], L = mean softplus(-x): dL/dc = -beta sigmoid(-x) / B = -dL/dr."""
    x = beta * ((d["chosen_logps"] - d["ref_chosen_logps"]) - (d["rejected_logps"] - d["ref_rejected_logps"]))
    g = beta / (1.0 + np.exp(x)) / len(x)
    return {"d_chosen_logps": -g, "d_rejected_logps": g}


def policy_gradient_inputs(rng):
    return {k: v for k, v in rl_inputs(rng).items() if k in ("logits", "actions", "advantages", "mask")}


def policy_gradient_analytic(d):
    """d/dz of -mean_t A_t log softmax(z_t)[a_t] = -A_t m_t (onehot(a_t) - softmax(z_t)) / N, for both
    losses: at ratio 1 PPO's clipped surrogate has REINFORCE's gradient."""
    onehot = np.eye(d["logits"].shape[-1])[d["actions"]]
    grad = -(d["advantages"] * d["mask"] / d["mask"].sum())[..., None] * (onehot - ref.softmax(d["logits"]))
    return {"d_logits_ppo": grad, "d_logits_reinforce": grad}


def ppo_at_ratio_one_and_reinforce(module):
    """The gradient with respect to the logits of PPO's clipped surrogate with pi_old = pi (the
    first minibatch of an iteration: ratio 1, no clip active) and of REINFORCE's loss, the same A."""
    def run(d, dtype):
        def losses(t, z):
            logprobs = module.categorical_log_prob(z, t(d["actions"]))
            old = logprobs.detach() if module is torch_losses else tf.stop_gradient(logprobs)  # pi_old = pi
            ppo, _, _ = module.ppo_clip_loss(logprobs, old, t(d["advantages"]), 0.2, t(d["mask"]))
            return ppo, module.reinforce_loss(logprobs, t(d["advantages"]), t(d["mask"]))
        if module is torch_losses:
            z = T(d["logits"]).clone().requires_grad_(True)
            ppo, reinforce = losses(T, z)
            grads = [torch.autograd.grad(loss, z, retain_graph=True)[0] for loss in (ppo, reinforce)]
        else:
            z = tf.Variable(d["logits"])
            with tf.GradientTape(persistent=True) as tape:
                ppo, reinforce = losses(TF, z)
            grads = [tape.gradient(loss, z) for loss in (ppo, reinforce)]
        return np_out(d_logits_ppo=grads[0], d_logits_reinforce=grads[1])
    return run


def model_grad_inputs(attention_type):
    def make(rng):
        config = tiny_config(attention_type)
        input_ids, attention_mask = padded_ids(rng, 3, [9, 7, 5], 23)
        labels = np.where(attention_mask == 1, input_ids, IGNORE_INDEX)
        labels[:, :3] = IGNORE_INDEX  # the "prompt": no loss there
        if attention_type == "bidirectional":
            labels[rng.random(labels.shape) < 0.4] = IGNORE_INDEX
        return {"state": random_state(config, rng), "input_ids": input_ids,
                "attention_mask": attention_mask, "labels": labels, "attention_type": attention_type}
    return make


def model_grad_torch(d, dtype):
    config = tiny_config(d["attention_type"])
    model = torch_sft(config, d["state"], dtype)
    model(T(d["input_ids"]), T(d["attention_mask"]), T(d["labels"])).backward()
    return np_out(**{name: p.grad for name, p in model.named_parameters()})


def model_grad_keras(d, dtype):
    config = tiny_config(d["attention_type"])
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


CASES = [
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
    loss_grad_case("grad.reinforce_loss", "dL/dlogp = -A m / N", rl_inputs, reinforce_grad,
                   lambda m, d, t, lp: m.reinforce_loss(lp, t(d["advantages"]), t(d["mask"])), "logprobs",
                   tol=FORWARD_TOL),
    loss_grad_case("grad.dpo_loss", "dL/dlog pi(y_c) = -beta sigmoid(-x) / B = -dL/dlog pi(y_r)", dpo_inputs,
                   dpo_grad, lambda m, d, t, c, r: m.dpo_loss(c, r, t(d["ref_chosen_logps"]),
                                                              t(d["ref_rejected_logps"]), 0.1)[0],
                   "chosen_logps", "rejected_logps", tol=FORWARD_TOL),
    Case("grad.ppo_at_ratio_one_is_reinforce", "gradients",
         "at r = 1 (pi_old = pi): d L^CLIP / dz = d L^REINFORCE / dz = -A m (onehot(a) - softmax(z)) / N",
         policy_gradient_inputs, policy_gradient_analytic, ppo_at_ratio_one_and_reinforce(torch_losses),
         ppo_at_ratio_one_and_reinforce(tf_losses), tol=dict(FORWARD_TOL),
         note="PPO refines the policy gradient: on the first minibatch of an iteration the policy "
              "is the one that sampled, every ratio is 1, no clip is active, and the gradient of the "
              "clipped surrogate is REINFORCE's with the same advantages. Later minibatches differ "
              "where ratios leave [1 - eps, 1 + eps].",
         shows=(policy_gradient_analytic, ppo_at_ratio_one_and_reinforce, ppo_at_ratio_one_and_reinforce)),
    Case("grad.model.mlm_loss", "gradients", "d(masked-LM loss)/d(every parameter), torch vs TF",
         model_grad_inputs("bidirectional"), None, model_grad_torch, model_grad_keras, tol=dict(GRADIENT_TOL)),
    Case("grad.model.completion_only_loss", "gradients",
         "d(completion-only loss)/d(every parameter), torch vs TF",
         model_grad_inputs("causal"), None, model_grad_torch, model_grad_keras, tol=dict(GRADIENT_TOL)),
]
