"""The update half of PPO (and GRPO, RLOO, REINFORCE) in PyTorch: a twin of
`tf_impl.ppo.PPOTrainer`'s minibatch step, name for name, for the parity cases
`training.ppo_update`, `training.grpo_update` and `training.reinforce_update`. RL itself trains in
TensorFlow; this file shows the same step written with `torch_impl.losses` on `SFTModel`, the
loss the algorithm's record names (`shared.algorithms`):

    ppo_objective        loss = L^CLIP(log pi, log pi_old, A) + vf_coef L^V(V, V_old, R) - ent_coef H(pi)
    grpo_objective       loss = L^GRPO(log pi, log pi_old, log ref, A; beta) - ent_coef H(pi)
    reinforce_objective  loss = -mean A log pi - ent_coef H(pi)   (reinforce and rloo)
    g    = clip_by_global_norm(dloss/dtheta, max_grad_norm);  theta <- Adam(theta, g)

Two details follow TensorFlow's side exactly (each would otherwise move the weights by more
than the parity tolerance): the global-norm clipping is tf.clip_by_global_norm's rule,
g * c / max(|g|, c) (torch's clip_grad_norm_ divides by |g| + 1e-6), and Adam adds epsilon to
sqrt(v) as Keras does ("epsilon hat"), i.e. torch.optim.Adam's eps becomes eps / sqrt(1 - beta2^t)
at step t.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from shared.config import PPOConfig
from shared.constants import ADAM_BETAS, ADAM_EPS
from torch_impl import losses
from torch_impl.model import SFTModel, at_least_float32


class Minibatch(NamedTuple):
    """What one PPO update step needs, rows of the rollout: (B, P+R) sequence inputs, (B, R) the rest."""
    ids: torch.Tensor              # (B, P+R) [query | response]
    mask: torch.Tensor             # (B, P+R) attention mask
    position_ids: torch.Tensor     # (B, P+R)
    response: torch.Tensor         # (B, R) the sampled tokens
    response_mask: torch.Tensor    # (B, R) 1 on the tokens that count
    old_logprobs: torch.Tensor     # (B, R) log pi_old, at sampling time
    ref_logprobs: torch.Tensor     # (B, R) log ref (GRPO's KL term)
    old_values: torch.Tensor       # (B, R)
    advantages: torch.Tensor       # (B, R)
    returns: torch.Tensor          # (B, R)


def response_slice(per_position, response_length):
    """The R positions whose outputs score the response tokens: position t predicts token t + 1,
    so the last R positions before the final one. (B, P+R, ...) -> (B, R, ...)."""
    total = per_position.shape[1]
    return per_position[:, total - response_length - 1: total - 1]


def response_outputs(model, ids, mask, position_ids, response_length):
    """Sparse prediction for PPO: the backbone over [query | response], then the LM head (and the
    value head, if the model has one) on the R positions that score the response only -- not on
    every position then sliced. Returns (logits (B, R, V), values (B, R) or None)."""
    hidden_states, _, _ = model.backbone(ids, attention_mask=mask, position_ids=position_ids)
    hidden_states = response_slice(hidden_states, response_length)          # (B, R, C)
    values = model.value_head(hidden_states) if model.value_head is not None else None
    return model.lm_head(hidden_states), values


def keras_epsilon(epsilon: float, step: int) -> float:
    """torch.optim.Adam's eps that gives Keras' update at step t: Keras adds epsilon to sqrt(v),
    torch to sqrt(v_hat) = sqrt(v) / sqrt(1 - beta2^t), so eps / sqrt(1 - beta2^t)."""
    return epsilon / math.sqrt(1.0 - ADAM_BETAS[1] ** step)


def clip_by_global_norm(grads, clip_norm: float):
    """tf.clip_by_global_norm: every gradient times clip_norm / max(global norm, clip_norm).
    Returns (clipped gradients, the global norm before clipping)."""
    global_norm = torch.sqrt(sum(torch.sum(g * g) for g in grads))
    scale = clip_norm / torch.maximum(global_norm, torch.as_tensor(clip_norm, dtype=global_norm.dtype))
    return [g * scale for g in grads], global_norm


class PPOTrainer:
    """The update step of `tf_impl.ppo.PPOTrainer` (no rollout, no reward: those run in TensorFlow)."""

    def __init__(self, policy: SFTModel, config: PPOConfig):
        self.policy, self.config = policy, config
        self.spec = config.spec                               # what the algorithm chooses
        self.objective = getattr(losses, self.spec.loss)      # its loss, e.g. losses.ppo_objective
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=config.lr, betas=ADAM_BETAS, eps=ADAM_EPS)

    # ---- update: the algorithm's loss, one minibatch
    def _loss(self, batch: Minibatch, kl_coef=None):
        """The algorithm's loss of a minibatch (`losses.<spec.loss>`) and its statistics (see
        tf_impl.ppo.PPOTrainer._loss). Returns (loss, stats)."""
        config = self.config
        R = batch.response.shape[1]
        logits, values = response_outputs(self.policy, batch.ids, batch.mask, batch.position_ids, R)
        logits = at_least_float32(logits) / config.temperature             # (B, R, V)
        logprobs = losses.categorical_log_prob(logits, batch.response)     # (B, R)
        entropy = losses.masked_mean(losses.entropy_from_logits(logits), batch.response_mask)
        values = at_least_float32(values) if values is not None else None  # (B, R) with a critic
        loss, stats = self.objective(logprobs, entropy, values, batch, config, kl_coef)
        return loss, {**stats, "loss/total": loss, "policy/entropy": entropy}

    def _apply(self, grads, stats):
        """Clip by the global norm, one Adam step; adds the (pre-clip) gradient norm to stats."""
        config = self.config
        variables = list(self.policy.parameters())
        if config.max_grad_norm > 0:
            grads, grad_norm = clip_by_global_norm(grads, config.max_grad_norm)
        else:
            grad_norm = torch.sqrt(sum(torch.sum(g * g) for g in grads))
        step = self.optimizer.state[variables[0]].get("step", 0) + 1
        for group in self.optimizer.param_groups:  # Keras' epsilon placement, in torch's terms
            group["eps"] = keras_epsilon(ADAM_EPS, int(step))
        for variable, grad in zip(variables, grads):
            variable.grad = grad
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {**stats, "policy/grad_norm": grad_norm}

    def _train_step(self, batch: Minibatch, kl_coef=None):
        loss, stats = self._loss(batch, kl_coef)
        grads = torch.autograd.grad(loss, list(self.policy.parameters()))
        return self._apply(list(grads), {name: value.detach() for name, value in stats.items()})

    train_step = _train_step
