"""`sftrl eval`: one row per model on the same prompts."""

import json

import numpy as np
import pytest

from conftest import run_cli
from shared.config import ModelConfig


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    assert run_cli("data", "--out", root / "data").returncode == 0
    ModelConfig(vocab_size=300, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                max_position_embeddings=48).to_json_file(root / "tiny.json")
    for name, steps in (("a", "5"), ("b", "40")):
        result = run_cli("sft", "--data", root / "data" / "sft.train.jsonl", "--model-config", root / "tiny.json",
                         "--vocab-size", "300", "--steps", steps, "--lr", "3e-3", "--out", root / name, "--quiet")
        assert result.returncode == 0, result.stderr
    return root


def test_eval_rows_and_differences(trained, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    lines = (trained / "data" / "prompt.eval.jsonl").read_text().splitlines()[:40]
    prompts.write_text("\n".join(lines) + "\n")
    result = run_cli("eval", "--model", trained / "a", "--model", trained / "a", "--model", trained / "b",
                     "--prompts", prompts, "--out", tmp_path / "out", "--max-new-tokens", "8")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "eval.json").read_text())
    first, same, other = report["models"]
    assert report["count"] == 40 and len(report["completions"][str(trained / "a")]) == 40
    for row in report["models"]:
        for key in ("exact_match", "partial_credit", "reference_perplexity", "bleu", "sequence_kl_to_first",
                    "mean_length_words", "samples_per_s", "copy/exact_match", "add/partial_credit"):
            assert row[key] is not None, key
        assert 0 <= row["bleu"] <= 100 and row["reference_perplexity"] > 1
    # the Monte-Carlo sequence KL, named as such; the first model's is 0 by definition
    assert set(first["sequence_kl_to_first"]) == {"mean", "ci95", "samples_per_prompt", "estimator"}
    assert {k: first["sequence_kl_to_first"][k] for k in ("mean", "ci95", "samples_per_prompt")} == \
        {"mean": 0.0, "ci95": [0.0, 0.0], "samples_per_prompt": 4}
    assert "Monte-Carlo" in first["sequence_kl_to_first"]["estimator"] and "kl_to_first" not in first
    # the same model twice: its samples score an identical model, so the KL is exactly 0; no difference
    assert same["sequence_kl_to_first"] == first["sequence_kl_to_first"]
    assert same["exact_match_difference"] == {"mean": 0.0, "ci95": [0.0, 0.0]}
    assert (same["partial_credit"], same["bleu"]) == (first["partial_credit"], first["bleu"])
    kl = other["sequence_kl_to_first"]
    assert 0.01 < kl["ci95"][0] <= kl["mean"] <= kl["ci95"][1]
    assert other["reference_perplexity"] < first["reference_perplexity"]  # 40 steps beat 5 steps
    table = (tmp_path / "out" / "eval.md").read_text()
    assert "| model | exact match |" in table and "(baseline)" in table
    assert f"| {kl['mean']:.3f} [{kl['ci95'][0]:.3f}, {kl['ci95'][1]:.3f}] |" in table
    assert "KL to first (MC, nats/seq) [95% CI]" in table
    bad = run_cli("eval", "--model", trained / "a", "--prompts", prompts, "--out", tmp_path / "bad",
                  "--kl-samples", "-1")
    assert bad.returncode == 2 and "error: --kl-samples must be >= 0" in bad.stderr


def test_masked_lm_rows_report_pseudo_perplexity(trained, tmp_path):
    folder = tmp_path / "mlm"
    result = run_cli("sft", "--data", trained / "data" / "sft.train.jsonl", "--model-config", trained / "tiny.json",
                     "--vocab-size", "300", "--objective", "mlm", "--steps", "2", "--out", folder, "--quiet")
    assert result.returncode == 0, result.stderr
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join((trained / "data" / "prompt.eval.jsonl").read_text().splitlines()[:5]) + "\n")
    result = run_cli("eval", "--model", trained / "a", "--model", folder, "--prompts", prompts, "--out", tmp_path / "o")
    assert result.returncode == 0, result.stderr
    row = json.loads((tmp_path / "o" / "eval.json").read_text())["models"][1]
    assert row["masked_lm"] and row["pseudo_perplexity"] > 1 and row["exact_match"] is None
    assert "perplexity" not in {k for k in row if k != "pseudo_perplexity"}
    assert "| masked LM | pseudo-perplexity | masked-token loss (nats) |" in result.stdout
    bad = run_cli("eval", "--model", folder, "--model", trained / "a", "--prompts", prompts, "--out", tmp_path / "p")
    assert bad.returncode == 2 and "put a causal (generating) model first" in bad.stderr


def test_pseudo_perplexity_masks_each_token_in_turn(trained):
    import numpy as np
    import torch

    from shared.tokenizer import Tokenizer
    from torch_impl.evaluate import pseudo_perplexity
    from torch_impl.model import SFTModel

    tokenizer = Tokenizer.load(trained / "a" / "tokenizer.json")
    config = ModelConfig.from_json_file(trained / "tiny.json")
    torch.manual_seed(0)
    model = SFTModel(config).eval()
    text = "reverse: a b c = c b a"
    ids = tokenizer.encode(text)
    nll = []
    torch.set_grad_enabled(False)
    for i in range(1, len(ids) - 1):  # by hand, one position at a time
        masked = list(ids)
        masked[i] = tokenizer.mask_id
        logp = torch.log_softmax(model(torch.tensor([masked])), -1)[0, i, ids[i]]
        nll.append(-float(logp))
    torch.set_grad_enabled(True)
    pppl, loss = pseudo_perplexity(model, tokenizer, [text], batch_size=3)
    assert loss == pytest.approx(np.mean(nll), abs=1e-6) and pppl == pytest.approx(np.exp(np.mean(nll)), rel=1e-6)


def test_human_eval_export_from_two_models(trained, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join((trained / "data" / "prompt.eval.jsonl").read_text().splitlines()[:6]) + "\n")
    result = run_cli("human-eval", "export", "--model", trained / "a", "--model", trained / "b", "--prompts", prompts,
                     "--out", tmp_path / "he", "--max-new-tokens", "6")
    assert result.returncode == 0, result.stderr
    pairs = [json.loads(l) for l in (tmp_path / "he" / "pairs.jsonl").read_text().splitlines()]
    key = json.loads((tmp_path / "he" / "unblinding-key.json").read_text())
    assert len(pairs) == 6 and key["models"] == [str(trained / "a"), str(trained / "b")]
    assert {frozenset(v.values()) for v in key["pairs"].values()} == {frozenset(key["models"])}
    result = run_cli("human-eval", "export", "--model", trained / "a", "--prompts", prompts, "--out", tmp_path / "x")
    assert result.returncode == 2 and "error: --model: give exactly two model folders (got 1)" in result.stderr


def test_sliding_window_perplexity_scores_each_token_once(trained):
    import numpy as np
    import torch

    from shared.tokenizer import Tokenizer
    from torch_impl.evaluate import text_perplexity
    from torch_impl.model import SFTModel

    tokenizer = Tokenizer.load(trained / "a" / "tokenizer.json")
    torch.manual_seed(0)
    model = SFTModel(ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=64, max_position_embeddings=48,
                                 attention_type="causal")).eval()
    text = "copy: a b c d = a b c d"
    ids = tokenizer.encode(text)
    with torch.no_grad():  # a text that fits: one window, the plain next-token NLL
        logp = torch.log_softmax(model(torch.tensor([ids])), -1)[0, :-1]
        expected = -float(logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum())
    ppl, nll, count = text_perplexity(model, tokenizer, [text])
    assert count == len(ids) - 1 and nll == pytest.approx(expected, rel=1e-5)
    assert ppl == pytest.approx(np.exp(expected / count), rel=1e-5)
    long_text = " ".join(["reverse: a b c = c b a"] * 12)  # longer than the 48-position context
    n_tokens = len(tokenizer.encode(long_text))
    assert n_tokens > 48
    _, _, count = text_perplexity(model, tokenizer, [long_text], stride=16)
    assert count == n_tokens - 1  # every token after the first scored exactly once


def test_next_token_logits_are_the_positions_of_the_reliability_diagram(trained):
    """The logits temperature scaling fits are those of `next_token_confidences`: at T = 1 their
    top probability and correctness are the same numbers, token for token, in the same order."""
    from shared.data import load_jsonl
    from shared.metrics import top_confidences
    from shared.tokenizer import Tokenizer
    from torch_impl.checkpoint import load_pretrained
    from torch_impl.evaluate import next_token_confidences, next_token_logits

    model, tokenizer = load_pretrained(trained / "b"), Tokenizer.load(trained / "b" / "tokenizer.json")
    records = load_jsonl(trained / "data" / "prompt.eval.jsonl", "prompt")[:70]  # two batches of 64
    prompts, references = [r["prompt"] for r in records], [r["reference"] for r in records]
    logits, labels, prompt_of = next_token_logits(model, tokenizer, prompts, references)
    confidence, correct = next_token_confidences(model, tokenizer, prompts, references)
    mine = top_confidences(logits, labels)
    np.testing.assert_allclose(mine[0], confidence, rtol=1e-6)  # float32 softmax there, float64 here
    np.testing.assert_array_equal(mine[1], correct)
    # each prompt's tokens are its reference's tokens and final [SEP], in order
    lengths = [len(tokenizer.encode(r, add_special_tokens=False)) + 1 for r in references]
    np.testing.assert_array_equal(np.bincount(prompt_of, minlength=len(prompts)), lengths)


# ----------------------------------------------------------------------------- the Monte-Carlo sequence KL

def exact_two_token_kl(model, reference, tokenizer, prompt, room):
    """KL(model || reference) over all completions of at most 2 tokens, enumerated by the chain rule:
    KL(first token) + sum over first tokens y1 other than [SEP] of p(y1) KL(second token | y1)."""
    import torch

    from shared.data import encode_prompt

    context = encode_prompt(tokenizer, prompt, room)[0]
    with torch.no_grad():
        first = [torch.log_softmax(m(torch.tensor([context]))[0, -1].double(), -1) for m in (model, reference)]
        kl1 = float((first[0].exp() * (first[0] - first[1])).sum())
        y1 = torch.arange(model.config.vocab_size)
        extended = torch.cat([torch.tensor([context]).repeat(len(y1), 1), y1[:, None]], 1)  # (V, T + 1): every y1
        second = [torch.log_softmax(m(extended)[:, -1].double(), -1) for m in (model, reference)]
        kl2 = (second[0].exp() * (second[0] - second[1])).sum(-1)                         # (V,)
    p1 = first[0].exp()
    p1[tokenizer.sep_id] = 0  # a completion that ended at [SEP] has no second token
    return kl1 + float((p1 * kl2).sum())


def test_monte_carlo_sequence_kl_matches_the_enumerated_kl(trained):
    """At max_new_tokens = 2 every completion can be enumerated: the exact sequence KL lies in the
    bootstrap interval, and both estimators (path KL, log-ratio) are within 4 standard errors of it
    (standard errors from the within-prompt sample variances; a failure is ~1e-4 likely)."""
    from shared.data import load_jsonl
    from shared.metrics import bootstrap_mean
    from shared.tokenizer import Tokenizer
    from torch_impl.checkpoint import load_pretrained
    from torch_impl.evaluate import completion_kls, mc_sequence_kl, sample_completions

    a, b = load_pretrained(trained / "a"), load_pretrained(trained / "b")
    tokenizer = Tokenizer.load(trained / "a" / "tokenizer.json")
    prompts = [r["prompt"] for r in load_jsonl(trained / "data" / "prompt.eval.jsonl", "prompt")[:16]]
    n, k, new, room = len(prompts), 64, 2, 48 - 2
    exact = np.array([exact_two_token_kl(b, a, tokenizer, p, room) for p in prompts])
    completions = sample_completions(b, tokenizer, prompts, new, k, seed=0)
    kl, log_ratio = completion_kls(b, a, tokenizer, [p for p in prompts for _ in range(k)], completions,
                                   max_prompt_length=room)
    per_prompt, per_prompt_ratio = mc_sequence_kl(b, a, tokenizer, prompts, new, k, seed=0)
    np.testing.assert_allclose(per_prompt, kl.reshape(n, k).mean(1), rtol=1e-6)  # the same samples
    np.testing.assert_allclose(per_prompt_ratio, log_ratio.reshape(n, k).mean(1), rtol=1e-6, atol=1e-6)
    mean, low, high = bootstrap_mean(per_prompt)
    assert exact.mean() > 0.1 and low <= exact.mean() <= high
    for values in (kl, log_ratio):
        se = np.sqrt((values.reshape(n, k).var(1, ddof=1) / k).sum()) / n
        assert abs(values.mean() - exact.mean()) < 4 * se, (values.mean(), exact.mean(), se)
    assert kl.var() < log_ratio.var()  # the path KL is the lower-variance form of the same mean
    assert kl.min() >= -1e-6


def test_monte_carlo_sequence_kl_of_a_model_to_itself_is_zero_and_draws_are_seeded(trained):
    from shared.data import load_jsonl
    from shared.tokenizer import Tokenizer
    from torch_impl.checkpoint import load_pretrained
    from torch_impl.evaluate import mc_sequence_kl

    b, b_again, a = (load_pretrained(trained / n) for n in ("b", "b", "a"))
    tokenizer = Tokenizer.load(trained / "a" / "tokenizer.json")
    prompts = [r["prompt"] for r in load_jsonl(trained / "data" / "prompt.eval.jsonl", "prompt")[:10]]
    kl, log_ratio = mc_sequence_kl(b, b_again, tokenizer, prompts, 6, 3, seed=0, batch_size=8)
    assert not kl.any() and not log_ratio.any()  # exactly 0: identical logits, identical log-probabilities
    once = mc_sequence_kl(b, a, tokenizer, prompts, 6, 3, seed=1, batch_size=8)[0]
    again = mc_sequence_kl(b, a, tokenizer, prompts, 6, 3, seed=1, batch_size=8)[0]
    np.testing.assert_array_equal(once, again)
    regrouped = mc_sequence_kl(b, a, tokenizer, prompts, 6, 3, seed=1, batch_size=5)[0]  # noise per (prompt, sample)
    np.testing.assert_allclose(regrouped, once, rtol=1e-5)
    assert not np.allclose(mc_sequence_kl(b, a, tokenizer, prompts, 6, 3, seed=2, batch_size=8)[0], once)
