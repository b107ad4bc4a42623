"""Smoke test of the benchmark runner at a tiny size: the output's structure, never the speed."""

import importlib.util
import json

import numpy as np
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


@pytest.mark.slow  # every suite at the tiny size: ~3.5 min on 2 cores (XLA and subprocess start-ups)
def test_every_suite_runs_and_writes_table_chart_and_json(tmp_path):
    result = run_cli("bench", "--size", "tiny", "--out", tmp_path, "--quiet", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((tmp_path / "results.json").read_text())
    assert set(data["suites"]) == {"ops", "train", "generate", "ppo", "memory", "peers", "scaling", "decoders",
                                    "profile"}
    peers = data["suites"].pop("peers")  # TRL: an optional extra
    if importlib.util.find_spec("trl") is None:
        assert peers["skipped"] == "TRL is not installed; pip install \".[peers]\" adds it (trl, datasets)"
        assert "### peers\n\nskipped: TRL is not installed" in result.stdout  # the table says so
    else:
        assert [c["comparison"] for c in peers["comparisons"]] == [
            f"{model}: TRL GRPOTrainer / our {name} (tensorflow, XLA) iteration time"
            for model, name in (("BERT", "GRPO"), ("BERT", "PPO"), ("GPT-2", "GRPO"))]
        assert all(c["ratio"] > 0 for c in peers["comparisons"])
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


def test_scaling_exponents_are_the_least_squares_slopes_and_the_note_says_where_t_squared_shows():
    """fitted_exponents on made-up step times whose exponents are known: time ∝ params¹ · batch^0.5,
    and in T either linear (no rise) or T (1 + T / 256), whose local slope rises from log2 2.4 to log2 3."""
    from benchmarks.scaling import fitted_exponents, point_key, sweeps

    plan = sweeps(dict(vocab=8000, batch=8, seq=128, models=((64, 2), (128, 4), (256, 6)), mid=(128, 4),
                       seqs=(64, 128, 256, 512), batches=(1, 4, 16)))
    for growth, t_exponent, verdict in ((lambda T: T, 1.0, "no rise at the long end"),
                                        (lambda T: T * (1 + T / 256), None, "attention's T² shows")):
        results = {}
        for points in plan.values():
            for p in points:
                params = 12 * p["layers"] * p["hidden"] ** 2 + p["vocab"] * p["hidden"]
                results[point_key(p)] = {"pytorch": {"params": params,
                                                     "median_s": 1e-9 * params * growth(p["seq"]) * p["batch"] ** 0.5}}
        by_params, by_t, by_batch = fitted_exponents(plan, results, "pytorch")
        assert by_params["comparison"] == "pytorch (SFTModel, eager): time ∝ params^k (T 128, B 8)"
        assert by_params["ratio"] == pytest.approx(1.0) and by_batch["ratio"] == pytest.approx(0.5)
        assert by_t["comparison"] == "pytorch (SFTModel, eager): time ∝ T^k (C 128, L 4, B 8 fixed)"
        assert verdict in by_t["note"]
        if t_exponent is not None:
            assert by_t["ratio"] == pytest.approx(t_exponent)
            assert "local slope 1.00 at T 64→128, 1.00 at T 256→512" in by_t["note"]
        else:
            assert "local slope 1.26 at T 64→128, 1.58 at T 256→512" in by_t["note"]
            assert 1.26 < by_t["ratio"] < 1.59


@pytest.mark.slow  # a process per framework and point: 8 framework start-ups and 4 XLA compiles, ~45 s on 2 cores
def test_scaling_suite_measures_every_point_in_both_frameworks(tmp_path):
    from benchmarks.scaling import FRAMEWORKS

    result = run_cli("bench", "--suite", "scaling", "--size", "tiny", "--out", tmp_path, "--quiet", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((tmp_path / "results.json").read_text())
    assert set(data["suites"]) == {"scaling"}
    rows, comparisons = data["suites"]["scaling"]["rows"], data["suites"]["scaling"]["comparisons"]
    # tiny: 2 models, 2 lengths, 2 batches; per point and framework a tokens/s row and a memory row
    expected = {("model size", 16, 8, 2), ("model size", 32, 8, 2), ("sequence length", 16, 8, 2),
                ("sequence length", 16, 16, 2), ("batch", 16, 8, 1), ("batch", 16, 8, 2)}
    for framework in FRAMEWORKS:
        for quantity in ("tokens/s", "memory"):
            mine = [r for r in rows if (r["framework"], r["quantity"]) == (framework, quantity)]
            assert {(r["sweep"], r["hidden"], r["seq"], r["batch"]) for r in mine} == expected
            assert len(mine) == len(expected)
    for r in rows:
        assert r["median_ms"] > 0
        if r["quantity"] == "tokens/s":
            assert r["value"] == pytest.approx(r["batch"] * r["seq"] * 1e3 / r["median_ms"], abs=1)
        else:  # a step with AdamW holds at least weights, gradients and two moments: 16 bytes a parameter
            assert r["unit"] == "MiB peak RSS above the imports"
            assert 16 * r["params"] / 2 ** 20 < r["value"] < 5_000
    sizes = [r for r in rows if (r["sweep"], r["quantity"]) == ("model size", "memory")]
    by_size = {framework: [r["params"] for r in sizes if r["framework"] == framework] for framework in FRAMEWORKS}
    assert by_size["pytorch"] == by_size["keras"]  # the twins have the same parameters
    assert by_size["pytorch"][0] < by_size["pytorch"][1]
    assert [c["comparison"].split(": ")[1].split(" (")[0] for c in comparisons] == [
        "time ∝ params^k", "time ∝ T^k", "time ∝ batch^k"] * 2
    for c in comparisons:
        assert np.isfinite(c["ratio"]) and c["target"] is None
    assert (tmp_path / "scaling.png").stat().st_size > 1000
    assert "| keras (PolicyModel, XLA): time ∝ T^k (C 16, L 1, B 2 fixed) |" in (tmp_path / "results.md").read_text()


@pytest.mark.slow  # two decoders, four sides, XLA compiles: ~25 s on 2 cores (make test stays near its budget)
def test_decoders_suite_times_ours_against_the_library_peers(tmp_path):
    """The decoders suite at the tiny size: per model and job a row for each side that ran (keras-hub's
    only where it is installed), tokens/s = tokens / median, each comparison the ratio of two rows."""
    result = run_cli("bench", "--suite", "decoders", "--size", "tiny", "--out", tmp_path, "--quiet", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((tmp_path / "results.json").read_text())["suites"]["decoders"]
    has_hub = importlib.util.find_spec("keras_hub") is not None
    peers = {"gpt2": "keras-hub GPT2CausalLM (keras, XLA)", "llama": "keras-hub Llama3CausalLM (keras, XLA)"}
    cases = {}
    for r in data["rows"]:
        cases.setdefault(r["case"], {})[r["side"]] = r
    # tiny: C 16, L 1, H 2 (Llama: 1 KV head), V 300; train batch 2 x T 8; generate batch 2, 4 new tokens
    gpt2, llama = "GPT-2, C 16, L 1, H 2, V 300", "Llama, C 16, L 1, H 2, KV heads 1, V 300"
    expected = {f"causal-LM train step (fwd+bwd+AdamW), {at}, batch 2, T 8": 2 * 8 for at in (gpt2, llama)}
    expected.update({f"greedy generate, {at}, batch 2, 4 new tokens from 4-token prompts": 2 * 4 for at in (gpt2, llama)})
    assert set(cases) == set(expected)
    for case, tokens in expected.items():
        peer = peers["gpt2" if "GPT-2" in case else "llama"]
        assert set(cases[case]) == {"ours (pytorch)", "transformers (pytorch)", "ours (keras, XLA)",
                                    *([peer] if has_hub else [])}
        for r in cases[case].values():
            assert r["unit"] == "tokens/s" and r["median_ms"] > 0
            assert r["value"] == pytest.approx(tokens * 1e3 / r["median_ms"], abs=1)
    comparisons = {c["comparison"]: c for c in data["comparisons"]}
    assert len(comparisons) == 8
    for name, at, peer in (("GPT-2", gpt2, peers["gpt2"]), ("Llama", llama, peers["llama"])):
        for job, case in (("train step", f"causal-LM train step (fwd+bwd+AdamW), {at}, batch 2, T 8"),
                          ("generate", f"greedy generate, {at}, batch 2, 4 new tokens from 4-token prompts")):
            ms = {side: r["median_ms"] for side, r in cases[case].items()}
            torch_side = comparisons[f"{name}: transformers / ours {job} time"]
            assert torch_side["ratio"] == pytest.approx(ms["transformers (pytorch)"] / ms["ours (pytorch)"])
            assert torch_side["target"] == 1.0 and torch_side["met"] == (torch_side["ratio"] >= 1.0)
            keras_side = comparisons[f"{name}: keras-hub / ours {job} time"]
            if has_hub:
                assert keras_side["ratio"] == pytest.approx(ms[peer] / ms["ours (keras, XLA)"])
            else:
                assert keras_side["ratio"] is None and keras_side["note"].startswith("skipped: keras-hub is not")
    assert "| GPT-2: transformers / ours generate time |" in (tmp_path / "results.md").read_text()


def test_the_profile_suites_products_are_every_linear_layer_of_the_model_forward_and_backward():
    """The "matmuls alone" part multiplies what the MLM step does: per weight matrix (K, N) of the
    model (each one counted from the built PyTorch model), Y = X W, dX = dY W^T and dW = X^T dY with
    M = batch x T rows, 6 M K N FLOPs in all."""
    from benchmarks.profile import linear_shapes, matmul_operands
    from benchmarks.steps import model_config
    import torch

    from torch_impl.model import SFTModel

    s = dict(batch=2, seq=8, hidden=16, layers=2, heads=2, vocab=50)
    model = SFTModel(model_config(s))
    weights = sorted(tuple(m.weight.shape) for m in model.modules()  # (N, K); the tied vocabulary projection too
                     if isinstance(m, torch.nn.Linear) and m.weight.shape[0] > 1)  # not the scalar heads
    assert sorted((n, k) for k, n in linear_shapes(s)) == weights
    pairs = matmul_operands(s, np.random.default_rng(0))
    M = s["batch"] * s["seq"]
    assert len(pairs) == 3 * len(weights)
    for (x, w), (dy, wt), (xt, dy2) in zip(pairs[0::3], pairs[1::3], pairs[2::3]):
        assert x.shape[0] == dy.shape[0] == M and x.shape[1] == w.shape[0] and dy.shape[1] == w.shape[1]
        assert wt.shape == w.shape[::-1] and xt.shape == x.shape[::-1] and dy2.shape == dy.shape
