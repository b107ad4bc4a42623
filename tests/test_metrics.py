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
