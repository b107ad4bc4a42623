"""Evaluation metrics, framework-free. Each function states its formula.

(This module grows with the evaluation issue; for now it holds what the RL stage reports.)
"""

from __future__ import annotations

import numpy as np


def paired_bootstrap(a, b, samples: int = 2000, confidence: float = 0.95, seed: int = 0):
    """Mean of b - a over paired items, with a percentile-bootstrap interval.

    Resample the n pairs with replacement `samples` times; the interval is the
    ((1 - c) / 2, (1 + c) / 2) quantiles of the resampled mean differences. Pairs (the same
    prompt scored under both models) cancel per-prompt difficulty, which independent samples
    would not. Returns (mean difference, low, high).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError("paired_bootstrap needs two 1-D arrays of the same, non-zero length")
    diff = b - a
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(samples, len(diff)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(diff.mean()), float(low), float(high)


# ----------------------------------------------------------------------------- BLEU

import math  # noqa: E402
import re  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass  # noqa: E402

_13A_RULES = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # punctuation and symbols
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),                  # . and , unless after a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),                  # . and , unless before a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),                       # - after a digit
]


def tokenize_13a(line: str) -> str:
    """mteval-v13a tokenization, the WMT standard and sacrebleu's default."""
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} "
    for pattern, replacement in _13A_RULES:
        line = pattern.sub(replacement, line)
    return " ".join(line.split())


@dataclass
class BLEUScore:
    score: float          # 0..100
    counts: list          # matched n-grams per order
    totals: list          # hypothesis n-grams per order
    precisions: list      # modified n-gram precisions p_n, in percent
    bp: float             # brevity penalty
    sys_len: int
    ref_len: int


def _ngram_counts(tokens, max_order):
    return Counter(tuple(tokens[i:i + n]) for n in range(1, max_order + 1) for i in range(len(tokens) - n + 1))


def _segment_statistics(hypothesis, references, max_order):
    """(hyp length, closest ref length, matches per order, totals per order) of one segment.

    Matches are clipped by the largest count of each n-gram in any one reference; the reference
    length is the one closest to the hypothesis length (the shorter on a tie).
    """
    hyp = hypothesis.split()
    refs = [r.split() for r in references]
    max_ref = Counter()
    for ref in refs:
        for ngram, count in _ngram_counts(ref, max_order).items():
            max_ref[ngram] = max(max_ref[ngram], count)
    ref_len = min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
    correct, total = [0] * max_order, [0] * max_order
    for ngram, count in _ngram_counts(hyp, max_order).items():
        total[len(ngram) - 1] += count
        correct[len(ngram) - 1] += min(count, max_ref.get(ngram, 0))
    return len(hyp), ref_len, correct, total


def _bleu(correct, total, sys_len, ref_len, max_order, effective_order):
    """BLEU = BP exp(mean_n log p_n), BP = min(1, exp(1 - r / c)), with 'exp' smoothing (mteval's):
    the k-th order with no match gets p_n = 100 / (2^k total_n)."""
    bp = 1.0 if sys_len >= ref_len else (math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0)
    precisions = [0.0] * max_order
    if not any(correct):
        return BLEUScore(0.0, correct, total, precisions, bp, sys_len, ref_len)
    smooth, order = 1.0, max_order
    for n in range(1, max_order + 1):
        if total[n - 1] == 0:
            break
        if effective_order:
            order = n
        if correct[n - 1] == 0:
            smooth *= 2
            precisions[n - 1] = 100.0 / (smooth * total[n - 1])
        else:
            precisions[n - 1] = 100.0 * correct[n - 1] / total[n - 1]
    log_sum = sum(math.log(p) if p > 0 else -9999999999 for p in precisions[:order])
    return BLEUScore(bp * math.exp(log_sum / order), correct, total, precisions, bp, sys_len, ref_len)


def corpus_bleu(hypotheses, references, max_order=4, lowercase=False, use_effective_order=False) -> BLEUScore:
    """Corpus BLEU with sacrebleu's layout and defaults: `references` is a list of reference
    streams, each as long as `hypotheses` (None skips a reference for that segment); 13a
    tokenization, 'exp' smoothing, closest reference length, statistics summed over segments."""
    def prepare(text):
        return tokenize_13a((text.lower() if lowercase else text).rstrip())

    sys_len = ref_len = 0
    correct, total = [0] * max_order, [0] * max_order
    for i, hypothesis in enumerate(hypotheses):
        refs = [prepare(stream[i]) for stream in references if stream[i] is not None]
        h, r, c, t = _segment_statistics(prepare(hypothesis), refs, max_order)
        sys_len, ref_len = sys_len + h, ref_len + r
        correct = [a + b for a, b in zip(correct, c)]
        total = [a + b for a, b in zip(total, t)]
    return _bleu(correct, total, sys_len, ref_len, max_order, use_effective_order)


def sentence_bleu(hypothesis, references, max_order=4, lowercase=False, use_effective_order=True) -> BLEUScore:
    """BLEU of one hypothesis against its references (a list of strings), as sacrebleu.sentence_bleu."""
    return corpus_bleu([hypothesis], [[r] for r in references], max_order, lowercase, use_effective_order)
