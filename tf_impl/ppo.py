"""RL with a KL penalty to the SFT model, in TensorFlow: PPO (Ziegler et al. 2019; Ouyang et al.
2022) and the critic-free members of its family -- GRPO (Shao et al. 2024), RLOO (Ahmadian et
al. 2024) and REINFORCE with a baseline (Williams 1992) -- on one machinery. One iteration:

    rollout   sample completions of a batch of prompts from the policy (KV cache, tf.function);
              grpo and rloo sample group_size completions of each prompt. Log-probs under the
              policy and the frozen reference (the SFT model), and (ppo) the value head's values
    reward    score each completion, then the advantages (`reward`):
                ppo        r_t = -beta (log pi - log ref) + the score at the last token; GAE
                reinforce  R = score - beta sum_t (log pi - log ref); A = R - moving-average baseline
                rloo       the same R; A = R - mean R of the other samples of the prompt
                grpo       A = (score - group mean) / (group std + eps); the KL is in the loss
    update    ppo, grpo: ppo_epochs passes over shuffled minibatches of the clipped surrogate
              (ppo: + clipped value loss; grpo: + beta k3 KL); reinforce, rloo: one step of
              -A log pi on the whole rollout. Global-norm clipping, Adam (one tf.function step)
    control   adapt beta towards the target KL (if set)

Sampling uses Gumbel noise drawn per (seed, iteration, row) in NumPy, so a run is a pure
function of its seed and resumes exactly, and `TextGenEnv` reproduces its tokens.

Reliability: Ctrl-C (SIGINT) or SIGTERM finishes the current iteration, writes a checkpoint and
returns; a run killed at any moment resumes from its newest complete checkpoint to the same final
weights, bit for bit; a loss or gradient norm that is not finite stops the run before anything
else is written. Mixed precision (`dtype="mixed_bfloat16"`) keeps the variables in float32 and
computes log-probs, values, losses and KL in float32. Under a `tf.distribute` strategy each
minibatch is split between the replicas and the summed gradients are applied once.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tensorflow as tf
from safetensors.numpy import load_file, save

from shared.config import ModelConfig, PPOConfig
from shared.data import collate, encode_prompt
from shared.errors import CheckpointError, SftrlError
from shared.generation import gumbel_noise
from shared.interrupt import StopRequest
from shared.io import (append_jsonl, atomic_write_bytes, atomic_write_text, latest_checkpoint, truncate_jsonl,
                       write_checkpoint)
from shared.rewards import score_all
from shared.tasks import task_scores
from shared.tensorboard import SummaryWriter
from tf_impl import losses
from tf_impl.convert import assign_numpy_state_dict, to_numpy_state_dict
from tf_impl.generate import generate
from tf_impl.lora import enable_lora, merged_state_dict
from tf_impl.model import PolicyModel, at_least_float32
from tf_impl.optimizers import adam


# ----------------------------------------------------------------------------- KL control

class FixedKLController:
    def __init__(self, kl_coef):
        self.value = kl_coef

    def update(self, current_kl, n_steps):
        pass


class AdaptiveKLController:
    """beta <- beta (1 + clip(KL / target - 1, -0.2, 0.2) n / horizon)  (Ziegler et al. 2019)."""

    def __init__(self, kl_coef, target, horizon):
        self.value, self.target, self.horizon = kl_coef, target, horizon

    def update(self, current_kl, n_steps):
        proportional_error = float(np.clip(current_kl / self.target - 1.0, -0.2, 0.2))
        self.value *= 1.0 + proportional_error * n_steps / self.horizon


# ----------------------------------------------------------------------------- models

def load_policy_and_reference(sft_dir, dtype=None, lora=(0, 0.0), log=print,
                              with_value_head=True) -> tuple[PolicyModel, PolicyModel]:
    """The policy (with a zero-initialised value head: PPO's critic; with_value_head=False for the
    critic-free algorithms) and the frozen reference, both from the SFT checkpoint (`config.json`
    + `model.safetensors`, written by PyTorch).

    dtype: a Keras dtype policy, e.g. "mixed_bfloat16" (float32 variables, bfloat16 compute).
    Called inside `strategy.scope()`, the variables are mirrored on every replica."""
    sft_dir = Path(sft_dir)
    try:
        config = ModelConfig.from_json_file(sft_dir / "config.json")
    except SftrlError as e:
        raise CheckpointError(f"--policy: {e}") from None
    if not config.is_causal:
        raise CheckpointError(f"--policy {sft_dir}: a bidirectional (masked-LM) model cannot generate; "
                              "train the SFT model with --objective clm")
    try:
        weights = load_file(str(sft_dir / "model.safetensors"))
    except FileNotFoundError:
        raise CheckpointError(f"--policy {sft_dir}: no model.safetensors") from None
    policy = PolicyModel(config, with_value_head=with_value_head, dtype=dtype)
    value_head = {k: v for k, v in to_numpy_state_dict(policy).items() if k.startswith("value_head.")}
    assign_numpy_state_dict(policy, {**weights, **value_head}, str(sft_dir))
    reference = PolicyModel(config, dtype=dtype)
    assign_numpy_state_dict(reference, weights, str(sft_dir))
    reference.trainable = False
    rank, alpha = lora
    if rank:
        trainable = enable_lora(policy, rank, alpha)
        total = sum(int(np.prod(v.shape)) for v in policy.weights)
        log(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%): LoRA adapters "
            f"of rank {rank} on query/key/value" + (", and the value head" if with_value_head else ""))
    return policy, reference


def export_policy(policy: PolicyModel, tokenizer, out_dir) -> None:
    """The policy without its value head, as a folder `torch_impl.checkpoint.load_pretrained` and
    `transformers` read: config.json, model.safetensors and the tokenizer files
    (`Tokenizer.save_pretrained`). The weights are the float32 variables, whatever the compute
    dtype was; LoRA adapters are merged into their layers (a plain model)."""
    out_dir = Path(out_dir)
    state = {k: v for k, v in merged_state_dict(policy).items() if not k.startswith("value_head.")}
    atomic_write_bytes(out_dir / "model.safetensors", save(state, metadata={"format": "pt"}))
    policy.config.to_json_file(out_dir / "config.json")
    tokenizer.save_pretrained(out_dir, policy.config.max_position_embeddings, generates=True)


# ----------------------------------------------------------------------------- rollout

@dataclass
class Rollout:
    query_ids: np.ndarray       # (B, P) left-padded prompts
    query_mask: np.ndarray      # (B, P)
    response: np.ndarray        # (B, R) sampled tokens, pad after [SEP]
    response_mask: np.ndarray   # (B, R) 1 up to and including [SEP]
    logprobs: np.ndarray        # (B, R) under the policy at sampling time
    ref_logprobs: np.ndarray    # (B, R) under the reference
    values: np.ndarray          # (B, R) value of the state each token was chosen in (0 without a critic)
    scores: np.ndarray          # (B,)  reward of each completion
    completions: list


def response_mask_of(response, eos_id):
    """1 on every token up to and including the first [SEP] of each row, 0 after it."""
    is_eos = (response == eos_id).astype(np.int64)
    after_eos = np.cumsum(is_eos, axis=1) - is_eos  # eos tokens strictly before this position
    return (after_eos == 0).astype(np.int64)


def sequence_inputs(query_ids, query_mask, response, response_mask):
    """[query | response] ids, attention mask and position ids (real tokens counted, as in generate)."""
    ids = tf.concat([tf.cast(query_ids, tf.int32), tf.cast(response, tf.int32)], 1)       # (B, P + R)
    mask = tf.concat([tf.cast(query_mask, tf.int32), tf.cast(response_mask, tf.int32)], 1)
    position_ids = tf.maximum(tf.cumsum(mask, -1) - 1, 0)
    return ids, mask, position_ids


def response_slice(per_position, response_length):
    """The positions that chose the response tokens, of any per-position tensor (logits, values):
    position P-1+t chose token t. (B, P+R, ...) -> (B, R, ...)"""
    total = tf.shape(per_position)[1]
    return per_position[:, total - response_length - 1: total - 1]


def response_outputs(model, ids, mask, position_ids, response_length, training=False, sparse=True):
    """Sparse prediction for PPO: the backbone over [query | response], then the LM head (and the
    value head, if the model has one) on the R positions that score the response only -- not on
    every position then sliced (sparse=False: that dense path, kept for the benchmark's
    comparison). Returns (logits (B, R, V), values (B, R) or None)."""
    hidden_states, _, _ = model.bert(ids, attention_mask=mask, position_ids=position_ids, training=training)
    if sparse:
        hidden_states = response_slice(hidden_states, response_length)      # (B, R, C)
    logits = model.cls(hidden_states)                                       # (B, R or P+R, V)
    values = model.value_head(hidden_states) if model.value_head is not None else None  # (B, R or P+R)
    if not sparse:  # every position's outputs, then the R that score the response
        logits = response_slice(logits, response_length)
        values = None if values is None else response_slice(values, response_length)
    return logits, values


class Minibatch(NamedTuple):
    """What one PPO update step needs, rows of the rollout: (B, P+R) sequence inputs, (B, R) the rest."""
    ids: tf.Tensor              # (B, P+R) [query | response]
    mask: tf.Tensor             # (B, P+R) attention mask
    position_ids: tf.Tensor     # (B, P+R)
    response: tf.Tensor         # (B, R) the sampled tokens
    response_mask: tf.Tensor    # (B, R) 1 on the tokens that count
    old_logprobs: tf.Tensor     # (B, R) log pi_old, at sampling time
    ref_logprobs: tf.Tensor     # (B, R) log ref (GRPO's KL term)
    old_values: tf.Tensor       # (B, R)
    advantages: tf.Tensor       # (B, R)
    returns: tf.Tensor          # (B, R)

    @classmethod
    def of_rollout(cls, rollout, advantages, returns):
        """Every row of a rollout, with its advantages and returns (B, R)."""
        return cls(*sequence_inputs(rollout.query_ids, rollout.query_mask, rollout.response, rollout.response_mask),
                   tf.constant(rollout.response, tf.int32), tf.constant(rollout.response_mask, tf.float32),
                   tf.constant(rollout.logprobs), tf.constant(rollout.ref_logprobs), tf.constant(rollout.values),
                   advantages, returns)

    def rows(self, index):
        """The minibatch of these rows (a tensor of row numbers, or a slice)."""
        if isinstance(index, slice):
            return Minibatch(*(t[index] for t in self))
        return Minibatch(*(tf.gather(t, index) for t in self))


class NonFiniteLossError(SftrlError):
    """A minibatch whose loss or gradient norm is NaN or infinite: the update has gone wrong."""


class PPOTrainer:
    def __init__(self, policy, reference, tokenizer, config: PPOConfig, reward_fn, log=print, strategy=None,
                 prompt_length=None, sparse_head=True):
        """strategy: a `tf.distribute.Strategy` whose scope the policy and reference were built in,
        or None (one device: the plain path). Rollouts run outside the replicas (each worker of a
        multi-worker run computes the same one from the same seed and weights: the workers must
        compute alike, i.e. the same hardware and software); each minibatch update is split.
        prompt_length: left-pad every rollout's prompts to at least this length, so the traced
        steps see one shape (one trace, not one per batch's longest prompt).
        sparse_head=False: the LM and value heads on every position, then sliced (the dense path
        the benchmark compares against; the same numbers)."""
        self.policy, self.reference, self.tokenizer = policy, reference, tokenizer
        self.config, self.reward_fn, self.log = config, reward_fn, log
        self.strategy = strategy
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            self.optimizer = adam(config.lr)
            self.optimizer.build(policy.trainable_variables)
        self.kl_controller = (AdaptiveKLController(config.kl_coef, config.target_kl, config.kl_horizon)
                              if config.target_kl else FixedKLController(config.kl_coef))
        step = self._train_step if strategy is None else self._distributed_train_step
        # XLA fuses each traced step into a few compiled kernels (one compile per input shape; the
        # shapes are fixed by prompt_length and max_new_tokens). Not with a strategy: its
        # cross-replica reductions cannot be compiled into the step.
        self.xla = config.xla and strategy is None
        self.train_step = tf.function(step, reduce_retracing=True, jit_compile=self.xla)
        self.score_step = tf.function(self._score, reduce_retracing=True, jit_compile=self.xla)
        self.prompt_length, self.sparse_head = prompt_length, sparse_head
        self.baseline = None  # reinforce: the moving average of the rollouts' mean reward

    # ---- rollout: sample, then score under policy and reference
    def _score(self, ids, mask, position_ids, response):
        R = tf.shape(response)[1]
        logits, values = response_outputs(self.policy, ids, mask, position_ids, R, sparse=self.sparse_head)
        ref_logits, _ = response_outputs(self.reference, ids, mask, position_ids, R, sparse=self.sparse_head)
        # float32 from here on, whatever the compute dtype (a no-op in float32)
        logits = at_least_float32(logits) / self.config.temperature       # (B, R, V)
        ref_logits = at_least_float32(ref_logits) / self.config.temperature
        logprobs = losses.categorical_log_prob(logits, response)
        values = at_least_float32(values) if values is not None else tf.zeros_like(logprobs)  # (B, R)
        return logprobs, losses.categorical_log_prob(ref_logits, response), values

    def rollout(self, records, iteration):
        config, tok = self.config, self.tokenizer
        room = self.policy.config.max_position_embeddings - config.max_new_tokens
        prompts = [encode_prompt(tok, r["prompt"], room)[0] for r in records]
        length = max(max(map(len, prompts)), self.prompt_length or 0)
        batch = collate(prompts, tok.pad_id, side="left", length=length)
        noise = np.stack([gumbel_noise((config.seed, iteration, i), (config.max_new_tokens, tok.vocab_size))
                          for i in range(len(records))])                    # (B, R, V)
        response = np.asarray(generate(self.policy, batch["input_ids"], batch["attention_mask"],
                                       config.max_new_tokens, do_sample=True, temperature=config.temperature,
                                       top_k=config.top_k, eos_id=tok.sep_id, noise=noise, jit_compile=self.xla))
        response_mask = response_mask_of(response, tok.sep_id)
        ids, mask, position_ids = sequence_inputs(batch["input_ids"], batch["attention_mask"], response,
                                                  response_mask)
        logprobs, ref_logprobs, values = self.score_step(ids, mask, position_ids, tf.constant(response, tf.int32))
        completions = [tok.decode(row[m == 1]) for row, m in zip(response, response_mask)]
        return Rollout(batch["input_ids"], batch["attention_mask"], response, response_mask,
                       logprobs.numpy(), ref_logprobs.numpy(), values.numpy(), None, completions)

    # ---- update: the algorithm's loss, one minibatch
    def _loss(self, batch: Minibatch, kl_coef=None):
        """The loss of a minibatch and its statistics. Returns (loss, stats).

        ppo: the clipped surrogate + vf_coef * clipped value loss; grpo: the clipped surrogate +
        kl_coef * k3 KL to the reference, per `loss_normalisation`; reinforce, rloo: -A log pi.
        Each minus ent_coef * entropy; every mean is over the minibatch's response tokens (grpo's
        "sequence" normalisation: over each row's tokens, then over rows). kl_coef: a scalar tensor
        (grpo; the adaptive controller changes it without a retrace)."""
        config = self.config
        R = tf.shape(batch.response)[1]
        logits, values = response_outputs(self.policy, batch.ids, batch.mask, batch.position_ids, R,
                                          sparse=self.sparse_head)
        logits = at_least_float32(logits) / config.temperature             # (B, R, V)
        logprobs = losses.categorical_log_prob(logits, batch.response)     # (B, R)
        entropy = losses.masked_mean(losses.entropy_from_logits(logits), batch.response_mask)
        if config.algorithm == "ppo":
            values = at_least_float32(values)                               # (B, R)
            pg_loss, clipfrac, update_kl = losses.ppo_clip_loss(logprobs, batch.old_logprobs, batch.advantages,
                                                               config.clip_range, batch.response_mask)
            v_loss, vf_clipfrac = losses.value_loss(values, batch.old_values, batch.returns,
                                                    config.clip_range_value, batch.response_mask)
            loss = pg_loss + config.vf_coef * v_loss - config.ent_coef * entropy
            ratio = tf.stop_gradient(tf.exp(logprobs - batch.old_logprobs))
            return loss, {"loss/policy": pg_loss, "loss/value": v_loss, "loss/total": loss,
                          "policy/entropy": entropy, "policy/approxkl": update_kl, "policy/clipfrac": clipfrac,
                          "val/clipfrac": vf_clipfrac, "policy/ratio_mean": losses.masked_mean(ratio,
                                                                                               batch.response_mask)}
        if config.algorithm == "grpo":
            pg_loss, clipfrac, kl = losses.grpo_loss(logprobs, batch.old_logprobs, batch.ref_logprobs,
                                                     batch.advantages, config.clip_range, kl_coef,
                                                     batch.response_mask, config.loss_normalisation)
            loss = pg_loss - config.ent_coef * entropy
            return loss, {"loss/policy": pg_loss, "loss/total": loss, "policy/entropy": entropy,
                          "policy/clipfrac": clipfrac, "policy/kl_to_reference": kl}
        pg_loss = losses.reinforce_loss(logprobs, batch.advantages, batch.response_mask)  # reinforce, rloo
        loss = pg_loss - config.ent_coef * entropy
        return loss, {"loss/policy": pg_loss, "loss/total": loss, "policy/entropy": entropy}

    def _apply(self, grads, stats):
        """Clip by the global norm, one Adam step; adds the (pre-clip) gradient norm to stats."""
        config = self.config
        variables = self.policy.trainable_variables
        if config.max_grad_norm > 0:
            grads, grad_norm = tf.clip_by_global_norm(grads, config.max_grad_norm)
        else:
            grad_norm = tf.linalg.global_norm(grads)
        self.optimizer.apply_gradients(zip(grads, variables))
        return {**stats, "policy/grad_norm": grad_norm}

    def _train_step(self, batch: Minibatch, kl_coef):
        with tf.GradientTape() as tape:
            loss, stats = self._loss(batch, kl_coef)
        variables = self.policy.trainable_variables
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]  # dense, as torch
        return self._apply(grads, stats)

    def _replica_gradients(self, batch: Minibatch, kl_coef):
        """One replica's gradient: its rows of the minibatch, its loss scaled by its share of the
        minibatch's response tokens, n_r / N. Every loss term is a masked mean, sum_r(x) / n_r, so

            sum over replicas of (sum_r(x) / n_r) (n_r / N) = sum(x) / N

        -- the per-token terms summed over the whole minibatch and divided by its global token
        count, as on one device (not the mean of the replicas' means, which weights a short shard's
        tokens more). The summed gradients are then the single-device gradient. GRPO's "sequence"
        normalisation is a mean over rows: there the share is the replica's rows, rows / B."""
        context = tf.distribute.get_replica_context()
        rows = tf.shape(batch.ids)[0] // context.num_replicas_in_sync
        first = context.replica_id_in_sync_group * rows
        shard = batch.rows(slice(first, first + rows))
        if self.config.algorithm == "grpo" and self.config.loss_normalisation == "sequence":
            dtype = shard.response_mask.dtype
            share = tf.cast(rows, dtype) / tf.cast(tf.shape(batch.ids)[0], dtype)
        else:
            share = tf.reduce_sum(shard.response_mask) / tf.reduce_sum(batch.response_mask)  # n_r / N
        with tf.GradientTape() as tape:
            loss, stats = self._loss(shard, kl_coef)
            loss = loss * share
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, self.policy.trainable_variables)]
        return grads, {name: value * share for name, value in stats.items()}

    def _distributed_train_step(self, batch: Minibatch, kl_coef):
        """strategy.run over the replicas, sum their gradients (an all-reduce), clip, apply once."""
        strategy = self.strategy
        grads, stats = strategy.run(self._replica_gradients, args=(batch, kl_coef))
        # one tensor at a time: MultiWorkerMirroredStrategy would stack a list into one tensor
        total = lambda value: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)  # noqa: E731
        return self._apply([total(g) for g in grads], {name: total(v) for name, v in stats.items()})

    def iteration(self, records, iteration):
        """One rollout, reward and update. Returns (metrics, rollout)."""
        t0 = time.perf_counter()
        rollout = self.rollout(records, iteration)
        t1 = time.perf_counter()
        advantages, returns, kl = self.reward(rollout, records)
        t2 = time.perf_counter()
        stats = self.update(rollout, advantages, returns, iteration)
        t3 = time.perf_counter()
        mean_kl = float(tf.reduce_mean(tf.reduce_sum(kl, 1)))
        metrics = {**self.metrics(rollout, returns, stats, mean_kl), **self.gold_scores(records, rollout),
                   "time/rollout": t1 - t0, "time/reward": t2 - t1, "time/update": t3 - t2}
        self.kl_controller.update(mean_kl, len(records))
        self.minibatch_stats = stats  # each minibatch's statistics, in order (tests read them)
        return metrics, rollout

    # ---- reward: scores, the KL penalty, the advantages of the algorithm
    def reward(self, rollout, records):
        """Scores the completions (into rollout.scores); returns (advantages, returns, kl), (B, R)
        each (returns: PPO's value targets, 0 for the others)."""
        config = self.config
        rollout.scores = np.array(score_all(self.reward_fn, [r["prompt"] for r in records], rollout.completions,
                                            [r.get("reference") for r in records]), dtype=np.float32)
        mask = tf.constant(rollout.response_mask, tf.float32)
        beta = self.kl_controller.value if config.algorithm != "grpo" else 0.0  # grpo: the KL is in the loss
        rewards, kl = losses.kl_penalty_rewards(tf.constant(rollout.scores), tf.constant(rollout.logprobs),
                                                tf.constant(rollout.ref_logprobs), beta, mask)
        if config.algorithm == "ppo":
            if config.whiten_rewards:
                rewards = losses.whiten(rewards, mask, shift_mean=False) * mask
            advantages, returns = losses.gae(rewards, tf.constant(rollout.values), config.gamma, config.lam, mask)
            if config.whiten_advantages:
                advantages = losses.whiten(advantages, mask) * mask
            return advantages, returns, kl
        # One advantage per completion, given to each of its tokens. R = score - beta sum_t KL_t.
        sequence_rewards = tf.reduce_sum(rewards, 1)                                      # (B,)
        if config.algorithm == "grpo":
            advantage = losses.grpo_advantages(tf.constant(rollout.scores), config.group_size)
        elif config.algorithm == "rloo":
            advantage = losses.rloo_advantages(sequence_rewards, config.group_size)
        else:  # reinforce: the baseline is what the earlier rollouts earned (the first: its own mean)
            mean_reward = float(tf.reduce_mean(sequence_rewards))
            if self.baseline is None:
                self.baseline = mean_reward
            advantage = sequence_rewards - self.baseline
            self.baseline = config.baseline_decay * self.baseline + (1.0 - config.baseline_decay) * mean_reward
        return advantage[:, None] * mask, tf.zeros_like(mask), kl

    # ---- update: ppo_epochs passes over shuffled minibatches
    def update(self, rollout, advantages, returns, iteration):
        """Every minibatch step of the iteration; returns their statistics, in order."""
        config = self.config
        everything = Minibatch.of_rollout(rollout, advantages, returns)
        B = len(rollout.response)
        epochs, rows = config.steps_per_rollout
        kl_coef = tf.constant(self.kl_controller.value, tf.float32)
        stats = []
        for epoch in range(epochs):
            order = np.random.default_rng([config.seed, iteration, epoch]).permutation(B)
            for start in range(0, B, rows):
                idx = tf.constant(order[start:start + rows])
                stats.append(self.train_step(everything.rows(idx), kl_coef))
                # A NaN or inf here would be written into every weight: stop at the first one.
                for name, what in (("loss/total", "loss"), ("policy/grad_norm", "gradient norm")):
                    value = float(stats[-1][name])
                    if not math.isfinite(value):
                        raise NonFiniteLossError(f"iteration {iteration}: the {config.algorithm.upper()} {what} is "
                                                 f"{value} (minibatch {len(stats)})")
        return stats

    def metrics(self, rollout, returns, stats, mean_kl) -> dict:
        """What an iteration logs (TRL's names); the update's statistics are means over its minibatches."""
        def over_minibatches(name):
            return float(np.mean([float(s[name]) for s in stats]))
        metrics = {
            "objective/scores": float(rollout.scores.mean()),

            "objective/kl": mean_kl,
            "objective/kl_coef": float(self.kl_controller.value),
            "objective/entropy": over_minibatches("policy/entropy"),
            "loss/policy": over_minibatches("loss/policy"),
            "objective/response_length": float(rollout.response_mask.sum(1).mean()),
        }
        if self.config.algorithm == "ppo":
            returns_np, values_np, m = returns.numpy(), rollout.values, rollout.response_mask.astype(bool)
            var_returns = float(np.var(returns_np[m]))
            metrics.update({
                "policy/approxkl": over_minibatches("policy/approxkl"),
                "policy/clipfrac": over_minibatches("policy/clipfrac"),
                "loss/value": over_minibatches("loss/value"),
                "val/clipfrac": over_minibatches("val/clipfrac"),
                "val/var_explained": 1.0 - float(np.var((returns_np - values_np)[m])) / var_returns
                                     if var_returns > 0 else 0.0})
        elif self.config.algorithm == "grpo":
            metrics.update({"policy/clipfrac": over_minibatches("policy/clipfrac"),
                            "policy/kl_to_reference": over_minibatches("policy/kl_to_reference")})
        elif self.config.algorithm == "reinforce":
            metrics["objective/baseline"] = float(self.baseline)
        return metrics

    @staticmethod
    def gold_scores(records, rollout) -> dict:
        """The task verifier's mean scores of the rollout's completions (the "gold" reward), logged
        whatever the training reward is: against a learned reward model they show over-optimisation
        (the proxy's score rising while the gold score falls). Empty when a prompt is not a task's."""
        exact, partial = task_scores([r["prompt"] for r in records], rollout.completions)
        if any(value is None for value in exact):
            return {}
        return {"objective/gold_exact": float(np.mean(exact)), "objective/gold_partial": float(np.mean(partial))}

    # ---- checkpoints: policy (with value head), optimizer, KL controller, iteration
    @property
    def precision(self):
        """"bf16" under mixed precision, else "fp32" (as the --precision flag names it)."""
        return "bf16" if self.policy.compute_dtype == "bfloat16" else "fp32"

    def checkpoint_files(self, iteration):
        optimizer_state = {f"{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(self.optimizer.variables)}
        state = {"iteration": iteration, "kl_coef": self.kl_controller.value, "config": self.config.to_dict(),
                 "precision": self.precision, "baseline": self.baseline}
        return {"policy.safetensors": save(to_numpy_state_dict(self.policy)),
                "optimizer.safetensors": save(optimizer_state),
                "trainer_state.json": json.dumps(state, indent=2).encode()}

    def restore(self, directory):
        """Load a checkpoint written by `checkpoint_files`; returns its iteration. A checkpoint of a
        run with other settings (only --iterations, --save-every and --no-xla may change; XLA changes
        the speed and the last bits of rounding, not the math) is refused: the resumed run would
        silently be neither the old run nor the new one."""
        directory = Path(directory)
        state = json.loads((directory / "trainer_state.json").read_text())
        saved = {**state.get("config", {}), "precision": state.get("precision", "fp32")}
        current = {**self.config.to_dict(), "precision": self.precision}
        for name in current:
            if name not in ("iterations", "save_every", "xla") and name in saved and saved[name] != current[name]:
                flag = "--" + name.replace("_", "-")
                raise SftrlError(f"--resume: {directory} was written by a run with {flag} {saved[name]}, this "
                                 f"command has {flag} {current[name]}; resume with the same settings")
        assign_numpy_state_dict(self.policy, load_file(str(directory / "policy.safetensors")), str(directory))
        optimizer_state = load_file(str(directory / "optimizer.safetensors"))
        if len(optimizer_state) != len(self.optimizer.variables):
            raise CheckpointError(f"{directory}: optimizer state does not match this model")
        for i, variable in enumerate(self.optimizer.variables):
            variable.assign(optimizer_state[f"{i:04d}"])
        self.kl_controller.value = state["kl_coef"]
        self.baseline = state.get("baseline")
        return state["iteration"]


# ----------------------------------------------------------------------------- the run

PROMPT_STREAM = 7  # the random stream of prompt sampling; a minibatch order's third key is its epoch


def prompts_for(iteration, records, config: PPOConfig):
    """The batch of prompts of an iteration: a pure function of (seed, iteration). grpo and rloo:
    batch_size / group_size prompts, each group_size times in a row (a group)."""
    rng = np.random.default_rng([config.seed, iteration, PROMPT_STREAM])
    n = config.batch_size // config.samples_per_prompt
    idx = rng.choice(len(records), size=n, replace=len(records) < n)
    return [records[i] for i in idx for _ in range(config.samples_per_prompt)]


class PPORun:
    """The writing side of a run: metrics.jsonl, TensorBoard, checkpoints and the export. The
    chief writes; the other workers of a multi-worker run train and write nothing."""

    def __init__(self, trainer: PPOTrainer, out_dir, is_chief: bool):
        self.trainer, self.out_dir, self.is_chief = trainer, Path(out_dir), is_chief
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.writer = None

    def resume(self, log) -> int:
        """Restore the newest complete checkpoint; returns its iteration."""
        ckpt = latest_checkpoint(self.out_dir)
        if ckpt is None:
            raise SftrlError(f"--resume: no checkpoint in {self.out_dir / 'checkpoints'} to resume from")
        start = self.trainer.restore(ckpt)
        log(f"resumed from {ckpt} at iteration {start}")
        return start

    def open_logs(self, start: int, resumed: bool):
        """What a killed run logged after its last checkpoint (or, with no checkpoint, at all) is
        dropped: those iterations run again and are logged again."""
        if self.is_chief:
            truncate_jsonl(self.metrics_path, "iteration", start)
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(self.out_dir, purge_step=start + 1 if resumed else None)

    def log_metrics(self, iteration, values):
        if self.is_chief:
            append_jsonl(self.metrics_path, {"iteration": iteration, **values})
            for key, value in values.items():
                self.writer.add_scalar(key, value, iteration)

    def checkpoint(self, iteration):
        path = self.out_dir / "checkpoints" / f"iter-{iteration}"
        if self.is_chief:
            write_checkpoint(path, self.trainer.checkpoint_files(iteration), keep=2)
        return path

    def close(self):
        if self.writer is not None:
            self.writer.close()

    def export(self, tokenizer) -> dict:
        """The final policy (without its value head) and the run's summary."""
        trainer = self.trainer
        summary = {"iterations": trainer.config.iterations, "config": trainer.config.to_dict(),
                   "kl_coef": float(trainer.kl_controller.value)}
        if self.is_chief:
            export_policy(trainer.policy, tokenizer, self.out_dir)
            self.close()
            atomic_write_text(self.out_dir / "trainer_state.json", json.dumps(summary, indent=2) + "\n")
        return summary


def train(policy, reference, tokenizer, records, config: PPOConfig, reward_fn, out_dir, eval_records=None,
          resume=False, quiet=False, log=print, sample_every=10, stop_after=None, strategy=None, is_chief=True):
    """Run PPO, checkpoint every save_every iterations, export the final policy to out_dir.

    On SIGINT/SIGTERM: finish the iteration, write its checkpoint and return
    {"interrupted_at": N, "checkpoint": path} (nothing exported). `stop_after` stops the same way
    but without the extra checkpoint, as a crash would (for tests). A non-finite loss raises
    SftrlError naming the last good checkpoint; nothing is written after it. strategy: see
    `PPOTrainer`; is_chief=False (another worker of a multi-worker run) trains but writes nothing.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    if not resume and latest_checkpoint(out_dir) is not None:
        raise SftrlError(f"--out: {out_dir} already holds checkpoints; pass --resume to continue "
                         "that run, or choose another directory")
    room = policy.config.max_position_embeddings - config.max_new_tokens
    prompt_length = max(len(encode_prompt(tokenizer, r["prompt"], room)[0]) for r in records)
    trainer = PPOTrainer(policy, reference, tokenizer, config, reward_fn, log, strategy=strategy,
                         prompt_length=prompt_length)
    run = PPORun(trainer, out_dir, is_chief)
    start = run.resume(log) if resume else 0
    run.open_logs(start, resumed=resume)
    bar = tqdm(total=config.iterations, initial=start, disable=quiet, desc=config.algorithm, unit="iter", dynamic_ncols=True)
    with StopRequest() as stop:
        for iteration in range(start + 1, config.iterations + 1):
            batch = prompts_for(iteration, records, config)
            try:
                metrics, rollout = trainer.iteration(batch, iteration)
            except BaseException as e:
                bar.close()
                run.close()
                if isinstance(e, NonFiniteLossError):
                    raise SftrlError(f"{e}; stopped. Last good checkpoint: {latest_checkpoint(out_dir) or 'none'}") \
                        from None
                raise
            run.log_metrics(iteration, metrics)
            bar.set_postfix(score=f"{metrics['objective/scores']:.3f}", kl=f"{metrics['objective/kl']:.3f}")
            bar.update(1)
            if not quiet and sample_every and iteration % sample_every == 0:
                for r, text, score in list(zip(batch, rollout.completions, rollout.scores))[:2]:
                    bar.write(f"  [{iteration}] {r['prompt']!r} -> {text!r}  (reward {score:.2f})")
            saved = config.save_every and iteration % config.save_every == 0
            path = run.checkpoint(iteration) if saved else None
            if stop_after is not None and iteration >= stop_after:  # as a crash would: no extra checkpoint
                bar.close()
                run.close()
                return {"interrupted_at": iteration}
            if stop.requested:
                path = path or run.checkpoint(iteration)
                bar.close()
                run.close()
                return {"interrupted_at": iteration, "checkpoint": str(path)}
        # Training is over: a stop request from here on lets these few writes finish.
        bar.close()
        if not (config.save_every and config.iterations % config.save_every == 0):
            run.checkpoint(config.iterations)
        return run.export(tokenizer)
