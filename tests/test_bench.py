"""Smoke test of the benchmark runner at a tiny size: the output's structure, never the speed."""

import importlib.util
import json

import pytest

from conftest import run_cli


def test_one_suite_runs_and_writes_table_chart_and_json(tmp_path):
    """The fast suite's check of `sftrl bench`: the ops suite alone (the whole set is slow-marked)."""
    result = run_cli("bench", "--suite", "ops", "--size", "tiny", "--out", tmp_path, "--quiet", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((tmp_path / "results.json").read_text())
    assert set(data["suites"]) == {"ops"} and data["environment"]["cpu_vector_isa"]
    assert {r["side"] for r in data["suites"]["ops"]["rows"]} == {"pytorch", "tf eager", "tf.function",
                                                                  "tf.function+xla"}
    assert (tmp_path / "ops.png").stat().st_size > 1000
    assert "| attention forward | pytorch |" in (tmp_path / "results.md").read_text()


@pytest.mark.slow  # every suite at the tiny size: ~2 min on 2 cores (XLA and subprocess start-ups)
def test_every_suite_runs_and_writes_table_chart_and_json(tmp_path):
    result = run_cli("bench", "--size", "tiny", "--out", tmp_path, "--quiet", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((tmp_path / "results.json").read_text())
    assert set(data["suites"]) == {"ops", "train", "generate", "ppo", "memory", "peers"}
    peers = data["suites"].pop("peers")  # TRL: an optional extra
    if importlib.util.find_spec("trl") is None:
        assert peers["skipped"] == "TRL is not installed; pip install \".[peers]\" adds it (trl, datasets)"
        assert "### peers\n\nskipped: TRL is not installed" in result.stdout  # the table says so
    else:
        assert [c["comparison"] for c in peers["comparisons"]] == ["TRL GRPOTrainer / our PPO iteration time"]
    assert data["matmul_peak_gflops"] > 0
    for key in ("torch", "tensorflow", "torch_threads", "device", "dtype"):
        assert key in data["environment"]
    for suite, content in data["suites"].items():
        assert (tmp_path / f"{suite}.png").stat().st_size > 1000
        assert content["rows"], suite
        for r in content["rows"]:
            assert r["median_ms"] > 0 and r["iqr_ms"] >= 0
    sides = {r["side"] for r in data["suites"]["ops"]["rows"]}
    assert sides == {"pytorch", "tf eager", "tf.function", "tf.function+xla"}
    train_sides = {r["side"] for r in data["suites"]["train"]["rows"]}
    assert {"SFTModel (pytorch)", "BertForMaskedLM (pytorch)", "padded to max length",
            "dynamic padding + length buckets"} <= train_sides
    comparisons = [c["comparison"] for c in data["suites"]["train"]["comparisons"]]
    assert "BertForMaskedLM / SFTModel step time" in comparisons
    assert {r["side"] for r in data["suites"]["ppo"]["rows"]} == {"rollout", "reward", "update", "iteration"}
    assert {r["case"] for r in data["suites"]["ppo"]["rows"]} == {
        f"one RL iteration (batch 4), {name}" for name in ("ppo, sparse heads + XLA", "ppo, dense heads, no XLA",
                                                            "grpo, sparse heads + XLA", "rloo, sparse heads + XLA",
                                                            "reinforce, sparse heads + XLA")}
    for r in data["suites"]["ppo"]["rows"]:
        if r["side"] == "iteration":  # samples per second = batch / seconds per iteration
            assert r["unit"] == "samples per s" and r["value"] == pytest.approx(4e3 / r["median_ms"], rel=0.01)
    memory = {(r["case"], r["side"]): r["value"] for r in data["suites"]["memory"]["rows"]}
    for stage in ("sft", "reward_model", "ppo"):  # MiB: a framework alone takes hundreds
        assert 100 < memory[f"{stage} run", "after the imports"] <= memory[f"{stage} run", "peak"] < 20_000
    table = (tmp_path / "results.md").read_text()
    assert "### generate" in table and "| comparison | ratio | target | met | note |" in table
    assert "| batch 1, 4 new tokens | tensorflow, KV cache |" in result.stdout
