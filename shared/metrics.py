"""Evaluation metrics, framework-free. Each function states its formula.

* paired_bootstrap: interval of a difference between two models on the same items;
* BLEU: corpus_bleu / sentence_bleu with sacrebleu's conventions (tested against it);
* NGramLM: Laplace / Lidstone / interpolated Kneser-Ney n-gram LMs with nltk.lm's conventions;
* perplexity, sliding_windows (texts longer than the context), expected_calibration_error.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from shared.constants import IGNORE_INDEX
from shared.random_streams import generator


def bootstrap_mean(values, samples: int = 2000, confidence: float = 0.95, seed: int = 0):
    """Mean of per-item values, with a percentile-bootstrap interval.

    Resample the n items with replacement `samples` times (the stream `bootstrap`); the interval
    is the ((1 - c) / 2, (1 + c) / 2) quantiles of the resampled means. Returns (mean, low, high).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError("bootstrap_mean needs a 1-D array of non-zero length")
    rng = generator("bootstrap", seed)
    means = values[rng.integers(0, len(values), size=(samples, len(values)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(values.mean()), float(low), float(high)


def paired_bootstrap(a, b, samples: int = 2000, confidence: float = 0.95, seed: int = 0):
    """Mean of b - a over paired items, with a percentile-bootstrap interval (`bootstrap_mean` of
    the differences). Pairs (the same prompt scored under both models) cancel per-prompt
    difficulty, which independent samples would not. Returns (mean difference, low, high).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError("paired_bootstrap needs two 1-D arrays of the same, non-zero length")
    return bootstrap_mean(b - a, samples, confidence, seed)


# ----------------------------------------------------------------------------- BLEU

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


# ----------------------------------------------------------------------------- n-gram language models

BOS, EOS, UNK = "<s>", "</s>", "<UNK>"


class NGramLM:
    """A statistical n-gram LM, the chain rule with an order-(n-1) Markov assumption:

        P(w_1..w_m) = prod_i P(w_i | w_{i-n+1} .. w_{i-1})

    with the conventions of `nltk.lm`: each sentence is padded with n-1 `<s>` and n-1 `</s>`;
    words seen fewer than `unk_cutoff` times become `<UNK>`; the vocabulary size V counts `<UNK>`.
    Smoothing:
      laplace / lidstone:  P(w | c) = (count(c, w) + gamma) / (count(c) + V gamma)   (Laplace: gamma = 1)
      kneser_ney (interpolated, absolute discount d):
          P(w | c) = max(n(c, w) - d, 0) / n(c) + d N1+(c .) / n(c) * P(w | c[1:])
      with raw counts n at the highest order, continuation counts (distinct left contexts) below
      it, and P(w) = N1+(. w) / N1+(. .) at the bottom.
    Log-probabilities are base 2, and perplexity = 2 ** (-mean log2 P), as in nltk.
    """

    def __init__(self, order: int, smoothing: str = "laplace", gamma: float = 1.0, discount: float = 0.1,
                 unk_cutoff: int = 1):
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        if smoothing not in ("laplace", "lidstone", "kneser_ney"):
            raise ValueError(f"smoothing must be laplace, lidstone or kneser_ney, got {smoothing!r}")
        self.order, self.smoothing, self.discount, self.unk_cutoff = order, smoothing, discount, unk_cutoff
        self.gamma = 1.0 if smoothing == "laplace" else gamma

    def pad(self, sentence):
        return [BOS] * (self.order - 1) + list(sentence) + [EOS] * (self.order - 1)

    def fit(self, sentences):
        """Count every n-gram of order 1..n of the padded sentences (lists of words)."""
        padded = [self.pad(s) for s in sentences]
        word_counts = Counter(w for s in padded for w in s)
        self.vocab = {w for w, c in word_counts.items() if c >= self.unk_cutoff}
        self.vocab_size = len(self.vocab | {UNK}) if word_counts else 0
        # counts[n][context] = Counter of the words that follow `context` (a tuple of n-1 words)
        self.counts = {n: {} for n in range(1, self.order + 1)}
        for sentence in padded:
            words = [self.lookup(w) for w in sentence]
            for n in range(1, self.order + 1):
                for i in range(len(words) - n + 1):
                    context, word = tuple(words[i:i + n - 1]), words[i + n - 1]
                    self.counts[n].setdefault(context, Counter())[word] += 1
        return self

    def lookup(self, word):
        return word if word in self.vocab else UNK

    def _following(self, context):
        return self.counts[len(context) + 1].get(context, Counter()) if len(context) < self.order else Counter()

    def score(self, word, context=()):
        """P(word | context); context beyond the last n-1 words is ignored."""
        word = self.lookup(word)
        context = tuple(self.lookup(w) for w in context)[-(self.order - 1):] if self.order > 1 else ()
        if self.smoothing == "kneser_ney":
            return self._kneser_ney(word, context)
        following = self._following(context)
        return (following[word] + self.gamma) / (sum(following.values()) + self.vocab_size * self.gamma)

    def _continuation(self, word, context=()):
        """(number of distinct w' with count(w' context word) > 0, total of such distinct pairs)."""
        with_word = total = 0
        for prefix, following in self.counts[len(context) + 2].items():
            if prefix[1:] == context:
                with_word += following[word] > 0
                total += sum(1 for c in following.values() if c > 0)
        return with_word, total

    def _kneser_ney(self, word, context):
        if not context:
            with_word, total = self._continuation(word)
            return with_word / total
        following = self._following(context)
        if not following:
            return self._kneser_ney(word, context[1:])  # unseen context: back off entirely
        if len(context) + 1 == self.order:
            count, total = following[word], sum(following.values())
        else:
            count, total = self._continuation(word, context)
        alpha = max(count - self.discount, 0.0) / total
        gamma = self.discount * sum(1 for c in following.values() if c > 0) / total
        return alpha + gamma * self._kneser_ney(word, context[1:])

    def logprob(self, word, context=()):
        """log2 P(word | context) (nltk's `logscore`)."""
        p = self.score(word, context)
        return math.log2(p) if p > 0 else float("-inf")

    def perplexity(self, sentences):
        """2 ** (-mean log2 P(w_i | previous n-1 words)) over every n-gram of the padded sentences."""
        logs = []
        for sentence in sentences:
            words = self.pad(sentence)
            for i in range(len(words) - self.order + 1):
                gram = words[i:i + self.order]
                logs.append(self.logprob(gram[-1], gram[:-1]))
        return 2.0 ** (-sum(logs) / len(logs))


# ----------------------------------------------------------------------------- perplexity and calibration

def perplexity(nll_sum: float, token_count: int) -> float:
    """PPL = exp(mean NLL) = exp(-(1/N) sum_i log P(w_i | w_<i)), NLL in nats."""
    if token_count <= 0:
        raise ValueError("perplexity needs at least one scored token")
    return math.exp(nll_sum / token_count)


def sliding_windows(ids, max_length: int, stride: int, ignore_index: int = IGNORE_INDEX):
    """Windows of at most `max_length` tokens, `stride` apart, for texts longer than the context.

    Each token is scored once: in every window after the first, the labels of the tokens the
    previous window already scored are set to `ignore_index`, so they serve as context only.
    Returns a list of (input_ids, labels).
    """
    if not 0 < stride <= max_length:
        raise ValueError(f"need 0 < stride <= max_length, got stride={stride}, max_length={max_length}")
    windows, previous_end = [], 0
    for begin in range(0, max(len(ids), 1), stride):
        end = min(begin + max_length, len(ids))
        new = end - previous_end              # tokens not scored by an earlier window
        window = list(ids[begin:end])
        labels = [ignore_index] * (len(window) - new) + window[len(window) - new:]
        windows.append((window, labels))
        previous_end = end
        if end == len(ids):
            break
    return windows


def expected_calibration_error(confidences, correct, bins: int = 10):
    """ECE = sum_b (n_b / N) |accuracy_b - confidence_b| over equal-width confidence bins.

    Returns (ece, table) with, per bin, (lower edge, upper edge, count, mean confidence, accuracy):
    the data of a reliability diagram.
    """
    confidences = np.asarray(confidences, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidences, edges[1:-1], right=True), 0, bins - 1)
    ece, table = 0.0, []
    for b in range(bins):
        in_bin = index == b
        n = int(in_bin.sum())
        confidence = float(confidences[in_bin].mean()) if n else 0.0
        accuracy = float(correct[in_bin].mean()) if n else 0.0
        ece += n / max(len(confidences), 1) * abs(accuracy - confidence)
        table.append((float(edges[b]), float(edges[b + 1]), n, confidence, accuracy))
    return ece, table


def temperature_nll(logits, labels, temperature: float) -> float:
    """Mean negative log-likelihood of `labels` under softmax(logits / temperature); logits (N, V)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(z)), np.asarray(labels)]))


def fit_temperature(logits, labels, low: float = 0.05, high: float = 20.0, iterations: int = 60) -> float:
    """Post-hoc temperature scaling (Guo et al. 2017): the T > 0 that minimises the held-out NLL of
    softmax(logits / T). The NLL is convex in 1/T, so a golden-section search over log T finds it;
    60 iterations shrink [low, high] to a width below 1e-10 in log T."""
    a, b = np.log(low), np.log(high)
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = temperature_nll(logits, labels, np.exp(c)), temperature_nll(logits, labels, np.exp(d))
    for _ in range(iterations):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = temperature_nll(logits, labels, np.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = temperature_nll(logits, labels, np.exp(d))
    return float(np.exp((a + b) / 2.0))


def top_confidences(logits, labels, temperature: float = 1.0):
    """(top probability of softmax(logits / T), 1.0 where the top token is the label) per row."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    return p.max(axis=1), (p.argmax(axis=1) == np.asarray(labels)).astype(np.float64)


# ----------------------------------------------------------------------------- human evaluation statistics

def wilson_interval(successes: int, n: int, z: float = 1.959963984540054):
    """Wilson score interval of a proportion k / n (better than p +- z sqrt(p(1-p)/n) near 0 and 1):

        (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)
    """
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    denominator = 1 + z * z / n
    return (centre - margin) / denominator, (centre + margin) / denominator


def cohens_kappa(a, b):
    """kappa = (p_o - p_e) / (1 - p_e): observed agreement of two raters on the same items, corrected
    for the agreement their label frequencies give by chance, p_e = sum_k p_a(k) p_b(k)."""
    if len(a) != len(b) or not a:
        raise ValueError("cohens_kappa needs two equally long, non-empty label lists")
    labels = sorted(set(a) | set(b))
    n = len(a)
    p_o = sum(x == y for x, y in zip(a, b)) / n
    p_e = sum((a.count(k) / n) * (b.count(k) / n) for k in labels)
    return 1.0 if p_e == 1 else (p_o - p_e) / (1 - p_e)


def fleiss_kappa(counts):
    """Fleiss' kappa for several raters: counts[i][k] = raters who gave item i label k (same number
    of raters m per item). P_i = (sum_k n_ik^2 - m) / (m (m - 1)); kappa = (mean P_i - P_e) / (1 - P_e),
    P_e = sum_k p_k^2 with p_k the share of all ratings in label k."""
    counts = np.asarray(counts, dtype=np.float64)
    m = counts.sum(1)
    if len(counts) == 0 or not np.all(m == m[0]) or m[0] < 2:
        raise ValueError("fleiss_kappa needs the same number (>= 2) of raters for every item")
    m = m[0]
    p_item = ((counts ** 2).sum(1) - m) / (m * (m - 1))
    p_label = counts.sum(0) / counts.sum()
    p_e = float((p_label ** 2).sum())
    return 1.0 if p_e == 1 else (float(p_item.mean()) - p_e) / (1 - p_e)
