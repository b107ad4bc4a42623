"""The statistics behind a study report's verdicts, framework-free (NumPy and the standard library).

* paired_test: one model against another on the same prompts: paired bootstrap interval and a
  sign-flip permutation p-value;
* seed_prompt_test: the same over several seeds, counting seed and prompt variance (a crossed design);
* holm, benjamini_hochberg: p-values adjusted for a family of findings;
* overoptimisation_test: did the gold score fall while the proxy rose, along one RL run, at a known
  false-positive rate despite autocorrelated iterations;
* fit_gao: Gao et al.'s gold-against-KL curve d (alpha - beta log d), d = sqrt(KL), and its peak;
* pair_shares: win/tie/loss shares of a human evaluation with intervals over pairs, not ratings;
* t_cdf, t_quantile: Student's t distribution (no SciPy).

Every random draw comes from a named stream of shared/random_streams.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from statistics import NormalDist

import numpy as np

from shared.metrics import paired_bootstrap, wilson_interval
from shared.random_streams import generator


# ----------------------------------------------------------------------------- Student's t

def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function, by the modified Lentz method
    (Press et al., Numerical Recipes, 3rd ed., section 6.4)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        for aa in (m * (b - m) * x / ((qam + 2 * m) * (a + 2 * m)),
                   -(a + m) * (qab + m) * x / ((a + 2 * m) * (qap + 2 * m))):
            d, c = 1 + aa * d, 1 + aa / c
            d, c = 1 / (d if abs(d) > tiny else tiny), (c if abs(c) > tiny else tiny)
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1 - front * _beta_continued_fraction(b, a, 1 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with df degrees of freedom (any real df > 0; inf is the normal):
    P(|T| > |t|) = I_{df / (df + t^2)}(df / 2, 1 / 2). Computed as the tail itself, so it stays
    accurate far out where 1 - cdf would round to 0."""
    if math.isinf(df):
        return NormalDist().cdf(-t)
    tail = 0.5 * betainc(df / 2, 0.5, df / (df + t * t))
    return tail if t > 0 else 1 - tail


def t_cdf(t: float, df: float) -> float:
    """P(T <= t)."""
    return t_sf(-t, df)


def t_pdf(t: float, df: float) -> float:
    if math.isinf(df):
        return math.exp(-t * t / 2) / math.sqrt(2 * math.pi)
    return math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
                    - (df + 1) / 2 * math.log1p(t * t / df))


def t_isf(u: float, df: float) -> float:
    """The t with P(T > t) = u, for 0 < u <= 1/2: Newton's method on t_sf, kept inside a
    bisection bracket."""
    if not 0 < u <= 0.5:
        raise ValueError(f"t_isf needs 0 < u <= 1/2, got {u}")
    if u == 0.5:
        return 0.0
    if math.isinf(df):
        return -NormalDist().inv_cdf(u)
    low, high = 0.0, 1.0
    while t_sf(high, df) > u:
        low, high = high, 2 * high
    x = min(max(-NormalDist().inv_cdf(max(u, 1e-300)), low), high)
    for _ in range(200):
        f = t_sf(x, df) - u
        low, high = (x, high) if f > 0 else (low, x)
        pdf = t_pdf(x, df)
        step = x + f / pdf if pdf > 0 else (low + high) / 2
        step = step if low < step < high else (low + high) / 2
        if abs(step - x) <= 1e-13 * max(1.0, x):
            return step
        x = step
    return x


def t_quantile(q: float, df: float) -> float:
    """The q-quantile of Student's t."""
    if not 0 < q < 1:
        raise ValueError(f"t_quantile needs 0 < q < 1, got {q}")
    return t_isf(1 - q, df) if q >= 0.5 else -t_isf(q, df)


# ----------------------------------------------------------------------------- paired differences

@dataclass(frozen=True)
class Estimate:
    """A difference (second - first) with its interval and two-sided p-value. Unpacks as
    (diff, low, high), so `interval(*e)` and `comparison_finding(..., *e)` take it as they took a tuple."""
    diff: float
    low: float
    high: float
    p: float
    method: str

    def __iter__(self):
        return iter((self.diff, self.low, self.high))


def sign_flip_p(diff, samples: int = 2000, seed: int = 0) -> float:
    """Two-sided p-value of the paired permutation (sign-flip) test of mean(diff) = 0.

    Under the null the two models are exchangeable on every prompt, so each difference is as
    likely with either sign (Fisher 1935; Good, Permutation Tests, 2005). The p-value is the share
    of sign flips whose |mean| reaches the observed one: exact over all 2^n flips when 2^n <=
    samples, else (1 + hits) / (1 + samples) over random flips (Phipson & Smyth 2010, never 0).
    All-zero differences give p = 1.
    """
    diff = np.asarray(diff, dtype=np.float64)
    observed = abs(diff.mean())
    tolerance = 1e-12 * max(1.0, float(np.abs(diff).max(initial=0.0)))  # equal up to rounding counts as reached
    n = len(diff)
    if 2 ** n <= samples:
        signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)  # (2^n, n): every flip
        return float(np.mean(np.abs(signs @ diff / n) >= observed - tolerance))
    signs = 1 - 2 * generator("sign_flip", seed).integers(0, 2, size=(samples, n))
    hits = int(np.sum(np.abs(signs @ diff / n) >= observed - tolerance))
    return (1 + hits) / (1 + samples)


def paired_test(first, second, samples: int = 2000, confidence: float = 0.95, seed: int = 0) -> Estimate:
    """Mean of second - first over paired prompts: the percentile paired-bootstrap interval of
    shared.metrics.paired_bootstrap (identical numbers for the same seed; Efron & Tibshirani 1993)
    and the two-sided sign-flip permutation p-value (`sign_flip_p`). The two are different
    procedures, so an interval just clear of 0 can come with p just above 1 - confidence."""
    diff, low, high = paired_bootstrap(first, second, samples, confidence, seed)
    p = sign_flip_p(np.asarray(second, dtype=np.float64) - np.asarray(first, dtype=np.float64), samples, seed)
    return Estimate(diff, low, high, p, "paired bootstrap over prompts; sign-flip permutation p")


def cochran_cox_p(statistic: float, weights, dfs) -> float:
    """The two-sided p at which Cochran & Cox's critical value sum_i w_i t_{df_i}(1 - p/2) (weights
    summing to 1) equals |statistic|: the smallest level whose interval excludes the null. Newton's
    method in log(p/2), kept inside a bisection bracket."""
    statistic = abs(statistic)
    if statistic == 0:
        return 1.0

    def critical(s):                                    # (critical value at u = e^s, its derivative in s)
        u = math.exp(s)
        ts = [t_isf(u, df) for df in dfs]
        return (sum(w * t for w, t in zip(weights, ts)),
                -u * sum(w / t_pdf(t, df) for w, t, df in zip(weights, ts, dfs)))

    low, high = math.log(1e-100), math.log(0.5)       # p below 2e-100 is reported as 2e-100
    if critical(low)[0] <= statistic:
        return 2e-100
    s = math.log(min(max(sum(w * t_sf(statistic, df) for w, df in zip(weights, dfs)), 1e-100), 0.5))
    for _ in range(200):
        c, slope = critical(s)
        if abs(c - statistic) <= 1e-12 * statistic:
            break
        low, high = (s, high) if c > statistic else (low, s)
        step = s - (c - statistic) / slope
        s = step if low < step < high else (low + high) / 2
    return 2 * math.exp(s)


def seed_prompt_test(first, second, confidence: float = 0.95, samples: int = 2000, seed: int = 0) -> Estimate:
    """Mean difference second - first of (seeds, prompts) score arrays, every seed on the same
    prompts (seed k's second model paired with seed k's first), with seed and prompt variance.

    The differences follow a crossed random-effects model D[s, p] = mu + a_s + b_p + e_sp, so
    Var(mean D) = s2_seed / S + s2_prompt / P + s2_resid / (S P). With the two-way ANOVA mean squares
    (E MS_seed = s2_resid + P s2_seed, E MS_prompt = s2_resid + S s2_prompt, E MS_resid = s2_resid),
    it is the sum of two estimated terms:
        MS_seed / (S P)                          = the variance of a t over the per-seed means, S - 1 df;
        max(MS_prompt - MS_resid, 0) / (S P)     = s2_prompt / P, the shared prompts' share that the
                                                   per-seed t misses (P - 1 df).
    The interval is mean +- c se with Cochran & Cox's critical value (Cochran & Cox, Experimental
    Designs, 1950, for sums of variances with different df): c = the variance-weighted mean of the two
    terms' t quantiles. With few seeds Satterthwaite's df is liberal (a small MS_seed also lowers its
    df); Cochran-Cox is the conservative classic. With no prompt variance it is exactly the t-interval
    over per-seed means. The p-value inverts the same interval (`cochran_cox_p`), so p < 1 - confidence
    exactly when the interval excludes 0. With one seed it is `paired_test`, and says so.
    """
    first, second = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if first.shape != second.shape or first.ndim != 2 or first.size == 0:
        raise ValueError("seed_prompt_test needs two (seeds, prompts) arrays of the same, non-empty shape")
    S, P = first.shape
    if S == 1:
        e = paired_test(first[0], second[0], samples, confidence, seed)
        return replace(e, method=f"one seed, so no seed variance: {e.method}")
    if P == 1:
        raise ValueError("seed_prompt_test needs at least two prompts")
    D = second - first                                           # (S, P)
    mean, seed_means, prompt_means = D.mean(), D.mean(axis=1), D.mean(axis=0)
    resid = D - seed_means[:, None] - prompt_means[None, :] + mean
    ms_seed = P * np.sum((seed_means - mean) ** 2) / (S - 1)
    ms_prompt = S * np.sum((prompt_means - mean) ** 2) / (P - 1)
    ms_resid = np.sum(resid ** 2) / ((S - 1) * (P - 1))
    terms = [(float(ms_seed), S - 1), (float(max(ms_prompt - ms_resid, 0.0)), P - 1)]   # (S P variance, df)
    total = sum(v for v, _ in terms)
    se = math.sqrt(total / (S * P))
    method = (f"crossed seeds x prompts ({S} x {P}): per-seed t plus the prompt variance, Cochran-Cox critical "
              f"value (seed share {terms[0][0] / total:.2f})" if total > 0 else f"crossed seeds x prompts ({S} x {P})")
    if se == 0:
        return Estimate(float(mean), float(mean), float(mean), 1.0 if mean == 0 else 0.0, method)
    weights, dfs = [v / total for v, _ in terms], [df for _, df in terms]
    half = se * sum(w * t_isf((1 - confidence) / 2, df) for w, df in zip(weights, dfs))
    p = cochran_cox_p(mean / se, weights, dfs)
    return Estimate(float(mean), float(mean - half), float(mean + half), p, method)


# ----------------------------------------------------------------------------- multiple comparisons

def _adjust(pvalues, step):
    """Apply `step(sorted p, m)` to the non-None p-values; None entries pass through in place."""
    where = [i for i, p in enumerate(pvalues) if p is not None]
    adjusted = list(pvalues)
    if where:
        order = sorted(where, key=lambda i: pvalues[i])
        for i, p in zip(order, step(np.array([pvalues[i] for i in order], dtype=np.float64), len(where))):
            adjusted[i] = float(p)
    return adjusted


def holm(pvalues):
    """Holm's step-down adjusted p-values (Holm 1979), family-wise error rate <= alpha for any
    dependence: with p_(1) <= ... <= p_(m), adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)).
    Order preserved; None entries (a finding without a p-value) pass through as None."""
    return _adjust(pvalues, lambda p, m: np.minimum(1, np.maximum.accumulate((m - np.arange(m)) * p)))


def benjamini_hochberg(pvalues):
    """Benjamini-Hochberg adjusted p-values (1995), false discovery rate <= alpha for independent
    or positively dependent tests: adj_(i) = min_{j >= i} min(1, m p_(j) / j). Order preserved;
    None entries pass through as None."""
    return _adjust(pvalues, lambda p, m: np.minimum(1, np.minimum.accumulate((m * p / np.arange(1, m + 1))[::-1])[::-1]))


# ----------------------------------------------------------------------------- over-optimisation along a run

RHO_GRID = np.round(np.arange(0, 0.99, 0.02), 2)  # the AR(1) autocorrelations the test considers
MIN_ITERATIONS = 12                                # thirds of 4, and 6 residual df after the trend


def thirds(n: int):
    """The early, middle and late thirds of n iterations, as slices (pre-declared, not found in the data)."""
    bounds = (0, n // 3, 2 * n // 3, n)
    return [slice(bounds[i], bounds[i + 1]) for i in range(3)]


def _prais_winsten(a, rho):
    """(..., n) -> (len(rho), ..., n): the transform that turns AR(1) noise into white noise,
    x_0 sqrt(1 - rho^2), x_t - rho x_{t-1} (Prais & Winsten 1954)."""
    r = rho.reshape((-1,) + (1,) * a.ndim)
    out = np.empty((len(rho),) + a.shape)
    out[..., 0] = np.sqrt(1 - r[..., 0] ** 2) * a[..., 0]
    out[..., 1:] = a[..., 1:] - r * a[..., :-1]
    return out


def trend_design(n: int):
    """(k, n): a cubic regression spline in t / n with knots at the quarters of the run (every
    4 iterations at least): smooth enough for a rise and fall anywhere, so what it leaves is noise."""
    t = np.arange(n, dtype=np.float64) / n
    every = max(4, n // 4)
    knots = np.arange(every, n - 2, every) / n
    return np.stack([np.ones(n), t, t ** 2, t ** 3] + [np.maximum(t - k, 0) ** 3 for k in knots])


class _ContrastModel:
    """y_t = a smooth trend (`trend_design`) + AR(1) noise, the noise fitted by REML on RHO_GRID.
    The statistic is the contrast late-third mean - middle-third mean, w'y, over its standard
    error sqrt(Var(y_t) w'R(rho)w); the trend only serves to leave the noise behind."""

    def __init__(self, n: int):
        t = np.arange(n, dtype=np.float64)
        self.w = np.zeros(n)
        middle, late = thirds(n)[1:]
        self.w[late], self.w[middle] = 1 / len(t[late]), -1 / len(t[middle])
        X = trend_design(n)                                     # (k, n)
        self.n, self.k = n, len(X)
        Xs = _prais_winsten(X, RHO_GRID)                        # (G, k, n)
        self.Q = np.linalg.qr(np.swapaxes(Xs, 1, 2))[0]         # (G, n, k)
        # REML log-likelihood terms that depend on rho alone: log|V| = -log(1 - rho^2), log|X' V^-1 X|
        self.const = -np.log(1 - RHO_GRID ** 2) + np.linalg.slogdet(Xs @ np.swapaxes(Xs, 1, 2))[1]
        lag = np.abs(np.subtract.outer(t, t))
        self.wRw = np.array([self.w @ rho ** lag @ self.w for rho in RHO_GRID])  # Var(contrast) / Var(y_t)

    def fit(self, Y):
        """Y (B, n) -> (contrast, its standard error, REML index of rho on RHO_GRID), each (B,)."""
        Ys = _prais_winsten(Y, RHO_GRID)                                  # (G, B, n)
        ss = (Ys ** 2).sum(-1) - ((Ys @ self.Q) ** 2).sum(-1)             # (G, B) GLS residual sum of squares
        dof = self.n - self.k
        g = np.argmax(-0.5 * (dof * np.log(np.maximum(ss, 1e-300) / dof) + self.const[:, None]), axis=0)
        variance = ss[g, np.arange(len(g))] / dof / (1 - RHO_GRID[g] ** 2)  # stationary Var(y_t)
        return Y @ self.w, np.sqrt(variance * self.wRw[g]), g


@lru_cache(maxsize=8)
def _contrast_model(n: int) -> _ContrastModel:
    return _ContrastModel(n)


@lru_cache(maxsize=512)
def _null_statistics(n: int, g: int, samples: int, seed: int):
    """The studentised contrast of `samples` stationary AR(1) series with rho = RHO_GRID[g], each
    refitted as the data are. Its distribution depends on rho alone (not the mean or the scale)."""
    rho, e = RHO_GRID[g], generator("ar1_bootstrap", seed, n, g).standard_normal((samples, n))
    y = np.empty_like(e)
    y[:, 0] = e[:, 0]
    for t in range(1, n):
        y[:, t] = rho * y[:, t - 1] + math.sqrt(1 - rho ** 2) * e[:, t]
    contrast, se, _ = _contrast_model(n).fit(y)
    return contrast / np.maximum(se, 1e-300)


def trend_contrast(y, direction: int, samples: int = 1000, seed: int = 0) -> dict:
    """Did y fall (direction -1) or rise (+1) from the middle to the last third? A parametric
    bootstrap-t (Efron & Tibshirani 1993, ch. 12): the studentised contrast of `_ContrastModel`
    against its distribution over `samples` AR(1) series with the fitted rho, each refitted alike.
    REML (Patterson & Thompson 1971) is far less biased than the lag-1 autocorrelation on a few
    dozen points, and bootstrapping the studentised statistic carries the uncertainty of rho and
    of the variance, which a normal or t reference would not (a plug-in AR(1) or Newey-West standard
    error with a normal reference over-rejects at moderate rho on a few dozen iterations).
    p = (1 + hits) / (1 + samples)."""
    y = np.asarray(y, dtype=np.float64)
    model = _contrast_model(len(y))
    contrast, se, g = (float(v[0]) for v in model.fit(y[None]))
    z = direction * contrast / se if se > 0 else (math.inf if direction * contrast > 0 else 0.0)
    null = direction * _null_statistics(len(y), int(g), samples, seed)
    means = [float(y[part].mean()) for part in thirds(len(y))]
    return {"early": means[0], "middle": means[1], "late": means[2], "change": contrast, "se": se,
            "rho": float(RHO_GRID[int(g)]), "p": (1 + int(np.sum(null >= z))) / (1 + samples)}


def overoptimisation_test(gold, proxy, kl=None, alpha: float = 0.05, samples: int = 1000, seed: int = 0) -> dict:
    """Over-optimisation along one RL run's per-iteration curves: the gold (verifier) score fell
    from the middle to the last third of the run while the proxy (reward-model) score rose.

    The thirds are declared before looking, so no peak is chosen from the data (the old rule took
    the peak of a moving average, whose noise alone puts it above the last window). Each curve's
    change, late - middle mean, is tested by `trend_contrast` (a smooth trend plus AR(1) noise: the
    autocorrelation of consecutive rollouts of a slowly changing policy). The
    verdict fires when both one-sided tests reject: an intersection-union test (Berger 1982) whose
    p = max(p_gold, p_proxy) keeps the false-positive rate <= alpha with no multiplicity correction.
    kl (optional, per iteration) adds the mean KL of each third and `fit_gao` of gold against it.
    """
    gold, proxy = np.asarray(gold, dtype=np.float64), np.asarray(proxy, dtype=np.float64)
    if gold.shape != proxy.shape or gold.ndim != 1 or not np.all(np.isfinite(gold) & np.isfinite(proxy)):
        raise ValueError("overoptimisation_test needs two finite 1-D curves of the same length")
    n = len(gold)
    result = {"iterations": n, "alpha": alpha, "fired": False, "p": None,
              "method": "late - middle third mean of each curve, spline trend + AR(1) noise (REML), parametric "
                        "bootstrap-t; fires when gold fell and proxy rose (intersection-union test)"}
    if n < MIN_ITERATIONS:
        return {**result, "verdict": f"too few iterations ({n} < {MIN_ITERATIONS}) to tell over-optimisation from noise"}
    g, r = trend_contrast(gold, -1, samples, seed), trend_contrast(proxy, +1, samples, seed)
    p = max(g["p"], r["p"])
    result.update(gold=g, proxy=r, p=p, fired=p <= alpha)
    if kl is not None:
        kl = np.asarray(kl, dtype=np.float64)
        result["kl"] = [float(kl[part].mean()) for part in thirds(n)]
        result["gao"] = fit_gao(kl, gold)
    shown = (f"gold {g['middle']:.3f} -> {g['late']:.3f} (p = {g['p']:.3f}), "
             f"proxy {r['middle']:.3f} -> {r['late']:.3f} (p = {r['p']:.3f}) from the middle to the last third")
    result["verdict"] = (f"over-optimisation: {shown}" if result["fired"] else
                         f"no significant over-optimisation at alpha = {alpha:g}: {shown}")
    return result


# ----------------------------------------------------------------------------- gold against KL

def fit_gao(kl, gold, gold0: float | None = None) -> dict:
    """Gao, Schulman & Hilton (2023), "Scaling laws for reward model overoptimization", RL form:
    gold(d) - gold(0) = d (alpha - beta log d), d = sqrt(KL). Linear in (alpha, beta), so least
    squares; gold(0) is fitted too unless given (a curve measures it only with noise).

    The peak, where the derivative alpha - beta (log d + 1) is 0, is d* = exp(alpha / beta - 1)
    when beta > 0; with beta <= 0 the fit rises without an interior peak (d* None).
    """
    kl, gold = np.asarray(kl, dtype=np.float64), np.asarray(gold, dtype=np.float64)
    if kl.shape != gold.shape or kl.ndim != 1 or len(kl) < 3 + (gold0 is None):
        raise ValueError("fit_gao needs two 1-D arrays of the same length, at least one point more than parameters")
    d = np.sqrt(np.maximum(kl, 0))                       # a KL estimate can dip below 0 by noise
    d_log_d = d * np.log(np.where(d > 0, d, 1))          # d log d -> 0 as d -> 0
    X = np.stack([d, -d_log_d] + ([np.ones_like(d)] if gold0 is None else []), axis=1)
    target = gold - (0 if gold0 is None else gold0)
    coef = np.linalg.lstsq(X, target, rcond=None)[0]
    alpha, beta = float(coef[0]), float(coef[1])
    base = float(coef[2]) if gold0 is None else float(gold0)
    resid = target - X @ coef
    total = float(np.sum((gold - gold.mean()) ** 2))
    r2 = 1 - float(resid @ resid) / total if total > 0 else 1.0
    d_peak = math.exp(alpha / beta - 1) if beta > 0 and alpha / beta - 1 < 700 else None
    kl_peak = None if d_peak is None else d_peak ** 2
    return {"alpha": alpha, "beta": beta, "gold0": base, "r2": r2, "d_peak": d_peak, "kl_peak": kl_peak,
            "gold_peak": None if d_peak is None else base + beta * d_peak,  # d (alpha - beta log d) at d*
            "peak_inside": kl_peak is not None and float(kl.min()) <= kl_peak <= float(kl.max())}


# ----------------------------------------------------------------------------- human evaluation

OUTCOMES = ("win", "tie", "loss")


def pair_shares(outcomes_by_pair, samples: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Win/tie/loss shares of one model over rated pairs, with percentile-bootstrap intervals whose
    unit is the pair: each pair's outcomes ("win", "tie", "loss", one per rating) are averaged over
    its raters first, then pairs are resampled with replacement. Ratings of one pair are not
    independent (raters share the pair's difficulty), so a Wilson interval over ratings is too
    narrow by up to sqrt(raters per pair); here two raters who agree count as one pair, as they
    should. Where every pair has the same share of an outcome (all won, none tied) the bootstrap
    collapses to a point; that outcome gets the Wilson interval over pairs instead (Wilson 1927;
    exact for one rating a pair). Returns {"pairs": n, "win": (share, low, high), "tie": ..., "loss":
    ...}. A mapping pair id -> outcomes is taken as its values.
    """
    groups = list(outcomes_by_pair.values() if hasattr(outcomes_by_pair, "values") else outcomes_by_pair)
    groups = [list(g) for g in groups if len(g)]
    if not groups:
        raise ValueError("pair_shares needs at least one rated pair")
    if bad := {o for g in groups for o in g} - set(OUTCOMES):
        raise ValueError(f"pair_shares: outcomes are {', '.join(OUTCOMES)}, got {sorted(bad)}")
    per_pair = np.array([[g.count(o) / len(g) for o in OUTCOMES] for g in groups])   # (pairs, 3)
    rng = generator("bootstrap", seed)
    means = per_pair[rng.integers(0, len(groups), size=(samples, len(groups)))].mean(axis=1)  # (samples, 3)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2], axis=0)
    shares = per_pair.mean(axis=0)
    z = NormalDist().inv_cdf((1 + confidence) / 2)
    for i in np.flatnonzero(np.ptp(per_pair, axis=0) == 0):                  # no spread: no bootstrap interval
        low[i], high[i] = wilson_interval(round(shares[i] * len(groups)), len(groups), z)
    return {"pairs": len(groups), **{o: (float(shares[i]), float(low[i]), float(high[i])) for i, o in enumerate(OUTCOMES)}}
