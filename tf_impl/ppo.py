"""RL with a KL penalty to the SFT model, in TensorFlow: PPO (Ziegler et al. 2019; Ouyang et al.
2022) and the critic-free members of its family -- GRPO, RLOO, REINFORCE with a baseline -- on one
machinery. What each algorithm chooses is its record in `shared.algorithms` (read here as
`config.spec`); this file compares no algorithm names. One iteration, in the order of the code:

    rollout     sample completions of a batch of prompts from the policy (KV cache, tf.function;
                spec.groups: group_size completions of each prompt), then score them under the
                policy and the frozen reference (the SFT model), and the value head (spec.critic)
    reward      the reward function's score of each completion; per-token rewards
                r_t = -beta (log pi - log ref) + the score at the last token (beta = 0 where
                spec.kl_in is "loss": GRPO's k3 term is in its loss instead)
    advantages  ADVANTAGES[spec.advantages]: GAE with the critic (ppo); score - group mean over group
                std (grpo); R - the mean R of the other samples of the prompt (rloo); R - a moving
                average baseline (reinforce), R = sum_t r_t
    update      spec.epochs: ppo_epochs passes over shuffled minibatches, else one step on the
                whole rollout; each step the loss `losses.<spec.loss>`, global-norm clipping and one
                Adam step (one traced tf.function; split between replicas under tf.distribute)
    log         the iteration's metrics (TRL's names), and adapt beta towards the target KL (if set)

The run around it -- loading the models, choosing prompts, logs, checkpoints, resume, Ctrl-C,
export -- is `tf_impl.rl_run`. `torch_impl/ppo.py` is the twin of the update, name for name.

Sampling uses Gumbel noise from the stream `rollout_noise` (seed, iteration, row) in NumPy, so a
run is a pure function of its seed and resumes exactly, and `TextGenEnv` reproduces its tokens.
Mixed precision (`dtype="mixed_bfloat16"`) keeps the variables in float32 and computes log-probs,
values, losses and KL in float32.
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

from shared.config import PPOConfig
from shared.data import collate, encode_prompt
from shared.errors import CheckpointError, SftrlError
from shared.generation import gumbel_noise
from shared.random_streams import generator
from shared.rewards import score_all
from shared.tasks import task_scores
from tf_impl import losses
from tf_impl.convert import assign_numpy_state_dict, to_numpy_state_dict
from tf_impl.generate import generate
from tf_impl.model import at_least_float32
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


# ----------------------------------------------------------------------------- what the phases pass on

@dataclass
class Rollout:
    query_ids: np.ndarray       # (B, P) left-padded prompts
    query_mask: np.ndarray      # (B, P)
    response: np.ndarray        # (B, R) sampled tokens, pad after [SEP]
    response_mask: np.ndarray   # (B, R) 1 up to and including [SEP]
    logprobs: np.ndarray        # (B, R) under the policy at sampling time
    ref_logprobs: np.ndarray    # (B, R) under the reference
    values: np.ndarray          # (B, R) value of the state each token was chosen in (0 without a critic)
    scores: np.ndarray          # (B,)  reward of each completion (set by the reward phase)
    completions: list


class Minibatch(NamedTuple):
    """What one update step needs, rows of the rollout: (B, P+R) sequence inputs, (B, R) the rest."""
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


# ----------------------------------------------------------------------------- sequences and heads

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
    hidden_states, _, _ = model.backbone(ids, attention_mask=mask, position_ids=position_ids, training=training)
    if sparse:
        hidden_states = response_slice(hidden_states, response_length)      # (B, R, C)
    logits = model.lm_head(hidden_states)                                   # (B, R or P+R, V)
    values = model.value_head(hidden_states) if model.value_head is not None else None  # (B, R or P+R)
    if not sparse:  # every position's outputs, then the R that score the response
        logits = response_slice(logits, response_length)
        values = None if values is None else response_slice(values, response_length)
    return logits, values


# ----------------------------------------------------------------------------- advantage estimators
# spec.advantages -> f(rollout, rewards, config, baseline) -> (advantages, returns, baseline), (B, R)
# each; returns are the critic's value targets (0 without a critic), baseline the state that a
# moving-average baseline carries from rollout to rollout (None for the others).

def per_token(advantage, mask):
    """One advantage per completion (B,), given to each of its tokens; no value targets."""
    return advantage[:, None] * mask, tf.zeros_like(mask)


def gae_advantages(rollout, rewards, config, baseline):
    """PPO: GAE over the per-token rewards and the critic's values (Schulman et al. 2016), the
    advantages whitened over the rollout's tokens."""
    mask = tf.constant(rollout.response_mask, tf.float32)
    if config.whiten_rewards:
        rewards = losses.whiten(rewards, mask, shift_mean=False) * mask
    advantages, returns = losses.gae(rewards, tf.constant(rollout.values), config.gamma, config.lam, mask)
    if config.whiten_advantages:
        advantages = losses.whiten(advantages, mask) * mask
    return advantages, returns, baseline


def moving_average_baseline_advantages(rollout, rewards, config, baseline):
    """REINFORCE: A = R - b, R = sum_t r_t, b what the earlier rollouts earned (the first rollout:
    its own mean), then b <- decay b + (1 - decay) mean R."""
    sequence_rewards = tf.reduce_sum(rewards, 1)                            # (B,)
    mean_reward = float(tf.reduce_mean(sequence_rewards))
    baseline = mean_reward if baseline is None else baseline
    advantages, returns = per_token(sequence_rewards - baseline, tf.constant(rollout.response_mask, tf.float32))
    return advantages, returns, config.baseline_decay * baseline + (1.0 - config.baseline_decay) * mean_reward


def leave_one_out_advantages(rollout, rewards, config, baseline):
    """RLOO: A_i = R_i - the mean R of the other samples of its prompt (Ahmadian et al. 2024)."""
    advantage = losses.rloo_advantages(tf.reduce_sum(rewards, 1), config.group_size)
    return (*per_token(advantage, tf.constant(rollout.response_mask, tf.float32)), baseline)


def group_normalised_advantages(rollout, rewards, config, baseline):
    """GRPO: A_i = (s_i - group mean) / (group std + eps), of the scores (Shao et al. 2024)."""
    advantage = losses.grpo_advantages(tf.constant(rollout.scores), config.group_size)
    return (*per_token(advantage, tf.constant(rollout.response_mask, tf.float32)), baseline)


ADVANTAGES = {"gae": gae_advantages, "moving_average_baseline": moving_average_baseline_advantages,
              "leave_one_out": leave_one_out_advantages, "group_normalised": group_normalised_advantages}


# ----------------------------------------------------------------------------- the trainer

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
        self.spec = config.spec                               # what the algorithm chooses
        self.objective = getattr(losses, self.spec.loss)      # its loss, e.g. losses.ppo_objective
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
        self.baseline = None  # the moving-average baseline's state (None for the other estimators)

    def iteration(self, records, iteration):
        """One iteration, phase by phase. Returns (metrics, rollout)."""
        t0 = time.perf_counter()
        rollout = self.rollout(records, iteration)
        t1 = time.perf_counter()
        rewards, kl = self.reward(rollout, records)
        advantages, returns = self.advantages(rollout, rewards)
        t2 = time.perf_counter()
        stats = self.update(rollout, advantages, returns, iteration)
        t3 = time.perf_counter()
        mean_kl = float(tf.reduce_mean(tf.reduce_sum(kl, 1)))
        metrics = {**self.metrics(rollout, returns, stats, mean_kl), **self.gold_scores(records, rollout),
                   "time/rollout": t1 - t0, "time/reward": t2 - t1, "time/update": t3 - t2}
        self.kl_controller.update(mean_kl, len(records))
        self.minibatch_stats = stats  # each minibatch's statistics, in order (tests read them)
        return metrics, rollout

    # ---- rollout: sample, then score under policy and reference
    def rollout(self, records, iteration) -> Rollout:
        config, tok = self.config, self.tokenizer
        room = self.policy.config.max_position_embeddings - config.max_new_tokens
        prompts = [encode_prompt(tok, r["prompt"], room)[0] for r in records]
        length = max(max(map(len, prompts)), self.prompt_length or 0)
        batch = collate(prompts, tok.pad_id, side="left", length=length)
        noise = np.stack([gumbel_noise(generator("rollout_noise", config.seed, iteration, row),
                                       (config.max_new_tokens, self.policy.config.vocab_size))
                          for row in range(len(records))])                  # (B, R, V)
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

    def _score(self, ids, mask, position_ids, response):
        """log pi and log ref of the sampled tokens, and the critic's values (0 without one)."""
        R = tf.shape(response)[1]
        logits, values = response_outputs(self.policy, ids, mask, position_ids, R, sparse=self.sparse_head)
        ref_logits, _ = response_outputs(self.reference, ids, mask, position_ids, R, sparse=self.sparse_head)
        # float32 from here on, whatever the compute dtype (a no-op in float32)
        logits = at_least_float32(logits) / self.config.temperature       # (B, R, V)
        ref_logits = at_least_float32(ref_logits) / self.config.temperature
        logprobs = losses.categorical_log_prob(logits, response)
        values = at_least_float32(values) if values is not None else tf.zeros_like(logprobs)  # (B, R)
        return logprobs, losses.categorical_log_prob(ref_logits, response), values

    # ---- reward: the scores, and the KL penalty where the algorithm puts it
    def reward(self, rollout, records):
        """Scores the completions (into rollout.scores); returns (rewards, kl), (B, R): the per-token
        rewards -beta KL_t + the score at the last token, and KL_t = log pi - log ref."""
        rollout.scores = np.array(score_all(self.reward_fn, [r["prompt"] for r in records], rollout.completions,
                                            [r.get("reference") for r in records]), dtype=np.float32)
        beta = self.kl_controller.value if self.spec.kl_in == "reward" else 0.0
        return losses.kl_penalty_rewards(tf.constant(rollout.scores), tf.constant(rollout.logprobs),
                                         tf.constant(rollout.ref_logprobs), beta,
                                         tf.constant(rollout.response_mask, tf.float32))

    # ---- advantages: the algorithm's estimator
    def advantages(self, rollout, rewards):
        """(advantages, returns), (B, R) each (returns: the critic's targets, 0 without a critic)."""
        estimate = ADVANTAGES[self.spec.advantages]
        advantages, returns, self.baseline = estimate(rollout, rewards, self.config, self.baseline)
        return advantages, returns

    # ---- update: the passes over minibatches, each one traced step
    def update(self, rollout, advantages, returns, iteration):
        """Every gradient step of the iteration; returns their statistics, in order."""
        config = self.config
        everything = Minibatch.of_rollout(rollout, advantages, returns)
        B = len(rollout.response)
        epochs, rows = config.steps_per_rollout
        kl_coef = tf.constant(self.kl_controller.value, tf.float32)
        stats = []
        for epoch in range(epochs):
            order = generator("minibatch_order", config.seed, iteration, epoch).permutation(B)
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

    def _loss(self, batch: Minibatch, kl_coef=None):
        """The algorithm's loss of a minibatch (`losses.<spec.loss>`) and its statistics. Returns
        (loss, stats). Every mean is over the minibatch's response tokens (GRPO's "sequence"
        normalisation: over each row's tokens, then over rows). kl_coef: a scalar tensor (the
        adaptive controller changes it without a retrace)."""
        config = self.config
        R = tf.shape(batch.response)[1]
        logits, values = response_outputs(self.policy, batch.ids, batch.mask, batch.position_ids, R,
                                          sparse=self.sparse_head)
        logits = at_least_float32(logits) / config.temperature             # (B, R, V)
        logprobs = losses.categorical_log_prob(logits, batch.response)     # (B, R)
        entropy = losses.masked_mean(losses.entropy_from_logits(logits), batch.response_mask)
        values = at_least_float32(values) if values is not None else None  # (B, R) with a critic
        loss, stats = self.objective(logprobs, entropy, values, batch, config, kl_coef)
        return loss, {**stats, "loss/total": loss, "policy/entropy": entropy}

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
        tokens more). The summed gradients are then the single-device gradient. A loss that
        averages per sequence first (GRPO's "sequence" normalisation) is a mean over rows: there the
        share is the replica's rows, rows / B."""
        context = tf.distribute.get_replica_context()
        rows = tf.shape(batch.ids)[0] // context.num_replicas_in_sync
        first = context.replica_id_in_sync_group * rows
        shard = batch.rows(slice(first, first + rows))
        if self.spec.loss_mean(self.config.loss_normalisation) == "sequence":
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

    # ---- log: what an iteration reports
    def metrics(self, rollout, returns, stats, mean_kl) -> dict:
        """What an iteration logs (TRL's names): the common ones, the means over the minibatches of
        the statistics the algorithm's loss returns (spec.stats), the critic's explained variance,
        the moving baseline."""
        def over_minibatches(name):
            return float(np.mean([float(s[name]) for s in stats]))
        metrics = {
            "objective/scores": float(rollout.scores.mean()),
            "objective/kl": mean_kl,
            "objective/kl_coef": float(self.kl_controller.value),
            "objective/entropy": over_minibatches("policy/entropy"),
            "loss/policy": over_minibatches("loss/policy"),
            "objective/response_length": float(rollout.response_mask.sum(1).mean()),
            **{name: over_minibatches(name) for name in self.spec.stats},
        }
        if self.spec.critic:
            returns_np, values_np, m = returns.numpy(), rollout.values, rollout.response_mask.astype(bool)
            var_returns = float(np.var(returns_np[m]))
            metrics["val/var_explained"] = (1.0 - float(np.var((returns_np - values_np)[m])) / var_returns
                                            if var_returns > 0 else 0.0)
        if self.baseline is not None:
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

    # ---- checkpoint: policy (with value head), optimizer, KL controller, baseline, iteration
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
