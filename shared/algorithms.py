"""The RL algorithms of `sftrl rl --algorithm`, one record each: everything an algorithm chooses,
declared once. `tf_impl.ppo` (the trainer), `torch_impl.ppo` (its update twin), the config's
checks, the CLI and the reports read these fields; nothing outside this file compares an
algorithm's name (`tests/test_algorithms.py` keeps it so).

Adding an algorithm is one record here plus its loss, under the record's `loss` name, in
`shared/reference.py`, `torch_impl/losses.py` and `tf_impl/losses.py`, and (if it needs a new
way to compute advantages) one function in `tf_impl.ppo.ADVANTAGES`.
"""

from __future__ import annotations

from dataclasses import dataclass

# The ways to turn a rollout's scores into advantages (the keys of `tf_impl.ppo.ADVANTAGES`).
ADVANTAGE_ESTIMATORS = ("gae", "moving_average_baseline", "leave_one_out", "group_normalised")
# Where beta, the KL coefficient, enters: into every token's reward before the advantages, or
# into the loss (GRPO's k3 term).
KL_PLACES = ("reward", "loss")


@dataclass(frozen=True)
class Algorithm:
    """What an RL algorithm chooses; the machinery (rollout, reward functions, KL to the SFT model,
    checkpoints, resume, logging) is the same for all."""

    name: str                   # the --algorithm value
    paper: str                  # where it comes from
    summary: str                # one line for --algorithm's help and the docs
    critic: bool                # a value head trained beside the policy (PPO's critic)
    groups: bool                # group_size completions sampled per prompt: the baseline is the group
    advantages: str             # how the advantages are computed, one of ADVANTAGE_ESTIMATORS
    kl_in: str                  # where beta enters, one of KL_PLACES
    loss: str                   # its loss function, the same name in reference.py and both losses.py
    epochs: bool                # ppo_epochs passes over minibatches (a ratio-clipped loss), else one
                                # step on the whole rollout (the plain policy gradient)
    sequence_mean: bool         # its loss may average per completion first (--loss-normalisation)
    stats: tuple[str, ...]      # the update statistics its loss returns, logged as their mean per iteration

    def __post_init__(self):
        assert self.advantages in ADVANTAGE_ESTIMATORS, self.advantages
        assert self.kl_in in KL_PLACES, self.kl_in

    def loss_mean(self, loss_normalisation: str) -> str:
        """"sequence" (a mean over each completion's tokens, then over completions) or "token" (over
        every token of the minibatch): what one replica's share of a minibatch is counted in."""
        return loss_normalisation if self.sequence_mean else "token"


PPO = Algorithm(
    name="ppo", paper="Schulman et al. 2017; Ziegler et al. 2019",
    summary="clipped surrogate, value head, GAE over per-token rewards with the KL penalty in them",
    critic=True, groups=False, advantages="gae", kl_in="reward", loss="ppo_objective", epochs=True,
    sequence_mean=False,
    stats=("loss/value", "policy/approxkl", "policy/clipfrac", "val/clipfrac", "policy/ratio_mean"))

GRPO = Algorithm(
    name="grpo", paper="Shao et al. 2024",
    summary="--group-size samples per prompt, advantage = (score - group mean) / group std, clipped "
            "surrogate + beta k3 KL in the loss, no value head",
    critic=False, groups=True, advantages="group_normalised", kl_in="loss", loss="grpo_objective", epochs=True,
    sequence_mean=True, stats=("policy/clipfrac", "policy/kl_to_reference"))

RLOO = Algorithm(
    name="rloo", paper="Ahmadian et al. 2024",
    summary="--group-size samples per prompt, baseline = the mean reward of the others, one gradient step "
            "per rollout, beta times the summed KL in the reward",
    critic=False, groups=True, advantages="leave_one_out", kl_in="reward", loss="reinforce_objective",
    epochs=False, sequence_mean=False, stats=())

REINFORCE = Algorithm(
    name="reinforce", paper="Williams 1992",
    summary="-A log pi, baseline = a moving average of past rewards, one gradient step per rollout, beta "
            "times the summed KL in the reward",
    critic=False, groups=False, advantages="moving_average_baseline", kl_in="reward",
    loss="reinforce_objective", epochs=False, sequence_mean=False, stats=())

ALGORITHMS = {a.name: a for a in (PPO, GRPO, RLOO, REINFORCE)}
RL_ALGORITHMS = tuple(ALGORITHMS)
