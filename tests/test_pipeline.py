"""The main job end to end, at the quick preset."""

import json

from conftest import run_cli
from shared.findings import comparison_finding


def test_quick_pipeline_writes_a_report_holding_the_measured_numbers(tmp_path):
    out = tmp_path / "run"
    result = run_cli("pipeline", "--preset", "quick", "--out", out, "--quiet", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("report.md", "summary.json", "report_curves.png", "report_attention.png", "report_calibration.png",
                 "eval/eval.json", "sft/model.safetensors", "ppo/model.safetensors", "reward_model/model.safetensors"):
        assert (out / name).exists(), name
    report = (out / "report.md").read_text()
    evaluation = json.loads((out / "eval" / "eval.json").read_text())
    sft, rl = evaluation["models"]
    assert f"| SFT (PyTorch) | {sft['exact_match']:.3f} | {sft['partial_credit']:.3f} | (baseline) | " \
           f"{sft['reference_perplexity']:.2f} | {sft['bleu']:.1f} |" in report
    assert f"| RL: PPO (TensorFlow) | {rl['exact_match']:.3f} | {rl['partial_credit']:.3f} |" in report
    d = rl["exact_match_difference"]
    assert "**Finding:** " + comparison_finding("SFT", "RL", "held-out exact match", d["mean"], *d["ci95"]) in report
    summary = json.loads((out / "summary.json").read_text())
    assert summary["exact_match"]["rl"] == rl["exact_match"] and summary["kl"] == rl["kl_to_first"]
    assert f"{summary['ngram']['perplexity']:.2f} per word" in report
    assert 0 <= summary["ece"]["SFT"] <= 1 and "sftrl ppo --policy" in report
    assert "pipeline done in" in result.stdout and "held-out exact match: SFT" in result.stdout
    # a second run into the same folder is refused, one line
    again = run_cli("pipeline", "--preset", "quick", "--out", out, "--quiet")
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"error: --out: {out} already holds a pipeline run; choose another directory or delete it"]


def test_the_finding_lines_follow_the_numbers():
    """The report's finding is computed from eval.json's row: flip the sign, the finding flips."""
    from sftrl.report import model_findings

    row = {"exact_match_difference": {"mean": 0.04, "ci95": [0.005, 0.072]},
           "partial_credit_difference": {"mean": 0.01, "ci95": [-0.02, 0.04]}}
    assert model_findings(row).splitlines() == [
        "**Finding:** RL beat SFT on held-out exact match: +0.040 [+0.005, +0.072] (RL - SFT).",
        "**Finding:** no significant difference between SFT and RL on held-out partial credit: "
        "+0.010 [-0.020, +0.040] (RL - SFT)."]
    flipped = {k: {"mean": -v["mean"], "ci95": [-v["ci95"][1], -v["ci95"][0]]} for k, v in row.items()}
    assert model_findings(flipped).splitlines()[0] == \
        "**Finding:** SFT beat RL on held-out exact match: -0.040 [-0.072, -0.005] (RL - SFT)."
