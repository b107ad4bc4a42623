"""Level 4, losses and RL quantities: the function of the same name in shared.reference, torch_impl.losses and tf_impl.losses."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import torch

from types import SimpleNamespace

from sftrl.parity.cases.common import T, TF, np_out
from sftrl.parity.registry import Case
from shared import reference as ref
from shared.algorithms import ALGORITHMS
from shared.config import PPOConfig
from shared.constants import IGNORE_INDEX, LOSS_NORMALISATIONS
from tf_impl import losses as tf_losses
from torch_impl import losses as torch_losses


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


def loss_case(name, formula, inputs, call, outputs=("y",)):
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
        loss_case("loss.kl_to_reference.k1" + suffix, "k1 = -log r, r = ref(a) / pi(a)", inputs,
                  lambda m, d, t: m.kl_to_reference(t(d["logprobs"]), t(d["ref_logprobs"]), "k1", t(d["mask"]))),
        loss_case("loss.kl_to_reference.k3" + suffix, "k3 = (r - 1) - log r", inputs,
                  lambda m, d, t: m.kl_to_reference(t(d["logprobs"]), t(d["ref_logprobs"]), "k3", t(d["mask"]))),
        loss_case("loss.whiten" + suffix, "(x - mean) / sqrt(var + eps), biased var over the mask", inputs,
                  lambda m, d, t: m.whiten(t(d["advantages"]), t(d["mask"]))),
        loss_case("loss.gae" + suffix,
                  "A_t = delta_t + gamma lam A_{t+1}, delta_t = r_t + gamma V_{t+1} - V_t, t+1 the next unmasked step",
                  inputs, lambda m, d, t: m.gae(t(d["rewards"]), t(d["values"]), 0.99, 0.95, t(d["mask"])),
                  outputs=("advantages", "returns")),
        loss_case("loss.ppo_clip_loss" + suffix,
                  "mean max(-A r, -A clip(r, 1 - eps, 1 + eps)), r = exp(logp - logp_old)", inputs,
                  lambda m, d, t: m.ppo_clip_loss(t(d["logprobs"]), t(d["old_logprobs"]), t(d["advantages"]),
                                                  0.2, t(d["mask"])),
                  outputs=("loss", "clipfrac", "update_kl")),
        loss_case("loss.value_loss" + suffix, "0.5 mean max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2)",
                  inputs,
                  lambda m, d, t: m.value_loss(t(d["values"]), t(d["old_values"]), t(d["returns"]), 0.2,
                                               t(d["mask"])),
                  outputs=("loss", "clipfrac")),
        loss_case("loss.kl_penalty_rewards" + suffix,
                  "r_t = -beta (log pi - log ref) + score at the last unmasked token", inputs,
                  lambda m, d, t: m.kl_penalty_rewards(t(d["scores"]), t(d["logprobs"]), t(d["ref_logprobs"]),
                                                       0.1, t(d["mask"])),
                  outputs=("rewards", "kl")),
        loss_case("loss.sequence_log_prob" + suffix, "log P(w_1..w_m) = sum over unmasked i of log P(w_i | w_<i)",
                  inputs,
                  lambda m, d, t: m.sequence_log_prob(t(d["logits"]), t(d["actions"]), t(d["mask"]))),
    ]


def group_inputs(rng):
    """12 completions of 3 prompts, in groups of 4 as the trainer lays them out; the middle group's
    scores are all equal (no spread: its GRPO advantages must be 0, not 0 / 0)."""
    scores = rng.random(12)
    scores[4:8] = 0.5
    return {"scores": scores, "rewards": rng.normal(size=12)}


def dpo_inputs(rng):
    """Summed completion log-probs of 8 pairs under the policy and the reference."""
    chosen, rejected = -rng.random(8) * 20, -rng.random(8) * 20
    return {"chosen_logps": chosen, "rejected_logps": rejected,
            "ref_chosen_logps": chosen + rng.normal(0, 2, 8), "ref_rejected_logps": rejected + rng.normal(0, 2, 8)}


def policy_gradient_cases(inputs, suffix):
    """The critic-free losses that take a mask of response tokens, on the masks `inputs` makes."""
    return [
        loss_case("loss.reinforce_loss" + suffix, "L = -mean_t A_t log pi(a_t | s_t)", inputs,
                  lambda m, d, t: m.reinforce_loss(t(d["logprobs"]), t(d["advantages"]), t(d["mask"]))),
        *[loss_case(f"loss.grpo_loss.{norm}{suffix}",
                    "l_t = -min(r A, clip(r, 1 - eps, 1 + eps) A) + beta k3, k3 = ref/pi - log(ref/pi) - 1; "
                    + ("mean over each row's tokens, then over rows" if norm == "sequence"
                       else "mean over all tokens"), inputs,
                    lambda m, d, t, norm=norm: m.grpo_loss(t(d["logprobs"]), t(d["old_logprobs"]),
                                                           t(d["ref_logprobs"]), t(d["advantages"]), 0.2, 0.04,
                                                           t(d["mask"]), norm),
                    outputs=("loss", "clipfrac", "kl"))
          for norm in LOSS_NORMALISATIONS],
    ]


def objective_cases(inputs, suffix):
    """Each algorithm's whole loss (its record's `loss`: ppo_objective, grpo_objective,
    reinforce_objective) with its statistics, from the same minibatch quantities."""
    def call(module, d, t, name):
        batch = SimpleNamespace(**{f: t(d[k]) for f, k in (
            ("old_logprobs", "old_logprobs"), ("ref_logprobs", "ref_logprobs"), ("advantages", "advantages"),
            ("old_values", "old_values"), ("returns", "returns"), ("response_mask", "mask"))})
        config = PPOConfig(algorithm=name, ent_coef=0.01, kl_coef=0.04)
        values = t(d["values"]) if config.spec.critic else None
        loss, stats = getattr(module, config.spec.loss)(t(d["logprobs"]), t(d["entropy"]), values, batch, config,
                                                        config.kl_coef)
        return (loss, *(stats[k] for k in sorted(stats)))

    cases, seen = [], set()
    for spec in ALGORITHMS.values():
        if spec.loss in seen:  # rloo's loss is reinforce's
            continue
        seen.add(spec.loss)
        stats = sorted({"loss/policy", *spec.stats})
        cases.append(loss_case(f"loss.{spec.loss}{suffix}", f"{spec.name}: the whole loss and its statistics "
                               f"({', '.join(stats)})", inputs,
                               lambda m, d, t, name=spec.name: call(m, d, t, name),
                               outputs=("loss", *(k.replace("/", "_") for k in stats))))
    return cases


def objective_inputs(rng):
    return {**rl_inputs(rng), "entropy": np.array(rng.random() * 2)}  # the token-mean entropy, ()


def objective_irregular_inputs(rng):
    return {**objective_inputs(rng), "mask": IRREGULAR_MASK}


CASES = [
    loss_case("loss.cross_entropy", "CE = -(1/N) sum_{y_i != -100} log softmax(z_i)[y_i]  (MLM loss)",
              lm_inputs, lambda m, d, t: m.cross_entropy(t(d["logits"]), t(d["labels"]))),
    loss_case("loss.completion_only_loss", "next-token CE on completion tokens: z_t scores y_{t+1}",
              lm_inputs, lambda m, d, t: m.completion_only_loss(t(d["logits"]), t(d["labels"]))),
    loss_case("loss.categorical_log_prob", "log pi(a|s) = log softmax(z)[a]  (TF: tfp Categorical)",
              lm_inputs, lambda m, d, t: m.categorical_log_prob(t(d["logits"]), t(d["actions"]))),
    loss_case("loss.entropy_from_logits", "H(pi) = -sum_a pi(a) log pi(a)  (TF: tfp Categorical)",
              lm_inputs, lambda m, d, t: m.entropy_from_logits(t(d["logits"]))),
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
    loss_case("loss.bradley_terry_loss", "-mean log sigmoid(s_chosen - s_rejected)", rl_inputs,
              lambda m, d, t: m.bradley_terry_loss(t(d["chosen"]), t(d["rejected"]))),
    *policy_gradient_cases(rl_inputs, ""),
    *policy_gradient_cases(rl_irregular_inputs, ".irregular_masks"),
    *objective_cases(objective_inputs, ""),
    *objective_cases(objective_irregular_inputs, ".irregular_masks"),
    loss_case("loss.rloo_advantages", "A_i = R_i - (1 / (k - 1)) sum_{j != i} R_j over its group of k = 4",
              group_inputs, lambda m, d, t: m.rloo_advantages(t(d["rewards"]), 4)),
    loss_case("loss.grpo_advantages", "A_i = (s_i - mean_g s) / (std_g s + eps), std with G - 1, G = 4",
              group_inputs, lambda m, d, t: m.grpo_advantages(t(d["scores"]), 4)),
    loss_case("loss.dpo_loss",
              "-mean log sigmoid(beta [(log pi(y_c) - log ref(y_c)) - (log pi(y_r) - log ref(y_r))]); "
              "implicit rewards beta (log pi - log ref)", dpo_inputs,
              lambda m, d, t: m.dpo_loss(t(d["chosen_logps"]), t(d["rejected_logps"]), t(d["ref_chosen_logps"]),
                                         t(d["ref_rejected_logps"]), 0.1),
              outputs=("loss", "chosen_rewards", "rejected_rewards")),
    Case("loss.policy_evaluation", "losses", "V = (I - gamma P_pi)^-1 r_pi  (Bellman equation)",
         policy_evaluation_inputs,
         lambda d: {"V": ref.policy_evaluation(d["P"], d["R"], d["pi"], d["gamma"])},
         policy_evaluation_framework(torch), policy_evaluation_framework(tf),
         shows=(ref.policy_evaluation, policy_evaluation_framework, policy_evaluation_framework)),
]
