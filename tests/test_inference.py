"""shared/inference.py: each method against hand-computed values, and its error rate or coverage
measured by seeded simulation (every draw from the "simulation" stream), with the binomial margin of
a finite number of simulated studies in the assertion."""

import math

import numpy as np
import pytest

from shared.findings import interval
from shared.inference import (Estimate, benjamini_hochberg, fit_gao, holm, overoptimisation_test, paired_test,
                              pair_shares, seed_prompt_test, sign_flip_p, t_cdf, t_quantile, t_sf)
from shared.metrics import paired_bootstrap, wilson_interval
from shared.random_streams import generator


def binomial_upper(n: int, rate: float, tail: float = 0.01) -> int:
    """The largest count a Binomial(n, rate) exceeds with probability <= tail: a seeded simulation of
    a method with true error rate `rate` stays at or under it with probability >= 1 - tail."""
    k, above = n, 0.0
    while above + math.comb(n, k) * rate ** k * (1 - rate) ** (n - k) <= tail:
        above += math.comb(n, k) * rate ** k * (1 - rate) ** (n - k)
        k -= 1
    return k


def test_binomial_upper_bound():
    assert binomial_upper(300, 0.05) == 24        # P(X > 24) = 0.0086, P(X > 23) = 0.0148
    assert binomial_upper(400, 0.07, tail=0.5) == 28


# ----------------------------------------------------------------------------- Student's t

@pytest.mark.parametrize("q", [0.9, 0.95, 0.975, 0.995])
def test_t_quantile_matches_closed_forms(q):
    assert t_quantile(q, 1) == pytest.approx(math.tan(math.pi * (q - 0.5)), rel=1e-11)      # Cauchy
    assert t_quantile(q, 2) == pytest.approx((2 * q - 1) / math.sqrt(2 * q * (1 - q)), rel=1e-11)
    assert t_quantile(1 - q, 7.3) == -t_quantile(q, 7.3)
    assert t_cdf(t_quantile(q, 7.3), 7.3) == pytest.approx(q, abs=1e-12)


def test_t_tends_to_the_normal():
    assert t_quantile(0.975, 10) == pytest.approx(2.2281388519649, abs=1e-9)  # tables
    assert t_quantile(0.975, 1e7) == pytest.approx(1.959963984540054, abs=1e-6)
    assert t_quantile(0.975, math.inf) == pytest.approx(1.959963984540054, abs=1e-15)


# ----------------------------------------------------------------------------- paired_test

def test_paired_test_is_the_paired_bootstrap_plus_a_sign_flip_p():
    rng = generator("simulation", 1)
    a = rng.random(50)
    b = a + 0.3 + 0.1 * rng.random(50)                    # every difference positive
    e = paired_test(a, b, seed=4)
    assert tuple(e) == paired_bootstrap(a, b, seed=4)      # the same interval, unpackable as before
    assert interval(*e) == interval(*paired_bootstrap(a, b, seed=4))
    assert isinstance(e, Estimate) and "sign-flip" in e.method
    assert e.p == pytest.approx(1 / 2001)                  # only the identity of 2^50 flips reaches it


def test_sign_flip_p_exact_by_hand():
    # diff = (1, 2, 3): |mean| 2; of the 8 flips only (+, +, +) and (-, -, -) reach |sum| 6 -> p = 2/8
    assert sign_flip_p([1.0, 2.0, 3.0]) == 0.25
    # (1, 1, -1, 3): |sum| 4; flips with |sum| >= 4: all signs equal to data or its negation, and
    # flipping the -1 ... sums of +-1 +-1 +-1 +-3 reaching 4: (1,1,1,3)=6,(1,1,-1,3)=4,(1,-1,1,3)=4,(-1,1,1,3)=4 -> 8/16
    assert sign_flip_p([1.0, 1.0, -1.0, 3.0]) == 0.5
    assert sign_flip_p(np.zeros(30)) == 1.0 and sign_flip_p(np.zeros(5)) == 1.0
    assert paired_test(np.ones(40), np.ones(40)).p == 1.0


def test_sign_flip_p_is_uniform_under_the_null():
    """Exchangeable pairs: p <= 0.05 in about 5 % of 400 studies (binomial margin)."""
    rng = generator("simulation", 2)
    p = [sign_flip_p(rng.normal(size=(60,)) * rng.random(60), samples=400, seed=i) for i in range(400)]
    assert sum(x <= 0.05 for x in p) <= binomial_upper(400, 0.05)
    assert sum(x <= 0.5 for x in p) >= 400 - binomial_upper(400, 0.5, tail=0.005) - 1  # not everything is large


# ----------------------------------------------------------------------------- seed_prompt_test

def crossed_studies(rng, studies, S, P, sd_seed, sd_prompt, sd_resid, mu=0.1):
    """(first, second) of simulated studies: prompt difficulty cancels in the pairing; the
    difference has a seed effect, a prompt effect and a residual, all normal."""
    difficulty = rng.normal(0.5, 0.2, size=(studies, 1, P))
    first = difficulty + rng.normal(0, 0.1, size=(studies, S, P))
    diff = (mu + rng.normal(0, sd_seed, size=(studies, S, 1)) + rng.normal(0, sd_prompt, size=(studies, 1, P))
            + rng.normal(0, sd_resid, size=(studies, S, P)))
    return first, first + diff


@pytest.mark.parametrize("case, sd_seed, sd_prompt, sd_resid", [
    ("seed variance dominant", 0.05, 0.1, 0.3),     # s2_seed / S = 8.3e-4, s2_prompt / P = 2.5e-5, resid / SP = 7.5e-5
    ("prompt variance dominant", 0.002, 0.3, 0.3),  # 1.3e-6, 2.3e-4, 7.5e-5
    ("both alike", 0.015, 0.2, 0.3),                # 7.5e-5, 1.0e-4, 7.5e-5
    ("prompt variance only", 0.0, 0.6, 0.05),       # 0, 9.0e-4, 2.1e-6
])
def test_seed_prompt_interval_covers_at_its_level(case, sd_seed, sd_prompt, sd_resid):
    """S = 3 seeds, P = 400 prompts, 400 simulated studies: the 95 % interval covers the true mean
    in >= 93 % of them (a method at 95 % falls below 93 % with probability < 1 %: 372 of 400)."""
    first, second = crossed_studies(generator("simulation", 3), 400, 3, 400, sd_seed, sd_prompt, sd_resid)
    covered = [e.low <= 0.1 <= e.high for e in (seed_prompt_test(f, s) for f, s in zip(first, second))]
    assert sum(covered) >= 372, f"{case}: coverage {sum(covered) / 400:.3f}"
    assert sum(covered) <= 400 - 5, f"{case}: coverage {sum(covered) / 400:.3f}, too wide to be at 95 %"


def test_ignoring_either_variance_undercovers():
    """What the crossed interval fixes: pooling the S x P differences as independent pairs misses
    the seed variance; a t over the per-seed means (S - 1 df) misses that the prompts are shared."""
    first, second = crossed_studies(generator("simulation", 4), 200, 3, 400, 0.05, 0.1, 0.3)
    pooled = [paired_bootstrap(f.ravel(), s.ravel(), samples=500) for f, s in zip(first, second)]
    assert sum(lo <= 0.1 <= hi for _, lo, hi in pooled) < 0.6 * 200
    first, second = crossed_studies(generator("simulation", 5), 400, 3, 400, 0.0, 0.6, 0.05)
    per_seed = (second - first).mean(axis=2)                                   # (studies, S)
    half = t_quantile(0.975, 2) * per_seed.std(axis=1, ddof=1) / math.sqrt(3)
    assert np.mean(np.abs(per_seed.mean(axis=1) - 0.1) <= half) < 0.8       # (the crossed interval: the test above)


def test_seed_prompt_test_with_one_seed_is_paired_test():
    rng = generator("simulation", 6)
    a, b = rng.random((1, 80)), rng.random((1, 80))
    e, single = seed_prompt_test(a, b, seed=2), paired_test(a[0], b[0], seed=2)
    assert tuple(e) == tuple(single) and e.p == single.p
    assert e.method.startswith("one seed, so no seed variance") and e.method.endswith(single.method)


def test_seed_prompt_test_by_hand():
    # D = [[0, 2, 4], [2, 4, 6]]: mean 3; seed means (2, 4) -> MS_seed = 3 (1 + 1) / 1 = 6; prompt means
    # (1, 3, 5) -> MS_prompt = 2 (4 + 0 + 4) / 2 = 8; additive, so MS_resid = 0. Terms 6 (1 df) and 8 (2 df):
    # se = sqrt(14 / 6), critical value (6 t_1 + 8 t_2) / 14
    first = np.zeros((2, 3))
    e = seed_prompt_test(first, np.array([[0.0, 2.0, 4.0], [2.0, 4.0, 6.0]]))
    se = math.sqrt(14 / 6)
    half = (6 * t_quantile(0.975, 1) + 8 * t_quantile(0.975, 2)) / 14 * se
    assert (e.diff, e.low, e.high) == pytest.approx((3, 3 - half, 3 + half), abs=1e-12)
    # p inverts the interval: at level 1 - p its edge is exactly 0
    q = 1 - e.p / 2
    assert (6 * t_quantile(q, 1) + 8 * t_quantile(q, 2)) / 14 * se == pytest.approx(3, rel=1e-9)
    zero = seed_prompt_test(first, first)
    assert tuple(zero) == (0, 0, 0) and zero.p == 1.0


def test_with_no_prompt_variance_it_is_the_t_over_seeds():
    # D = [[1, 2], [3, 6], [2, 1]]: MS_prompt 1.5 < MS_resid 2, so the prompt term is 0; per-seed means
    # (1.5, 4.5, 1.5): mean 2.5, sd sqrt(3), se 1, 2 df
    e = seed_prompt_test(np.zeros((3, 2)), np.array([[1.0, 2.0], [3.0, 6.0], [2.0, 1.0]]))
    assert (e.diff, e.low, e.high) == pytest.approx((2.5, 2.5 - t_quantile(0.975, 2), 2.5 + t_quantile(0.975, 2)))
    assert e.p == pytest.approx(2 * t_sf(2.5, 2), rel=1e-9) and "seed share 1.00" in e.method


def test_seed_prompt_p_agrees_with_its_interval():
    rng = generator("simulation", 7)
    for _ in range(30):
        first = rng.random((3, 50))
        e = seed_prompt_test(first, first + rng.normal(rng.normal(0, 0.05), 0.3, size=(3, 50)), confidence=0.9)
        assert (e.p < 0.1) == (e.low > 0 or e.high < 0)


# ----------------------------------------------------------------------------- multiple comparisons

def test_holm_and_bh_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 -> Holm 4x, 3x, 2x, 1x = 0.02, 0.03, 0.06, 0.04 -> running max 0.06 for the last
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH m p / rank = 0.02, 0.02, 0.04, 0.04, then the running min from the top
    assert benjamini_hochberg(p) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert holm([0.5, None, 0.9, None]) == [1.0, None, 1.0, None]
    assert benjamini_hochberg([None, 0.2]) == [None, 0.2] and holm([]) == [] and holm([None]) == [None]


def test_holm_flips_a_marginal_finding():
    raw = [0.03, 0.2, 0.6, 0.001, 0.4, 0.01, 0.8]
    adjusted = holm(raw)
    assert raw[0] < 0.05 < adjusted[0] == pytest.approx(5 * 0.03)   # 3rd smallest of 7: times 5
    assert adjusted[3] == pytest.approx(0.007) and adjusted[5] == pytest.approx(0.06)
    assert all(a >= r for a, r in zip(adjusted, raw))
    assert benjamini_hochberg(raw)[0] == pytest.approx(7 * 0.03 / 3)


# ----------------------------------------------------------------------------- over-optimisation

N_ITER = 60


def ar1(rng, rho, studies, n=N_ITER):
    """Stationary AR(1) noise with sd 1 (the sd of one iteration's rollout mean), rows of n."""
    e = rng.standard_normal((studies, n))
    x = np.empty_like(e)
    x[:, 0] = e[:, 0]
    for t in range(1, n):
        x[:, t] = rho * x[:, t - 1] + math.sqrt(1 - rho ** 2) * e[:, t]
    return x


t = np.arange(N_ITER)
FLAT = np.full(N_ITER, 0.5)
RISE_AND_FALL = 0.5 + 4 * (1 - np.abs(t - (N_ITER - 1) / 2) / ((N_ITER - 1) / 2))  # +4 sd to the middle, back to 0
PROXY = np.linspace(0, 8, N_ITER)                                                   # the proxy rises by 8 sd


def old_rule(gold, proxy):
    """The rule sftrl/reports/study.py used: the peak of a moving average over an eighth of the
    run, against the last window, each change beyond 2 standard errors of the last window's mean."""
    w = max(1, len(gold) // 8)
    smooth = lambda x: np.convolve(x, np.ones(w) / w, mode="valid")  # noqa: E731
    gold_s, proxy_s = smooth(gold), smooth(proxy)
    peak = int(np.argmax(gold_s))
    gold_noise, proxy_noise = (2 * x[-w:].std(ddof=1) / np.sqrt(w) for x in (gold, proxy))
    return gold_s[peak] - gold_s[-1] > gold_noise and proxy_s[-1] - proxy_s[peak] > proxy_noise


@pytest.mark.parametrize("rho", [0.0, 0.5])
def test_overoptimisation_false_positive_rate(rho):
    """A flat gold curve and a rising proxy, 300 simulated runs of 60 iterations: the test fires in
    <= 5 % of them (<= 24 of 300, the 99 % binomial margin); the old rule fires in far more."""
    rng = generator("simulation", 10 + int(10 * rho))
    gold, proxy = FLAT + ar1(rng, rho, 300), PROXY + ar1(rng, rho, 300)
    fired = [overoptimisation_test(g, p)["fired"] for g, p in zip(gold, proxy)]
    old = [old_rule(g, p) for g, p in zip(gold, proxy)]
    assert sum(fired) <= binomial_upper(300, 0.05), f"rho {rho}: fired in {sum(fired)} of 300"
    assert sum(old) >= 0.3 * 300, f"rho {rho}: the old rule fired in {sum(old)} of 300"


@pytest.mark.parametrize("rho", [0.0, 0.5])
def test_overoptimisation_power(rho):
    """Gold rises by 4 sd to the middle and falls back by 4 sd at the end while the proxy rises by 8:
    the test fires in >= 80 % of 200 simulated runs."""
    rng = generator("simulation", 20 + int(10 * rho))
    gold, proxy = RISE_AND_FALL + ar1(rng, rho, 200), PROXY + ar1(rng, rho, 200)
    fired = [overoptimisation_test(g, p)["fired"] for g, p in zip(gold, proxy)]
    assert sum(fired) >= 0.8 * 200, f"rho {rho}: fired in {sum(fired)} of 200"


def test_overoptimisation_needs_the_proxy_to_rise_and_reports_its_numbers():
    rng = generator("simulation", 30)
    gold, noise = RISE_AND_FALL + 0.1 * ar1(rng, 0.3, 1)[0], 0.1 * ar1(rng, 0.3, 1)[0]
    kl = np.linspace(0, 9, N_ITER)
    result = overoptimisation_test(gold, PROXY + noise, kl=kl)
    assert result["fired"] and result["p"] == max(result["gold"]["p"], result["proxy"]["p"]) <= 0.05
    assert result["gold"]["late"] == pytest.approx(gold[40:].mean()) and result["gold"]["change"] < 0
    assert result["kl"] == pytest.approx([1.5, 4.5, 7.5], abs=0.08) and result["verdict"].startswith("over-optimisation")
    flat_proxy = overoptimisation_test(gold, PROXY[::-1] + noise)       # the gold fell, the proxy fell too
    assert not flat_proxy["fired"] and flat_proxy["gold"]["p"] <= 0.05 < flat_proxy["proxy"]["p"]
    short = overoptimisation_test(gold[:9], PROXY[:9])
    assert not short["fired"] and short["p"] is None and "too few iterations (9" in short["verdict"]


# ----------------------------------------------------------------------------- Gao et al.'s fit

def test_fit_gao_recovers_alpha_beta():
    kl = np.linspace(0, 25, 80)
    d = np.sqrt(kl)
    gold = 0.3 + d * (0.2 - 0.1 * np.log(np.where(d > 0, d, 1)))
    fit = fit_gao(kl, gold)
    assert (fit["alpha"], fit["beta"], fit["gold0"], fit["r2"]) == pytest.approx((0.2, 0.1, 0.3, 1.0), abs=1e-10)
    assert fit["d_peak"] == pytest.approx(math.e) and fit["kl_peak"] == pytest.approx(math.e ** 2)
    assert fit["gold_peak"] == pytest.approx(0.3 + 0.1 * math.e) and fit["peak_inside"]
    assert fit_gao(kl, gold, gold0=0.3)["alpha"] == pytest.approx(0.2, abs=1e-12)
    assert not fit_gao(kl[:10], gold[:10])["peak_inside"]                 # the peak (KL 7.4) is past KL 2.8
    rising = fit_gao(kl, 0.3 + 0.1 * d)                                   # beta = 0: no interior peak
    assert rising["d_peak"] is None and rising["kl_peak"] is None and not rising["peak_inside"]


def test_fit_gao_with_noise_is_within_its_standard_errors():
    kl = np.linspace(0, 25, 150)
    d = np.sqrt(kl)
    d_log_d = d * np.log(np.where(d > 0, d, 1))
    sd = 0.02
    gold = 0.3 + 0.2 * d - 0.1 * d_log_d + sd * generator("simulation", 40).standard_normal(len(kl))
    fit = fit_gao(kl, gold)
    X = np.stack([d, -d_log_d, np.ones_like(d)], axis=1)
    se = sd * np.sqrt(np.diag(np.linalg.inv(X.T @ X)))                   # least squares' standard errors
    assert abs(fit["alpha"] - 0.2) < 4 * se[0] and abs(fit["beta"] - 0.1) < 4 * se[1]
    # residual sum of squares ~ sd^2 chi2_147: far below 1.5 n sd^2
    assert fit["r2"] > 1 - 1.5 * len(kl) * sd ** 2 / np.sum((gold - gold.mean()) ** 2) and fit["peak_inside"]


# ----------------------------------------------------------------------------- human evaluation

def test_pair_shares_average_each_pair_first():
    # pair 1: two wins; pair 2: win + loss; pair 3: one tie -> win (1 + 0.5 + 0) / 3, tie 1/3, loss 0.5/3
    shares = pair_shares({"p1": ["win", "win"], "p2": ["win", "loss"], "p3": ["tie"]})
    assert shares["pairs"] == 3
    assert shares["win"][0] == pytest.approx(0.5) and shares["tie"][0] == pytest.approx(1 / 3)
    assert shares["loss"][0] == pytest.approx(1 / 6)
    assert all(lo <= shares[o][0] <= hi for o in ("win", "tie", "loss") for _, lo, hi in [shares[o]])
    with pytest.raises(ValueError, match="outcomes are win, tie, loss"):
        pair_shares([["won"]])


def test_pair_shares_count_pairs_not_ratings():
    """Five raters who agree on every pair add no information: the interval is the one of a single
    rater, where a Wilson interval over the 5x ratings would narrow by about sqrt(5)."""
    rng = generator("simulation", 50)
    outcomes = [["win", "tie", "loss"][k] for k in rng.choice(3, size=200, p=[0.5, 0.2, 0.3])]
    one = pair_shares([[o] for o in outcomes], seed=1)
    five = pair_shares([[o] * 5 for o in outcomes], seed=1)
    assert one == five
    win = np.mean([o == "win" for o in outcomes])
    half = 1.959963984540054 * math.sqrt(win * (1 - win) / 200)            # normal approximation over pairs
    assert one["win"][2] - one["win"][1] == pytest.approx(2 * half, rel=0.15)


def test_pair_shares_without_spread_use_wilson_over_pairs():
    shares = pair_shares([["win", "win"], ["win"], ["win", "win", "win"], ["win"]])   # every pair won
    assert shares["win"][0] == 1.0 and shares["win"][1:] == pytest.approx(wilson_interval(4, 4))
    assert shares["loss"][1:] == pytest.approx(wilson_interval(0, 4)) and shares["loss"][1] == 0.0
