"""The lessons of docs/lessons/ run as notebooks, at the tiny size, and print what they teach.

Each jupytext source (py:percent) is turned into a notebook and executed cell by cell in a fresh
Jupyter kernel by nbclient, as a reader's Jupyter would run it; a cell that raises fails the
test with the cell's traceback. Then the numbers the lesson's prose promises are read back from
its printed output (or the files it wrote) and checked.

The kernel is this interpreter (sys.executable), from a kernel spec written for the test: an
installed `python3` spec elsewhere on the machine (a user's, a system Jupyter's) could point to
another Python without this project's packages. The kernel inherits the environment:
SFTRL_LESSON_SIZE=tiny, SFTRL_LESSON_OUT (where a lesson writes its runs) and PYTHONPATH (this
checkout). Its working directory is a temporary folder, so a lesson that found its files
relative to the working directory would fail here.
"""

import json
import os
import re
import sys
from pathlib import Path

import jupytext
import pytest
from nbclient import NotebookClient
from nbformat import v4

from conftest import REPO

LESSONS = REPO / "docs" / "lessons"
NAMES = ("attention", "ppo_update", "sft_to_grpo", "reading_the_study")
CELL_TIMEOUT = 300  # seconds per cell; the slowest tiny cell (TensorFlow's first GRPO run) takes ~10 s


def test_every_lesson_is_run_here():
    assert sorted(p.stem for p in LESSONS.glob("*.py")) == sorted(NAMES)


@pytest.fixture()
def kernel_environment(tmp_path, monkeypatch):
    """A `python3` kernel spec that runs this interpreter, first on JUPYTER_PATH; the lessons'
    environment. Returns the folder for the kernel's working directory."""
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (sftrl)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("SFTRL_LESSON_SIZE", "tiny")
    monkeypatch.setenv("SFTRL_LESSON_OUT", str(tmp_path / "runs"))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    work = tmp_path / "cwd"
    work.mkdir()
    return work


def run_lesson(name, cwd) -> str:
    """Execute docs/lessons/NAME.py as a notebook; returns everything its cells printed."""
    nb = jupytext.reads((LESSONS / f"{name}.py").read_text(), fmt="py:percent")
    nb.cells.insert(0, v4.new_code_cell("import sys; print('kernel python:', sys.executable)"))
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    client.execute()
    printed = "".join(output.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                      for output in cell.outputs if output.output_type == "stream" and output.name == "stdout")
    kernel_python = re.search(r"kernel python: (.+)", printed).group(1)
    assert os.path.realpath(kernel_python) == os.path.realpath(sys.executable)
    return printed


def numbers(pattern, text):
    """Every match of `pattern` in text, its groups as floats (one group: the floats themselves)."""
    found = [tuple(float(g) for g in m.groups()) for m in re.finditer(pattern, text)]
    assert found, f"no line matches {pattern!r}"
    return [f[0] if len(f) == 1 else f for f in found]


def test_attention(kernel_environment):
    printed = run_lesson("attention", kernel_environment)
    # the from-scratch NumPy, shared.reference, torch_impl and tf_impl agree in float64 ...
    assert numbers(r"float64 max \|difference\|: (\S+)", printed)[0] < 1e-12
    # ... and in float32 only to the rounding the lesson explains (about 1e-7, never 0 here)
    assert 1e-8 < numbers(r"float32 max \|difference\|: (\S+)", printed)[0] < 1e-5
    # the float32 error of the scores grows with their size
    rows = numbers(r"(?m)^\s*(1|4|16)\s+[\d.]+\s+(\S+)\s+\S+\s+\S+$", printed)  # (scale, score error)
    assert [scale for scale, _ in rows] == [1, 4, 16]
    assert rows[0][1] < rows[1][1] < rows[2][1]
    assert "any NaN: False" in printed


def test_ppo_update(kernel_environment):
    printed = run_lesson("ppo_update", kernel_environment)
    gradients = numbers(r"gradient by hand vs \w+ autograd: max \|difference\| (\S+)", printed)
    assert len(gradients) == 4 and max(gradients) < 1e-12       # two passes x PyTorch, TensorFlow
    (clipped, tokens), = numbers(r"clipped tokens: (\d+) of (\d+)", printed)
    assert tokens == 7 and 0 < clipped < tokens                  # the clip acts on some tokens only
    assert numbers(r"max \|gradient\| on clipped tokens: (\S+)", printed) == [0.0]
    assert numbers(r"max \|gradient\| on the other real tokens: (\S+)", printed)[0] > 1e-3
    assert numbers(r"largest difference between frameworks \(float64\): (\S+)", printed)[0] < 1e-12


def test_sft_to_grpo(kernel_environment, tmp_path):
    printed = run_lesson("sft_to_grpo", kernel_environment)
    run = tmp_path / "runs" / "sft_to_grpo_tiny"
    result = json.loads((run / "eval" / "eval.json").read_text())
    assert [Path(m["model"]).name for m in result["models"]] == ["sft", "grpo"]
    assert result["count"] == 16 and all(len(c) == 16 for c in result["completions"].values())
    sft, grpo = result["models"]
    for measure in ("exact_match", "partial_credit"):
        assert 0 <= sft[measure] <= 1 and 0 <= grpo[measure] <= 1
        difference = grpo[f"{measure}_difference"]["mean"]
        assert difference == pytest.approx(grpo[measure] - sft[measure], abs=1e-12)
        assert numbers(rf"GRPO − SFT, {measure}: (\S+),", printed) == [pytest.approx(difference, abs=5e-4)]
    metrics = [json.loads(line) for line in (run / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [1, 2]
    assert "$ sftrl rl --algorithm grpo" in printed


def test_reading_the_study(kernel_environment):
    printed = run_lesson("reading_the_study", kernel_environment)
    summary = json.loads((REPO / "docs" / "results" / "study" / "summary.json").read_text())
    seed0 = summary["sections"]["SFT against RL, 3 seeds"]["seeds"][0]
    assert numbers(r"made up: +SFT (\S+), RL (\S+)", printed) == [(round(seed0["sft"], 3), round(seed0["rl"], 3))]
    # the intervals and p-values rebuilt from summary.json's per-seed numbers are the stored ones
    rebuilt = numbers(r"rebuilt: \[(\S+), (\S+)\], p = (\S+)", printed)
    stored = numbers(r"stored:  \[(\S+), (\S+)\], p = (\S+)", printed)
    assert len(rebuilt) == len(stored) == 2
    for mine, theirs in zip(rebuilt, stored):
        assert mine == pytest.approx(theirs, abs=2e-4)
    exact = summary["sections"]["SFT against RL, 3 seeds"]["exact_match_difference"]
    (diff, low, high, p), = numbers(r"seed_prompt_test: (\S+) \[(\S+), (\S+)\], p = (\S+)", printed)
    assert (diff, low, high, p) == pytest.approx((exact["diff"], exact["low"], exact["high"], exact["p"]), abs=2e-4)
    # Holm by hand = inference.holm = the report's adjusted p-values; every line rebuilt
    assert numbers(r"by hand vs inference.holm: max \|difference\| (\S+)", printed) == [0.0]
    assert numbers(r"holm_p: max \|difference\| (\S+)", printed)[0] < 1e-12
    tests = len(summary["tests"])
    assert numbers(r"(\d+) of (\d+) lines found in summary.json", printed) == [(tests, tests)]
