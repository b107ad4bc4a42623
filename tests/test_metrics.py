import random

import numpy as np
import pytest

from shared.metrics import corpus_bleu, paired_bootstrap, sentence_bleu, tokenize_13a

sacrebleu = pytest.importorskip("sacrebleu")

REFS = [["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
        ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."]]
SYS = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]


def test_sacrebleu_readme_example():
    score = corpus_bleu(SYS, REFS)
    assert round(score.score, 6) == 48.530827  # the value sacrebleu's README publishes
    assert (score.sys_len, score.ref_len) == (17, 18) and score.bp == pytest.approx(np.exp(1 - 18 / 17))
    assert score.counts == [14, 7, 5, 3] and score.totals == [17, 14, 11, 8]


def test_13a_tokenizer_matches_sacrebleu():
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
    theirs = Tokenizer13a()
    for line in ["Hello, world! 3.14 and 1,000 - 5-6 (x)", "a&amp;b &lt;tag&gt; \"q\"", "U.S.A. isn't", "e-mail"]:
        assert tokenize_13a(line) == theirs(line)


def random_corpus(rng, n):
    words = ["the", "a", "cat", "dog", "sat", "on", "mat", ".", ",", "ran", "fast", "1.5", "5-6", "it's"]
    sentence = lambda: " ".join(rng.choice(words) for _ in range(rng.randint(0, 12)))
    return [sentence() for _ in range(n)], [[sentence() for _ in range(n)] for _ in range(rng.randint(1, 3))]


@pytest.mark.parametrize("seed", range(20))
def test_agrees_with_sacrebleu_on_generated_corpora(seed):
    rng = random.Random(seed)
    hyps, refs = random_corpus(rng, rng.randint(1, 30))
    ours, theirs = corpus_bleu(hyps, refs), sacrebleu.corpus_bleu(hyps, refs)
    assert abs(ours.score - theirs.score) <= 1e-6
    assert np.allclose(ours.precisions, theirs.precisions, atol=1e-6) and ours.bp == pytest.approx(theirs.bp)
    assert (ours.sys_len, ours.ref_len) == (theirs.sys_len, theirs.ref_len)
    for hyp, *rs in zip(hyps, *refs):
        assert abs(sentence_bleu(hyp, rs).score - sacrebleu.sentence_bleu(hyp, rs).score) <= 1e-6


def test_sentence_bleu_by_hand():
    assert sentence_bleu("a b c d", ["a b c d"]).score == pytest.approx(100.0)
    assert sentence_bleu("x y", ["a b c d"]).score == 0.0
    # brevity penalty: 2 of 4 reference words, all matching: BP = exp(1 - 4/2), p1 = p2 = 100%
    assert sentence_bleu("a b", ["a b c d"]).score == pytest.approx(100 * np.exp(-1.0))


def test_paired_bootstrap():
    a = np.array([0, 0, 1, 0, 1] * 40, dtype=float)
    b = np.array([1, 0, 1, 1, 1] * 40, dtype=float)
    diff, low, high = paired_bootstrap(a, b, seed=0)
    assert diff == pytest.approx(0.4) and 0.3 < low < 0.4 < high < 0.5
    same = paired_bootstrap(a, a)
    assert same == (0.0, 0.0, 0.0)


# ----------------------------------------------------------------------------- n-gram LMs

from shared.metrics import NGramLM  # noqa: E402

nltk_lm = pytest.importorskip("nltk.lm")
from nltk.lm.preprocessing import pad_both_ends, padded_everygram_pipeline  # noqa: E402
from nltk.util import ngrams  # noqa: E402

TRAIN = [s.split() for s in ["the cat sat on the mat", "the dog sat on the log", "a cat saw a dog",
                             "the mat was red", "a dog ran"]]
TEST = [s.split() for s in ["the cat ran", "a bird sat on the mat", "the log was red"]]


def nltk_model(cls, order, **kwargs):
    model = cls(order=order, **kwargs)
    train, vocab = padded_everygram_pipeline(order, TRAIN)
    model.fit(train, vocab)
    return model


def queries(order):
    words = ["the", "cat", "mat", "bird", "</s>", "<s>", "ran"]
    contexts = [(), ("the",), ("sat", "on"), ("<s>", "<s>"), ("a", "bird"), ("on", "the")]
    return [(w, c[-(order - 1):] if order > 1 else ()) for w in words for c in contexts]


@pytest.mark.parametrize("order", [1, 2, 3])
def test_laplace_and_lidstone_agree_with_nltk(order):
    for ours, theirs in ((NGramLM(order, "laplace").fit(TRAIN), nltk_model(nltk_lm.Laplace, order)),
                         (NGramLM(order, "lidstone", gamma=0.3).fit(TRAIN),
                          nltk_model(nltk_lm.Lidstone, order, gamma=0.3))):
        assert ours.vocab_size == len(theirs.vocab)
        for word, context in queries(order):
            assert abs(ours.score(word, context) - theirs.score(word, context)) <= 1e-9, (word, context)
            assert abs(ours.logprob(word, context) - theirs.logscore(word, context)) <= 1e-9
        test_ngrams = [g for s in TEST for g in ngrams(pad_both_ends(s, n=order), order)]
        assert abs(ours.perplexity(TEST) - theirs.perplexity(test_ngrams)) <= 1e-9


@pytest.mark.parametrize("order", [2, 3])
def test_kneser_ney_agrees_with_nltk(order):
    ours = NGramLM(order, "kneser_ney", discount=0.1).fit(TRAIN)
    theirs = nltk_model(nltk_lm.KneserNeyInterpolated, order, discount=0.1)
    for word, context in queries(order):
        if word == "bird":  # nltk divides by zero for a word never seen after anything
            continue
        assert abs(ours.score(word, context) - theirs.score(word, context)) <= 1e-12, (word, context)


def test_ngram_by_hand():
    lm = NGramLM(2, "laplace").fit([["a", "b"]])
    # padded: <s> a b </s>; V = {<s>, a, b, </s>, <UNK>} = 5; count(a) = 1 as a context, count(a b) = 1
    assert lm.score("b", ("a",)) == pytest.approx((1 + 1) / (1 + 5))
    assert lm.score("zzz", ("a",)) == pytest.approx(1 / 6)  # OOV -> <UNK>
    probs = [lm.score(w, ("a",)) for w in ["<s>", "a", "b", "</s>", "<UNK>"]]
    assert sum(probs) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- perplexity and calibration

from shared.metrics import expected_calibration_error, perplexity, sliding_windows  # noqa: E402


def test_perplexity_is_exp_mean_nll():
    assert perplexity(3 * np.log(4.0), 3) == pytest.approx(4.0)  # uniform over 4 outcomes
    with pytest.raises(ValueError):
        perplexity(1.0, 0)


@pytest.mark.parametrize("n,max_length,stride", [(10, 4, 2), (10, 4, 4), (3, 8, 4), (17, 6, 5), (1, 4, 1)])
def test_sliding_windows_score_every_token_exactly_once(n, max_length, stride):
    ids = list(range(100, 100 + n))
    windows = sliding_windows(ids, max_length, stride)
    scored = [label for _, labels in windows for label in labels if label != -100]
    assert scored == ids
    assert all(len(w) <= max_length for w, _ in windows)
    assert windows[0][0] == ids[:max_length]


def test_sliding_windows_by_hand():
    assert sliding_windows([1, 2, 3, 4, 5, 6], max_length=4, stride=2) == [
        ([1, 2, 3, 4], [1, 2, 3, 4]), ([3, 4, 5, 6], [-100, -100, 5, 6])]


def test_expected_calibration_error_by_hand():
    # bin (0.8, 0.9]: 4 predictions at 0.85, 3 right -> |0.75 - 0.85| = 0.1, weight 4/6
    # bin (0.2, 0.3]: 2 predictions at 0.25, 1 right -> |0.5 - 0.25| = 0.25, weight 2/6
    ece, table = expected_calibration_error([0.85] * 4 + [0.25] * 2, [1, 1, 1, 0, 1, 0], bins=10)
    assert ece == pytest.approx(4 / 6 * 0.1 + 2 / 6 * 0.25)
    assert table[8][2:] == (4, pytest.approx(0.85), 0.75) and table[2][2:] == (2, 0.25, 0.5)
    assert sum(row[2] for row in table) == 6
    perfect, _ = expected_calibration_error([1.0, 1.0, 0.0], [1, 1, 0])
    assert perfect == 0.0


# ----------------------------------------------------------------------------- human-eval statistics

from shared.metrics import cohens_kappa, fleiss_kappa, wilson_interval  # noqa: E402


def test_wilson_interval_by_hand():
    low, high = wilson_interval(8, 10)
    # p = 0.8, z = 1.96: centre (0.8 + 0.19208) / 1.38415, margin 1.96 sqrt(0.016 + 0.0096040) / 1.38415
    assert low == pytest.approx(0.4901624, abs=1e-6) and high == pytest.approx(0.9433178, abs=1e-6)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(0, 20)
    assert low == pytest.approx(0.0, abs=1e-12) and 0.1 < high < 0.2


def test_cohens_kappa_by_hand():
    a = ["A", "A", "B", "B", "tie", "A"]
    b = ["A", "B", "B", "B", "tie", "A"]
    # p_o = 5/6; p_e = (3/6)(2/6) + (2/6)(3/6) + (1/6)(1/6) = 13/36
    assert cohens_kappa(a, b) == pytest.approx((5 / 6 - 13 / 36) / (1 - 13 / 36))
    assert cohens_kappa(a, a) == 1.0


def test_fleiss_kappa_matches_the_wikipedia_example():
    # Fleiss (1971) example as on Wikipedia: 10 items, 14 raters, 5 categories, kappa = 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(table) == pytest.approx(0.2099, abs=1e-4)


# ----------------------------------------------------------------------------- temperature scaling

from shared.metrics import fit_temperature, temperature_nll, top_confidences  # noqa: E402


def test_temperature_nll_is_cross_entropy_of_scaled_logits():
    import torch

    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(50, 7)) * 4, rng.integers(0, 7, 50)
    for t in (0.3, 1.0, 2.5):
        expected = torch.nn.functional.cross_entropy(torch.tensor(logits / t), torch.tensor(labels)).item()
        assert temperature_nll(logits, labels, t) == pytest.approx(expected, rel=1e-12)
    confidence, correct = top_confidences(logits, labels, 2.0)
    p = torch.softmax(torch.tensor(logits / 2.0), -1).numpy()
    np.testing.assert_allclose(confidence, p.max(1), rtol=1e-12)
    np.testing.assert_array_equal(correct, (p.argmax(1) == labels).astype(float))


def test_fit_temperature_finds_the_nll_minimum_and_recovers_a_known_temperature():
    """Labels drawn from softmax(logits / 2): the fitted T is the NLL's minimum (the derivative is
    0 there, to the search's precision) and lies within 4 standard errors of 2, the standard error
    from the NLL's curvature (the Fisher information of the n labels)."""
    rng = np.random.default_rng(1)
    n, true_t = 20000, 2.0
    logits = rng.normal(size=(n, 5)) * 3
    p = np.exp(logits / true_t)
    p /= p.sum(1, keepdims=True)
    labels = np.array([rng.choice(5, p=row) for row in p])
    t = fit_temperature(logits, labels)
    f = lambda x: temperature_nll(logits, labels, x)  # noqa: E731
    h = 1e-4
    assert abs((f(t + h) - f(t - h)) / (2 * h)) < 1e-6
    curvature = (f(t + h) - 2 * f(t) + f(t - h)) / h ** 2
    standard_error = 1 / np.sqrt(n * curvature)
    assert abs(t - true_t) < 4 * standard_error
    # overconfident logits (scaled up) are cooled by the same factor
    assert fit_temperature(logits * 3, labels) == pytest.approx(3 * t, rel=1e-6)
