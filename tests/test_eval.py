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
        for key in ("exact_match", "partial_credit", "reference_perplexity", "bleu", "kl_to_first",
                    "mean_length_words", "samples_per_s", "copy/exact_match", "add/partial_credit"):
            assert row[key] is not None, key
        assert 0 <= row["bleu"] <= 100 and row["reference_perplexity"] > 1
    # the same model twice: no KL, no difference, same numbers
    assert same["kl_to_first"] == pytest.approx(0.0, abs=1e-6)
    assert same["exact_match_difference"] == {"mean": 0.0, "ci95": [0.0, 0.0]}
    assert (same["partial_credit"], same["bleu"]) == (first["partial_credit"], first["bleu"])
    assert other["kl_to_first"] > 0.01
    assert other["reference_perplexity"] < first["reference_perplexity"]  # 40 steps beat 5 steps
    table = (tmp_path / "out" / "eval.md").read_text()
    assert "| model | exact match |" in table and "(baseline)" in table


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
