"""Losses and RL quantities in TensorFlow. Mirrored name for name by `torch_impl/losses.py`; the
NumPy reference of each is the function of the same name in `shared/reference.py`.

Log-probabilities and entropies come from `tfp.distributions.Categorical`, as in the seed
documents. Shapes: B batch, T time, V vocabulary. Masks are 1 on positions that count.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from shared.constants import GRPO_EPS, IGNORE_INDEX, WHITEN_EPS


def masked_mean(x, mask=None):
    """sum(x * m) / sum(m); the plain mean without a mask."""
    if mask is None:
        return tf.reduce_mean(x)
    mask = tf.cast(mask, x.dtype)
    return tf.reduce_sum(x * mask) / tf.reduce_sum(mask)


def token_nll(logits, labels, ignore_index=IGNORE_INDEX):
    """-log softmax(z_t)[y_t] per position, 0 where y_t == ignore_index: (..., V), (...) -> (...)."""
    keep = labels != ignore_index
    nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.where(keep, labels, tf.zeros_like(labels)),
                                                         logits=logits)
    return tf.where(keep, nll, tf.zeros_like(nll))


def cross_entropy(logits, labels, ignore_index=IGNORE_INDEX):
    """CE = -(1/N) sum_{i: y_i != ignore} log softmax(z_i)[y_i]."""
    labels = tf.convert_to_tensor(labels)
    return masked_mean(token_nll(logits, labels, ignore_index), labels != ignore_index)


def shift_for_next_token(logits, labels):
    """Pair the logits at t with the label at t + 1: (B, T, V), (B, T) -> (B, T-1, V), (B, T-1)."""
    return logits[:, :-1], labels[:, 1:]


def completion_only_loss(logits, labels, ignore_index=IGNORE_INDEX):
    """Next-token CE: logits at t predict labels at t + 1; prompt positions carry ignore_index."""
    return cross_entropy(*shift_for_next_token(logits, labels), ignore_index)


def categorical_log_prob(logits, actions):
    """log pi(a | s) = log softmax(z)[a]: (B, T, V), (B, T) -> (B, T)."""
    return tfp.distributions.Categorical(logits=logits).log_prob(actions)


def sequence_log_prob(logits, tokens, mask=None):
    """Chain rule: log P(w_1..w_m) = sum_i log P(w_i | w_<i). -> (B,)"""
    logp = categorical_log_prob(logits, tokens)                              # (B, T)
    if mask is not None:
        logp = logp * tf.cast(mask, logp.dtype)
    return tf.reduce_sum(logp, -1)


def entropy_from_logits(logits):
    """H(pi) = -sum_a pi(a) log pi(a): (B, T, V) -> (B, T)."""
    return tfp.distributions.Categorical(logits=logits).entropy()


def k3(logprobs, ref_logprobs):
    """Per token, k3 = (r - 1) - log r, r = ref(a) / pi(a): unbiased for KL(pi || ref), always >= 0."""
    log_r = ref_logprobs - logprobs
    return tf.math.expm1(log_r) - log_r


def kl_to_reference(logprobs, ref_logprobs, estimator="k1", mask=None):
    """KL(pi || ref) from samples of pi: k1 = -log r, k3 = (r - 1) - log r, log r = log ref - log pi."""
    if estimator == "k1":
        kl = logprobs - ref_logprobs
    elif estimator == "k3":
        kl = k3(logprobs, ref_logprobs)
    else:
        raise ValueError(f"estimator must be 'k1' or 'k3', got {estimator!r}")
    return masked_mean(kl, mask)


def whiten(x, mask=None, shift_mean=True, eps=WHITEN_EPS):
    """(x - mean) / sqrt(var + eps) over the masked entries, var biased (as tf.nn.moments)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * tf.math.rsqrt(var + eps)
    return out if shift_mean else out + mean


def gae(rewards, values, gamma, lam, mask=None):
    """A_t = delta_t + gamma lam A_{t+1}, delta_t = r_t + gamma V_{t+1} - V_t. Returns (A, A + V).

    t + 1 is the next unmasked position: left padding and holes are passed over (see the reference).
    """
    B, T = rewards.shape
    mask = tf.ones_like(rewards) if mask is None else tf.cast(mask, rewards.dtype)
    advantages = []
    next_value = tf.zeros([B], dtype=rewards.dtype)       # V and A of the next unmasked step
    next_advantage = tf.zeros([B], dtype=rewards.dtype)
    for t in reversed(range(T)):
        step = mask[:, t] > 0                             # (B,) is t a step of the episode?
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        advantages.append(tf.where(step, advantage, tf.zeros_like(advantage)))
        next_value = tf.where(step, values[:, t], next_value)  # a masked t passes them on
        next_advantage = tf.where(step, advantage, next_advantage)
    advantages = tf.stack(advantages[::-1], 1)                              # (B, T)
    return advantages, (advantages + values) * mask


def ppo_clip_loss(logprobs, old_logprobs, advantages, clip_range, mask=None):
    """L^CLIP = mean_t max(-A_t r_t, -A_t clip(r_t, 1 - eps, 1 + eps)). Returns (loss, clipfrac, update_kl)."""
    logratio = logprobs - old_logprobs
    ratio = tf.exp(logratio)
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * tf.clip_by_value(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(tf.maximum(pg_loss1, pg_loss2), mask)
    clipfrac = masked_mean(tf.cast(pg_loss2 > pg_loss1, logprobs.dtype), mask)
    update_kl = masked_mean((ratio - 1.0) - logratio, mask)  # how far this update moved the policy
    return loss, tf.stop_gradient(clipfrac), tf.stop_gradient(update_kl)


def value_loss(values, old_values, returns, clip_range_value, mask=None):
    """0.5 mean max((V - R)^2, (V_clip - R)^2), V_clip = V_old + clip(V - V_old, -c, c). Returns (loss, clipfrac)."""
    v_clipped = old_values + tf.clip_by_value(values - old_values, -clip_range_value, clip_range_value)
    v_loss_unclipped = (values - returns) ** 2
    v_loss_clipped = (v_clipped - returns) ** 2
    loss = 0.5 * masked_mean(tf.maximum(v_loss_unclipped, v_loss_clipped), mask)
    clipfrac = masked_mean(tf.cast(v_loss_clipped > v_loss_unclipped, values.dtype), mask)
    return loss, tf.stop_gradient(clipfrac)


def kl_penalty_rewards(scores, logprobs, ref_logprobs, kl_coef, mask):
    """r_t = -beta (log pi - log ref), plus the score at the last unmasked token (none for an
    empty row). Returns (rewards, kl)."""
    mask = tf.cast(mask, logprobs.dtype)
    kl = (logprobs - ref_logprobs) * mask
    positions = tf.range(tf.shape(mask)[1])                                 # (T,)
    last = tf.reduce_max(tf.where(mask > 0, positions, -1), -1)             # (B,), -1 if empty
    score_at_last = tf.cast(positions == last[:, None], kl.dtype) * scores[:, None]  # (B, T)
    return -kl_coef * kl + score_at_last, kl


def bradley_terry_loss(chosen_scores, rejected_scores):
    """-mean log sigmoid(s_chosen - s_rejected)."""
    return tf.reduce_mean(tf.math.softplus(rejected_scores - chosen_scores))


def reinforce_loss(logprobs, advantages, mask=None):
    """L = -mean_t A_t log pi(a_t | s_t) (Williams 1992), over the unmasked tokens."""
    return masked_mean(-advantages * logprobs, mask)


def rloo_advantages(rewards, k):
    """A_i = R_i - mean of the other k - 1 rewards of its group (rows in groups of k): (B,) -> (B,)."""
    groups = tf.reshape(rewards, [-1, k])                                  # (B / k, k)
    others = (tf.reduce_sum(groups, -1, keepdims=True) - groups) / (k - 1)
    return tf.reshape(groups - others, [-1])


def grpo_advantages(scores, group_size, eps=GRPO_EPS):
    """A_i = (s_i - mean_g s) / (std_g s + eps), std with G - 1 (rows in groups of G): (B,) -> (B,)."""
    groups = tf.reshape(scores, [-1, group_size])                          # (B / G, G)
    mean = tf.reduce_mean(groups, -1, keepdims=True)
    std = tf.sqrt(tf.reduce_sum((groups - mean) ** 2, -1, keepdims=True) / (group_size - 1))
    return tf.reshape((groups - mean) / (std + eps), [-1])


def grpo_loss(logprobs, old_logprobs, ref_logprobs, advantages, clip_range, kl_coef, mask,
              normalisation="sequence"):
    """-min(r A, clip(r) A) + beta k3 per token, averaged per sequence then over rows ("sequence")
    or over all tokens ("token"). Returns (loss, clipfrac, kl)."""
    mask = tf.cast(mask, logprobs.dtype)
    ratio = tf.exp(logprobs - old_logprobs)
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * tf.clip_by_value(ratio, 1.0 - clip_range, 1.0 + clip_range)
    kl = k3(logprobs, ref_logprobs)                                        # (B, T)
    per_token = tf.maximum(pg_loss1, pg_loss2) + kl_coef * kl              # (B, T)
    if normalisation == "sequence":
        loss = tf.reduce_mean(tf.reduce_sum(per_token * mask, -1) / tf.maximum(tf.reduce_sum(mask, -1), 1.0))
    elif normalisation == "token":
        loss = masked_mean(per_token, mask)
    else:
        raise ValueError(f"normalisation must be 'sequence' or 'token', got {normalisation!r}")
    clipfrac = masked_mean(tf.cast(pg_loss2 > pg_loss1, logprobs.dtype), mask)
    return loss, tf.stop_gradient(clipfrac), tf.stop_gradient(masked_mean(kl, mask))


# ----------------------------------------------------------------------------- one loss per RL algorithm
# The loss an algorithm's record names (`shared.algorithms`, field `loss`). Each takes the policy's
# log-probs (B, R), the token-mean entropy, the values (B, R) (None without a critic), the
# minibatch's rollout quantities (`batch`: old_logprobs, ref_logprobs, old_values, advantages,
# returns, response_mask), the PPOConfig and beta; returns (loss, statistics).

def ppo_objective(logprobs, entropy, values, batch, config, kl_coef):
    """PPO: L = L^CLIP + c_V L^V - c_H H (Schulman et al. 2017, eq. 9); beta is in the rewards."""
    pg_loss, clipfrac, approxkl = ppo_clip_loss(logprobs, batch.old_logprobs, batch.advantages, config.clip_range,
                                                batch.response_mask)
    v_loss, vf_clipfrac = value_loss(values, batch.old_values, batch.returns, config.clip_range_value,
                                     batch.response_mask)
    loss = pg_loss + config.vf_coef * v_loss - config.ent_coef * entropy
    ratio_mean = tf.stop_gradient(masked_mean(tf.exp(logprobs - batch.old_logprobs), batch.response_mask))
    return loss, {"loss/policy": pg_loss, "loss/value": v_loss, "policy/approxkl": approxkl,
                  "policy/clipfrac": clipfrac, "val/clipfrac": vf_clipfrac, "policy/ratio_mean": ratio_mean}


def grpo_objective(logprobs, entropy, values, batch, config, kl_coef):
    """GRPO: L = L^GRPO(log pi, log pi_old, log ref, A; beta) - c_H H (Shao et al. 2024); no critic."""
    pg_loss, clipfrac, kl = grpo_loss(logprobs, batch.old_logprobs, batch.ref_logprobs, batch.advantages,
                                      config.clip_range, kl_coef, batch.response_mask, config.loss_normalisation)
    loss = pg_loss - config.ent_coef * entropy
    return loss, {"loss/policy": pg_loss, "policy/clipfrac": clipfrac, "policy/kl_to_reference": kl}


def reinforce_objective(logprobs, entropy, values, batch, config, kl_coef):
    """REINFORCE and RLOO: L = -mean A log pi - c_H H (Williams 1992); beta is in the rewards."""
    pg_loss = reinforce_loss(logprobs, batch.advantages, batch.response_mask)
    loss = pg_loss - config.ent_coef * entropy
    return loss, {"loss/policy": pg_loss}


def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    """-mean log sigmoid(beta [(log pi(y_c) - log ref(y_c)) - (log pi(y_r) - log ref(y_r))]).
    Returns (loss, chosen_rewards, rejected_rewards), the implicit rewards beta (log pi - log ref)."""
    chosen_rewards = beta * (chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (rejected_logps - ref_rejected_logps)
    loss = tf.reduce_mean(tf.math.softplus(-(chosen_rewards - rejected_rewards)))
    return loss, tf.stop_gradient(chosen_rewards), tf.stop_gradient(rejected_rewards)
