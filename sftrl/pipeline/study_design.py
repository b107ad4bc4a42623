"""The study's design, declared before any run: the RL family's settings and the names of the
seeded runs. `sftrl.pipeline.study` plans the runs from it; `sftrl.reports.study` reads the runs
by these names (so neither imports the other for them)."""

from __future__ import annotations

# The RL family's settings, declared before any run and shared by every seed: the project's PPO defaults
# (`sftrl rl --help`) for what the algorithms share -- learning rate, iterations, completions per rollout,
# KL coefficient -- and, for what each algorithm chooses, its paper's (or TRL's) setting. Nothing here was
# tuned on this study's results.
FAMILY = {
    "ppo": ([], "Schulman et al. 2017 / TRL PPOTrainer: 4 epochs of minibatches per rollout, clip 0.2, value head, GAE"),
    "grpo": (["--algorithm", "grpo", "--ppo-epochs", "1", "--kl-coef", "0.04"],
             "Shao et al. 2024: one pass per rollout (μ = 1, TRL's num_iterations), β = 0.04 in the loss, "
             "groups of 4"),
    "rloo": (["--algorithm", "rloo"], "Ahmadian et al. 2024: k = 4 samples per prompt, leave-one-out baseline, one "
             "step per rollout"),
    "reinforce": (["--algorithm", "reinforce"], "Williams 1992: moving-average baseline (decay 0.9), one step per "
                  "rollout"),
}


def seed_suffix(k: int) -> str:
    """Run names of the repeats: `sft`, `sft_seed1`, `sft_seed2`; `rl_grpo`, `rl_grpo_seed1`, ..."""
    return f"_seed{k}" if k else ""


def family_runs(seeds) -> dict:
    """algorithm label -> its run names, one per seed (DPO among them)."""
    names = {a.upper(): [f"rl_{a}{seed_suffix(k)}" for k in seeds] for a in FAMILY}
    names["DPO"] = [f"dpo{seed_suffix(k)}" for k in seeds]
    return names
