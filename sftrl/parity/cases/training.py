"""Level 7, a training run: AdamW steps of the completion-only loss from the same weights and batches."""

from __future__ import annotations

import dataclasses
import functools
import math

import keras
import numpy as np
import tensorflow as tf
import torch

from sftrl.parity.cases.common import T, TF, keras_policy, np_out, padded_ids, random_state, tiny_config, torch_sft
from sftrl.parity.cases.optimizer import ADAM
from sftrl.parity.registry import GRADIENT_TOL, Case
from shared import reference as ref
from shared.config import PPOConfig
from shared.constants import ADAM_BETAS, IGNORE_INDEX, REWARD_MODEL_ADAM_EPS
from shared.data import build_attention_mask
from tf_impl import losses as tf_losses
from tf_impl import architectures as tf_architectures
from tf_impl import model as tf_model
from tf_impl import ppo as tf_ppo
from tf_impl import reward_model as tf_reward_model
from tf_impl.convert import assign_numpy_state_dict, hf_name, to_numpy_state_dict
from torch_impl import losses as torch_losses
from torch_impl import architectures as torch_architectures
from torch_impl import ppo as torch_ppo
from torch_impl.checkpoint import load_state_dict_strict, state_dict_for_saving


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


# ----------------------------------------------------------------------------- one PPO update

# lr a power of two: Keras keeps the learning rate in a float32 variable. max_grad_norm small
# enough that the clipping acts; clip ranges that the rollout below crosses.
PPO = PPOConfig(lr=2.0 ** -8, temperature=0.7, clip_range=0.2, clip_range_value=0.2, vf_coef=0.1,
                ent_coef=0.01, max_grad_norm=0.5)
PPO_ROWS, PROMPT, RESPONSE = 8, 5, 6


def ppo_inputs(rng, config=None, state=None, logits_of=ref.model_logits):
    """A rollout as `tf_impl.ppo` makes one (left-padded prompts, responses ending early) and
    minibatch orders for K = 4 steps (2 epochs x 2 minibatches of 4 rows). The BERT-style model by
    default; a decoder's case passes its config, its seeded state and its NumPy logits."""
    config = config or tiny_config("causal")
    state = dict(state if state is not None else random_state(config, rng))
    state["value_head.dense.weight"] = rng.normal(0.0, 0.1, size=(1, config.hidden_size))
    state["value_head.dense.bias"] = rng.normal(0.0, 0.1, size=(1,))
    query, query_mask = padded_ids(rng, PPO_ROWS, list(rng.integers(2, PROMPT + 1, size=PPO_ROWS)), 23, side="left")
    query, query_mask = (np.pad(x, [(0, 0), (PROMPT - x.shape[1], 0)]) for x in (query, query_mask))
    response = rng.integers(5, 23, size=(PPO_ROWS, RESPONSE))
    response_mask = (np.arange(RESPONSE)[None] < rng.integers(1, RESPONSE + 1, size=(PPO_ROWS, 1))).astype(np.int64)
    mask = np.concatenate([query_mask, response_mask], 1)
    ids = np.concatenate([query, response * response_mask], 1)
    position_ids = np.maximum(np.cumsum(mask, -1) - 1, 0)
    logits = logits_of(state, ids, build_attention_mask(mask, True), config, position_ids)
    logprobs = ref.categorical_log_prob(logits[:, PROMPT - 1:-1] / PPO.temperature, response)
    old_values = rng.normal(0.0, 0.5, size=(PPO_ROWS, RESPONSE))
    advantages = rng.normal(size=(PPO_ROWS, RESPONSE))
    return {"state": state, "ids": ids, "mask": mask, "position_ids": position_ids, "response": response,
            "response_mask": response_mask.astype(np.float64),
            "old_logprobs": logprobs + rng.normal(0.0, 0.2, size=logprobs.shape),  # ratios around 1, some clipped
            "ref_logprobs": logprobs + rng.normal(0.0, 0.3, size=logprobs.shape),
            "old_values": old_values, "advantages": advantages,
            "returns": old_values + advantages + rng.normal(0.0, 0.3, size=advantages.shape),
            "minibatches": [rng.permutation(PPO_ROWS).reshape(2, 4) for _ in range(2)]}


MINIBATCH_FIELDS = ("ids", "mask", "position_ids", "response", "response_mask", "old_logprobs", "ref_logprobs",
                    "old_values", "advantages", "returns")
# GRPO: the same steps with its loss (no value head); REINFORCE: one step on the whole rollout.
GRPO = dataclasses.replace(PPO, algorithm="grpo", kl_coef=0.04, loss_normalisation="sequence")
REINFORCE = dataclasses.replace(PPO, algorithm="reinforce")


def update_plan(d, config):
    """The minibatches (rows of the rollout) of each step: PPO's and GRPO's K = 4, REINFORCE's one."""
    if config.spec.epochs:
        return [rows for epoch in d["minibatches"] for rows in epoch]
    return [np.arange(PPO_ROWS)]


def update_state(d, config):
    """The weights, without the value head for the critic-free algorithms."""
    return {k: v for k, v in d["state"].items() if config.spec.critic or not k.startswith("value_head.")}


def bert_torch(state, dtype, with_value_head):
    return torch_sft(tiny_config("causal"), state, dtype, with_value_head=with_value_head)


def bert_keras(state, dtype, with_value_head):
    return keras_policy(tiny_config("causal"), state, dtype, with_value_head=with_value_head)


def ppo_update_torch(d, dtype, config=PPO, build=bert_torch):
    """K minibatch steps of torch_impl.ppo's twin: the first step's gradients, each step's loss,
    the final weights. build(state, dtype, with_value_head): the policy (BERT-style by default)."""
    model = build(update_state(d, config), dtype, config.spec.critic)
    trainer = torch_ppo.PPOTrainer(model, config)
    names = [name for name, _ in model.named_parameters()]

    def minibatch(rows):
        return torch_ppo.Minibatch(*(T(d[f][rows]) for f in MINIBATCH_FIELDS))
    plan = update_plan(d, config)
    grads = torch.autograd.grad(trainer._loss(minibatch(plan[0]), config.kl_coef)[0], list(model.parameters()))
    out = {f"grad/{n}": g for n, g in zip(names, grads)}
    steps = [trainer.train_step(minibatch(rows), config.kl_coef)["loss/total"] for rows in plan]
    return np_out(loss=torch.stack(steps), **out, **{f"weight/{n}": p for n, p in model.named_parameters()
                                                     if not is_key_bias(n)})


def ppo_update_keras(d, dtype, config=PPO, build=bert_keras):
    """The same K steps through tf_impl.ppo.PPOTrainer's own traced train step."""
    model = build(update_state(d, config), dtype, config.spec.critic)
    trainer = tf_ppo.PPOTrainer(model, None, None, config, None)
    names = [hf_name(v, model)[0] for v in model.trainable_variables]

    def torch_layout(variables):  # Dense kernels are (in, out) in Keras
        return {n: np.asarray(v).T if hf_name(w, model)[1] else np.asarray(v)
                for n, v, w in zip(names, variables, model.trainable_variables)}

    def minibatch(rows):
        return tf_ppo.Minibatch(*(TF(d[f][rows]) for f in MINIBATCH_FIELDS))
    plan, kl_coef = update_plan(d, config), tf.constant(config.kl_coef, getattr(tf, dtype))
    with tf.GradientTape() as tape:
        loss = trainer._loss(minibatch(plan[0]), kl_coef)[0]
    grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables)]
    out = {f"grad/{n}": g for n, g in torch_layout(grads).items()}
    steps = [trainer.train_step(minibatch(rows), kl_coef)["loss/total"] for rows in plan]
    weights = torch_layout([v.numpy() for v in model.trainable_variables])
    return np_out(loss=tf.stack(steps), **out, **{f"weight/{n}": v for n, v in weights.items() if not is_key_bias(n)})


PPO_CASES = [
    Case("training.ppo_update", "training",
         "K = 4 minibatch steps of L^CLIP + c_V L^V - c_H H, global-norm clip, Adam: tf_impl.ppo vs its torch twin",
         ppo_inputs, None, ppo_update_torch, ppo_update_keras, tol=dict(GRADIENT_TOL),
         note="Outputs: each step's loss, the first step's gradient of every parameter (value head "
              "included) and every weight after the 4 steps but the attention key biases (their true "
              "gradient is zero: see `training.key_bias_round_off`). The torch twin uses TensorFlow's "
              "clipping rule and Keras' epsilon placement (torch_impl/ppo.py says why).",
         shows=(ref.ppo_objective, torch_losses.ppo_objective, tf_losses.ppo_objective)),
    Case("training.grpo_update", "training",
         "K = 4 minibatch steps of GRPO's clipped surrogate + beta k3 (per-sequence mean), global-norm clip, Adam",
         ppo_inputs, None, functools.partial(ppo_update_torch, config=GRPO),
         functools.partial(ppo_update_keras, config=GRPO), tol=dict(GRADIENT_TOL),
         note="The PPO case's rollout and steps with --algorithm grpo: no value head, the KL to the "
              "reference inside the loss. Outputs as `training.ppo_update`.",
         shows=(ref.grpo_objective, torch_losses.grpo_objective, tf_losses.grpo_objective)),
    Case("training.reinforce_update", "training",
         "one step of -mean A log pi on the whole rollout, global-norm clip, Adam (reinforce and rloo)",
         ppo_inputs, None, functools.partial(ppo_update_torch, config=REINFORCE),
         functools.partial(ppo_update_keras, config=REINFORCE), tol=dict(GRADIENT_TOL),
         note="REINFORCE and RLOO share this step; they differ in their advantages (losses level).",
         shows=(ref.reinforce_objective, torch_losses.reinforce_objective, tf_losses.reinforce_objective)),
]
CASES += PPO_CASES


# ----------------------------------------------------------------------------- one reward-model step

# A power of two (Keras keeps the learning rate in a float32 variable), and small: Adam's first step
# is lr g / (|g| + eps), so where |g| is near eps float32 round-off in g moves a weight by up to
# lr |dg| / eps; at 2^-12 that stays ~50x under the float32 tolerance.
RM_LR = 2.0 ** -12


def reward_model_inputs(rng):
    """Weights of a reward model and a batch of 4 (chosen, rejected) pairs, right-padded."""
    config = tiny_config("causal")
    state = {k: v for k, v in random_state(config, rng).items() if not k.startswith("cls.")}
    state["reward_head.dense.weight"] = rng.normal(0.0, 0.3, size=(1, config.hidden_size))
    state["reward_head.dense.bias"] = rng.normal(0.0, 0.1, size=(1,))
    chosen = padded_ids(rng, 4, list(rng.integers(3, 10, size=4)), 23)
    rejected = padded_ids(rng, 4, list(rng.integers(3, 10, size=4)), 23)
    return {"state": state, "chosen": chosen, "rejected": rejected}


def reward_model_step_torch(d, dtype):
    """The Bradley-Terry step written with torch_impl.losses; Adam with Keras' epsilon placement
    (eps / sqrt(1 - beta2^t) in torch's terms, t = 1) and the reward model's epsilon."""
    model = torch_architectures.RewardModel(tiny_config("causal")).to(getattr(torch, dtype)).eval()
    load_state_dict_strict(model, {k: T(v) for k, v in d["state"].items()}, "parity")
    optimizer = torch.optim.Adam(model.parameters(), lr=RM_LR, betas=ADAM_BETAS,
                                 eps=torch_ppo.keras_epsilon(REWARD_MODEL_ADAM_EPS, 1))
    loss = torch_losses.bradley_terry_loss(model(*map(T, d["chosen"])), model(*map(T, d["rejected"])))
    loss.backward()
    optimizer.step()
    return np_out(loss=loss, **{k: v for k, v in state_dict_for_saving(model).items() if not is_key_bias(k)})


def reward_model_step_keras(d, dtype):
    """tf_impl.reward_model's own traced step, with the optimizer `train_reward_model` builds."""
    model = tf_architectures.RewardModel(tiny_config("causal"), dtype=dtype)
    assign_numpy_state_dict(model, d["state"], "parity")
    optimizer = tf_reward_model.reward_model_optimizer(RM_LR)
    optimizer.build(model.trainable_variables)
    loss, _ = tf_reward_model.bradley_terry_step(model, optimizer)(*map(TF, d["chosen"]), *map(TF, d["rejected"]))
    return np_out(loss=loss, **{k: v for k, v in to_numpy_state_dict(model).items() if not is_key_bias(k)})


CASES += [
    Case("training.reward_model_step", "training",
         "one Adam step of -mean log sigmoid(r(chosen) - r(rejected)) from the same weights and pairs",
         reward_model_inputs, None, reward_model_step_torch, reward_model_step_keras, tol=dict(GRADIENT_TOL),
         note="Dropout off. Outputs: the loss and every weight after the step but the attention key "
              "biases (see `training.key_bias_round_off`).",
         shows=(None, reward_model_step_torch, tf_reward_model.bradley_terry_step)),
]
