"""The main job end to end, at the quick preset."""

import json

from conftest import REPO, run_cli
from shared.findings import comparison_finding


def test_quick_pipeline_writes_a_report_holding_the_measured_numbers(tmp_path):
    out = tmp_path / "run"
    result = run_cli("pipeline", "--preset", "quick", "--out", out, "--quiet", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("report.md", "report.html", "summary.json", "report_curves.png", "report_attention.png", "report_calibration.png",
                 "eval/eval.json", "sft/model.safetensors", "ppo/model.safetensors"):
        assert (out / name).exists(), name
    report = (out / "report.md").read_text()
    evaluation = json.loads((out / "eval" / "eval.json").read_text())
    sft, rl = evaluation["models"]
    assert f"| SFT (PyTorch) | {sft['exact_match']:.3f} | {sft['partial_credit']:.3f} | (baseline) | " \
           f"{sft['reference_perplexity']:.2f} | {sft['bleu']:.1f} |" in report
    assert f"| RL: PPO (TensorFlow) | {rl['exact_match']:.3f} | {rl['partial_credit']:.3f} |" in report
    d = rl["exact_match_difference"]
    assert "- **Finding:** " + comparison_finding("SFT", "RL", "held-out exact match", d["mean"], *d["ci95"]) in report
    summary = json.loads((out / "summary.json").read_text())
    assert summary["exact_match"]["rl"] == rl["exact_match"] and summary["sequence_kl_to_sft"] == rl["sequence_kl_to_first"]
    assert list(summary["stage_seconds"]) == ["data", "sft", "ppo", "eval", "report"]  # quick: no pretraining, no RM
    assert summary["pretraining"] is None and summary["reward_model_accuracy"] is None
    assert "from random weights (this preset skips pretraining)" in report
    # a newcomer's first result says something: SFT gets some right, and the interval has width
    assert 0 < sft["exact_match"] < 1 and d["ci95"][0] < d["ci95"][1]
    assert sum(summary["stage_seconds"].values()) <= summary["seconds"] + 0.5
    assert f"{summary['ngram']['perplexity']:.2f} per word" in report
    assert 0 <= summary["ece"]["SFT"] <= 1 and "sftrl ppo --policy" in report
    assert "pipeline done in" in result.stdout and "held-out exact match: SFT" in result.stdout
    page = (out / "report.html").read_text()  # the same report, its three figures inside the file
    assert page.count('src="data:image/png;base64,') == 3 and 'src="report_' not in page
    assert f">{sft['exact_match']:.3f}</td>" in page
    # a second run into the same folder is refused, one line
    again = run_cli("pipeline", "--preset", "quick", "--out", out, "--quiet")
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"error: --out: {out} already holds a pipeline run; choose another directory or delete it"]


def test_the_finding_lines_follow_the_numbers():
    """The report's finding is computed from eval.json's row: flip the sign, the finding flips."""
    from sftrl.reports.pipeline import model_findings

    row = {"exact_match_difference": {"mean": 0.04, "ci95": [0.005, 0.072]},
           "partial_credit_difference": {"mean": 0.01, "ci95": [-0.02, 0.04]}}
    assert model_findings(row).splitlines() == [
        "- **Finding:** RL beat SFT on held-out exact match: +0.040 [+0.005, +0.072] (RL - SFT).",
        "- **Finding:** no significant difference between SFT and RL on held-out partial credit: "
        "+0.010 [-0.020, +0.040] (RL - SFT)."]
    flipped = {k: {"mean": -v["mean"], "ci95": [-v["ci95"][1], -v["ci95"][0]]} for k, v in row.items()}
    assert model_findings(flipped).splitlines()[0] == \
        "- **Finding:** SFT beat RL on held-out exact match: -0.040 [-0.072, -0.005] (RL - SFT)."


def test_the_html_report_is_one_self_contained_page(tmp_path):
    """report.html: the Markdown's tables as HTML tables, every image inside the file (a data:
    URI), no reference to another file or address; model text stays escaped."""
    from html.parser import HTMLParser

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sftrl.reports.html import write_html

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    fig.savefig(tmp_path / "report_curves.png")
    plt.close(fig)
    text = ("# title\n\n**Finding:** RL beat SFT.\n\n| model | exact match |\n| --- | ---: |\n| SFT | 0.195 |\n"
            "| &lt;script&gt;x | 0.235 |\n\n![curves](report_curves.png)\n")
    page = write_html(tmp_path, text, "t").read_text()

    class Refs(HTMLParser):
        def __init__(self):
            super().__init__()
            self.refs, self.cells, self.cell = [], [], None

        def handle_starttag(self, tag, attrs):
            self.refs += [v for k, v in attrs if k in ("src", "href")]
            if tag == "td":
                self.cell = ""

        def handle_endtag(self, tag):
            if tag == "td":
                self.cells.append(self.cell)
                self.cell = None

        def handle_data(self, data):
            if self.cell is not None:
                self.cell += data
    parser = Refs()
    parser.feed(page)
    assert len(parser.refs) == 1 and parser.refs[0].startswith("data:image/png;base64,")
    assert parser.cells == ["SFT", "0.195", "<script>x", "0.235"]
    assert "<script>" not in page


def test_the_time_left_follows_the_pace_of_the_finished_stages():
    from sftrl.pipeline.progress import time_left
    from sftrl.pipeline.stages import STAGE_SECONDS

    estimates = {"a": 10, "b": 20, "c": 30}
    assert time_left(estimates, {}) == 60
    assert time_left(estimates, {"a": 20}) == 2 * 50          # twice as slow as estimated so far
    assert time_left(estimates, {"a": 5, "b": 10}) == 0.5 * 30
    assert time_left(estimates, {"a": 1000}) == 4 * 50        # the pace is held within [0.25, 4]
    assert time_left(estimates, {"a": 10, "b": 20, "c": 30}) == 0
    # a stage estimated under 5 s does not set the pace (its start-up noise would be a factor)
    assert time_left({"data": 2, "b": 20}, {"data": 0.1}) == 20
    # each preset's estimates name exactly the stages it runs
    assert set(STAGE_SECONDS["default"]) == {"data", "pretrain", "sft", "reward model", "ppo", "eval", "report"}
    assert set(STAGE_SECONDS["quick"]) == set(STAGE_SECONDS["default"]) - {"pretrain", "reward model"}


def test_the_default_pipeline_pretrains_and_starts_sft_from_the_pretrained_model(tmp_path, capsys):
    """The stages' commands, as run (a stand-in run_command records them and stops the pipeline
    at the reward model, as Ctrl-C would)."""
    import pytest

    from shared.interrupt import EXIT_INTERRUPTED
    from shared.tasks import DEFAULT_SIZES
    from sftrl.pipeline import stages as pipeline

    calls = []

    def run_command(argv):
        calls.append(argv)
        return EXIT_INTERRUPTED if argv[0] == "reward-model" else 0
    with pytest.raises(SystemExit) as stop:
        pipeline.run("default", tmp_path / "run", run_command, quiet=True, log=lambda *a: None)
    assert stop.value.code == EXIT_INTERRUPTED
    pretrain, sft, _ = calls
    assert pretrain[:3] == ["pretrain", "--objective", "clm"]
    assert pretrain[pretrain.index("--data") + 1] == str(tmp_path / "run" / "data" / "text.train.jsonl")
    assert sft[sft.index("--init") + 1] == str(tmp_path / "run" / "pretrain")
    # the text split (clean, unlabelled) is the biggest: pretraining text is what there is most of
    texts = (tmp_path / "run" / "data" / "text.train.jsonl").read_text().splitlines()
    assert len(texts) == DEFAULT_SIZES["text.train"] == max(DEFAULT_SIZES.values())
    assert "to finish it run: sftrl reward-model" in capsys.readouterr().err
