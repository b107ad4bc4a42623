# %% [markdown]
# # Reading the study
#
# The study (`sftrl pipeline --preset study`) ends in findings such as "RL (PPO) beat SFT on
# held-out exact match over 3 seeds: +Δ [low, high] (RL (PPO) - SFT); p = …, Holm-adjusted p = …:
# significant after adjustment" (the committed run's own lines are printed below). You will see
# how each part of such a line is computed —
# the paired difference over prompts, the interval over seeds *and* prompts (the right unit),
# the p-value, and Holm's adjustment across all the findings — from the committed run in
# `docs/results/study/summary.json` and the functions of `shared/inference.py` and
# `shared/findings.py`. Nothing is trained: the lesson only reads files.
#
# Open it as a notebook with `jupytext --to notebook docs/lessons/reading_the_study.py`.

# %%
import json
import math
import re
from pathlib import Path

import numpy as np

import shared
from shared import inference
from shared.findings import Finding, comparison_finding, render_family

REPO = Path(shared.__file__).resolve().parents[1]   # the checkout, wherever the notebook runs
summary = json.loads((REPO / "docs" / "results" / "study" / "summary.json").read_text())
print("summary.json holds:", ", ".join(summary))
print(f"{len(summary['findings'])} findings, {len(summary['tests'])} of them tested; the first three:")
for line in summary["findings"][:3]:
    print(" -", line)

# %% [markdown]
# ## 1. The unit of a comparison: one prompt, scored by both models
#
# Every model answers the same 400 held-out prompts. The difference between two models is the
# mean over prompts of (score of B − score of A) on *the same prompt*: a paired difference. Pairing
# cancels how hard each prompt is — a prompt both models fail, or both solve, adds 0 — so the
# interval is much narrower than if the two models had answered different prompts.
#
# The committed files keep each model's mean, not its 400 answers, so here are made-up outcomes
# with seed 0's two accuracies: 80 prompts both solve, and the others split so that each model
# keeps its committed accuracy.

# %%
seed0 = summary["sections"]["SFT against RL, 3 seeds"]["seeds"][0]
print(f"committed seed 0: SFT {seed0['sft']:.3f}, RL {seed0['rl']:.3f}, "
      f"RL − SFT {seed0['difference'][0]:+.3f} [{seed0['difference'][1]:+.3f}, {seed0['difference'][2]:+.3f}]")

n, both = 400, 80
only_rl, only_sft = round(n * seed0["rl"]) - both, round(n * seed0["sft"]) - both
neither = n - both - only_rl - only_sft
print(f"made-up counts: both {both}, only RL {only_rl}, only SFT {only_sft}, neither {neither}")
sft = np.array([1] * both + [0] * only_rl + [1] * only_sft + [0] * neither, dtype=float)
rl = np.array([1] * both + [1] * only_rl + [0] * only_sft + [0] * neither, dtype=float)
order = np.random.default_rng(0).permutation(len(sft))              # prompts in no particular order
sft, rl = sft[order], rl[order]
print(f"made up:          SFT {sft.mean():.3f}, RL {rl.mean():.3f}")

# %% [markdown]
# `inference.paired_test` gives the mean difference, a percentile-bootstrap interval (resample
# the 400 prompts with replacement, 2000 times, keep the middle 95 % of the mean differences) and
# a sign-flip p-value: if the two models were interchangeable, each prompt's difference would be
# as likely with either sign; p is the share of 2000 random sign flips whose mean is at least as
# far from 0 as the observed one.

# %%
paired = inference.paired_test(sft, rl)
print(f"paired:   RL − SFT {paired.diff:+.3f} [{paired.low:+.3f}, {paired.high:+.3f}], p = {paired.p:.4f}")
se_unpaired = math.sqrt(sft.var(ddof=1) / len(sft) + rl.var(ddof=1) / len(rl))
print(f"unpaired: RL − SFT {paired.diff:+.3f} ± {1.96 * se_unpaired:.3f} (as if the prompts were different)")
print(f"smallest p of 2000 flips: (1 + 0) / (1 + 2000) = {1 / 2001:.4f}")

# %% [markdown]
# The paired interval is much narrower. And `p = 1 / 2001` is the floor of a test with 2000 random
# flips (none reached the observed mean): it is why so many of the study's p-values are that value.

# %% [markdown]
# ## 2. The right unit over seeds: seeds *and* prompts
#
# One training run is one draw of its randomness (initialisation, data order, samples). The
# headline comparison trains SFT and PPO with 3 seeds each and evaluates all 6 models on the same
# 400 prompts. The difference D[s, p] (seed s, prompt p) varies for two reasons: seeds (the runs
# differ) and prompts (some prompts favour RL, whatever the seed). `inference.seed_prompt_test`
# models both, D[s, p] = μ + a_s + b_p + e_sp, and
#
# Var(mean D) = MS_seed / (S P) + (MS_prompt − MS_resid) / (S P),
#
# the first term a t over the per-seed means (S − 1 = 2 degrees of freedom), the second the
# shared prompts' share (P − 1 = 399). The interval is mean ± c·se with Cochran and Cox's critical
# value c: the variance-weighted mean of the two terms' t quantiles. summary.json keeps the
# per-seed differences and the seed term's share of the variance, enough to rebuild it:

# %%
section = summary["sections"]["SFT against RL, 3 seeds"]
S, P = len(section["seeds"]), 400
t_seeds, t_prompts = inference.t_quantile(0.975, S - 1), inference.t_quantile(0.975, P - 1)
print(f"t quantiles: {t_seeds:.3f} with {S - 1} df, {t_prompts:.3f} with {P - 1} df")
MEASURES = {"exact match": ("exact_match_difference", "difference"),        # section key, per-seed key
            "partial credit": ("partial_credit_difference", "partial_difference")}


def per_seed_differences(per_seed_key):
    """RL − SFT of each seed: (difference, bootstrap low, bootstrap high) over its 400 prompts, (S, 3)."""
    return np.array([seed[per_seed_key] for seed in section["seeds"]])


def seed_share_of(stored):
    """The seed term's share of the variance, from the method's text ('... (seed share 0.34)')."""
    return float(re.search(r"seed share ([0-9.]+)", stored["method"]).group(1))


def crossed_interval(per_seed, seed_share):
    """mean ± c se, and p, from the per-seed means and the seed term's share of the variance."""
    mean = per_seed.mean()
    ms_seed = P * np.sum((per_seed - mean) ** 2) / (S - 1)
    total = ms_seed / seed_share                                    # MS_seed + (MS_prompt − MS_resid)
    se = math.sqrt(total / (S * P))
    c = seed_share * t_seeds + (1 - seed_share) * t_prompts         # Cochran-Cox critical value
    p = inference.cochran_cox_p(mean / se, [seed_share, 1 - seed_share], [S - 1, P - 1])
    return mean, mean - c * se, mean + c * se, p


for measure, (key, per_seed_key) in MEASURES.items():
    stored = section[key]
    per_seed = per_seed_differences(per_seed_key)[:, 0]
    mean, low, high, p = crossed_interval(per_seed, seed_share_of(stored))
    print(f"\n{measure}: per-seed RL − SFT {np.round(per_seed, 4)}, mean {mean:+.4f} (stored {stored['diff']:+.4f})")
    print(f"  rebuilt: [{low:+.4f}, {high:+.4f}], p = {p:.4f}   (seed share {seed_share_of(stored)})")
    print(f"  stored:  [{stored['low']:+.4f}, {stored['high']:+.4f}], p = {stored['p']:.4f}")

# %% [markdown]
# Against the right unit, two wrong ones: the seeds alone (a t-interval over the three per-seed
# means), and the prompts alone (the 1200 (seed, prompt) pairs as if independent: each seed's
# bootstrap half-width divided by `1.96` (the normal distribution's two-sided 95 % point) is about
# its standard error, and the mean of three independent means has √(Σ se²) / 3).

# %%
for measure, (key, per_seed_key) in MEASURES.items():
    differences = per_seed_differences(per_seed_key)
    mean = differences[:, 0].mean()
    se_seeds = differences[:, 0].std(ddof=1) / math.sqrt(S)
    se_prompts = math.sqrt(np.sum(((differences[:, 2] - differences[:, 1]) / 2 / 1.96) ** 2)) / S
    print(f"{measure}:")
    print(f"  seeds and prompts (the report): [{section[key]['low']:+.4f}, {section[key]['high']:+.4f}]")
    print(f"  seeds only:                     [{mean - t_seeds * se_seeds:+.4f}, {mean + t_seeds * se_seeds:+.4f}]")
    print(f"  prompts only (about):           [{mean - 1.96 * se_prompts:+.4f}, {mean + 1.96 * se_prompts:+.4f}]")

# %% [markdown]
# (The rebuilt intervals above match the stored ones up to the rounding of the seed share: two
# decimals in the method's text.) Read the two wrong units against the right one:
#
# * **Prompts only** treats the 1200 (seed, prompt) pairs as independent and ignores that the
#   three runs differ. For partial credit the seeds' differences spread far more than prompt
#   noise explains (the seed share is close to 1): the pooled interval is several times narrower
#   than the report's, a precision three runs do not have.
# * **Seeds only** treats the three per-seed means as the whole story. It misses that the three
#   seeds were scored on *the same* 400 prompts: a prompt that favours RL favours it in every
#   seed and does not average out over seeds. Where the prompt term is a large share of the
#   variance (exact match here), the report's interval is the wider.
#
# With the seed and prompt components this committed run has, the real function computes the
# same interval. A matrix D = per-seed mean + a prompt effect b_p, b scaled so that
# MS_prompt = (1 − share)/share · MS_seed, goes through `inference.seed_prompt_test`:

# %%
stored = section["exact_match_difference"]
per_seed = per_seed_differences("difference")[:, 0]
seed_share = seed_share_of(stored)
ms_seed = P * np.sum((per_seed - per_seed.mean()) ** 2) / (S - 1)
b = np.random.default_rng(0).normal(size=P)
b -= b.mean()
b *= math.sqrt((1 - seed_share) / seed_share * ms_seed * (P - 1) / S / np.sum(b ** 2))  # MS_prompt as above
D = per_seed[:, None] + b[None, :]                                  # (S, P): seed effect + prompt effect
estimate = inference.seed_prompt_test(np.zeros((S, P)), D)
print(f"seed_prompt_test: {estimate.diff:+.4f} [{estimate.low:+.4f}, {estimate.high:+.4f}], p = {estimate.p:.4f}")
print(f"  {estimate.method}")

# %% [markdown]
# ## 3. From the numbers to the sentence
#
# A finding is never written by hand: `shared.findings.comparison_finding` turns the difference
# and its interval into the line. An interval above 0 says the second model beat the first;
# one that contains 0 says "no significant difference", whatever the sign of the estimate.

# %%
line = comparison_finding("SFT", "RL (PPO)", "held-out exact match over 3 seeds",
                          stored["diff"], stored["low"], stored["high"])
print(line)
print("in summary.json:", any(f.startswith(line) for f in summary["findings"]))

# %% [markdown]
# ## 4. Holm's adjustment across the findings
#
# The report tests many differences at once. At a 5 % level each, dozens of tests of differences
# that do not exist would still give a few "significant" ones by chance. Holm's step-down method
# keeps the chance of even one false "significant" at 5 % for the whole family: sort the m
# p-values, multiply the j-th smallest by m − j + 1, take the running maximum (an adjusted p never
# falls below a smaller one's), cap at 1. In the table, a row whose (m − j + 1) p is below the
# row above keeps the larger value.
# By hand, then with `inference.holm`:

# %%
tests = summary["tests"]
p_values = np.array([t["p"] for t in tests])
m = len(p_values)
order = np.argsort(p_values, kind="stable")
by_hand = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p_values[order]))
print(f"{'j':>3s} {'p':>8s} {'(m − j + 1) p':>14s} {'Holm p':>8s}")
for j in range(m):
    print(f"{j + 1:3d} {p_values[order][j]:8.4f} {(m - j) * p_values[order][j]:14.4f} {by_hand[j]:8.4f}")

holm = np.array(inference.holm(list(p_values)))
stored_holm = np.array([t["holm_p"] for t in tests])
print(f"\nby hand vs inference.holm: max |difference| {np.abs(holm[order] - by_hand).max():.1e}")
print(f"inference.holm vs summary.json's holm_p: max |difference| {np.abs(holm - stored_holm).max():.1e}")
print(f"p <= 0.05: {int(np.sum(p_values <= 0.05))} of {m} tests; after Holm's adjustment: {int(np.sum(holm <= 0.05))}")

# %% [markdown]
# `render_family` writes the adjusted p and the verdict into each line; from the committed p-values
# it gives back, character for character, the report's lines:

# %%
lines = render_family([Finding(t["finding"], t["p"]) for t in tests])
print(f"{sum(line in summary['findings'] for line in lines)} of {len(lines)} lines found in summary.json")
print("significant alone, not after the adjustment:")
for line, p, adjusted in zip(lines, p_values, holm):
    if p <= 0.05 < adjusted:
        print(" -", line)

# %% [markdown]
# ## Next
#
# `docs/results/study/report.md` is the whole report these numbers come from; `docs/guide.md`
# ("The study") lists which runs each section compares; `tests/test_inference.py` checks by
# simulation that the seed-and-prompt interval covers the true difference as often as it says.
