"""The main job end to end, at the quick preset."""

import json

from conftest import run_cli


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
