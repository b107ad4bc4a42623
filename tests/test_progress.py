"""shared.progress: tqdm's bar on a terminal; off one (a log file, a pipe) a few plain lines, no
carriage return, no terminal escape, however many steps the loop takes."""

import io
import json
import os
import subprocess
import sys

from tqdm import tqdm

from conftest import REPO
from shared import progress
from shared.config import ModelConfig
from shared.progress import PlainProgress, progress_bar


class Clock:
    """A fake clock: the tests set `now` (seconds)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


def run_plain(total, seconds_per_step, desc="sft", unit="step", initial=0, steps=None):
    """The lines a PlainProgress writes for `steps` updates (all the rest by default), one every
    `seconds_per_step` of the fake clock, each setting the postfix `loss step/100`."""
    clock, out = Clock(), io.StringIO()
    bar = PlainProgress(total, desc, unit, initial=initial, file=out, clock=clock)
    for step in range(initial + 1, initial + 1 + (total - initial if steps is None else steps)):
        clock.now += seconds_per_step
        bar.set_postfix(loss=f"{step / 100:.3f}")
        bar.update(1)
    bar.close()
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text and text.endswith("\n")
    return text.splitlines()


def test_off_a_terminal_a_line_every_30_seconds_when_that_is_rarer_than_a_tenth():
    # 1 step/s: a tenth (10 steps) every 10 s, 30 s the rarer
    assert run_plain(100, 1.0) == [
        "sft: 0/100 steps (0 %)",
        "sft: 30/100 steps (30 %), 1 steps/s, 70 s left, loss 0.300",
        "sft: 60/100 steps (60 %), 1 steps/s, 40 s left, loss 0.600",
        "sft: 90/100 steps (90 %), 1 steps/s, 10 s left, loss 0.900",
        "sft: 100/100 steps (100 %), done in 2 min, 1 steps/s, loss 1.000"]


def test_off_a_terminal_a_line_every_tenth_when_that_is_rarer_than_30_seconds():
    # a step a minute: the 30 s allow a line each step, a tenth is 2 steps
    lines = run_plain(20, 60.0, desc="ppo", unit="iter")
    assert len(lines) == 11
    assert [line.split(" (")[0] for line in lines] == [f"ppo: {n}/20 iters" for n in range(0, 21, 2)]
    assert lines[1] == "ppo: 2/20 iters (10 %), 0.0167 iters/s, 18 min left, loss 0.020"


def test_the_interval_is_a_module_constant_tests_may_lower(monkeypatch):
    monkeypatch.setattr(progress, "PLAIN_EVERY_SECONDS", 0.0)
    lines = run_plain(1000, 0.001)  # 1000 steps/s: with no time limit, a line per tenth
    assert [line.split(" (")[0] for line in lines] == [f"sft: {n}/1000 steps" for n in range(0, 1001, 100)]
    assert lines[1] == "sft: 100/1000 steps (10 %), 1000 steps/s, 1 s left, loss 1.000"


def test_a_resumed_run_stopped_early_counts_only_its_own_steps():
    lines = run_plain(10, 10.0, desc="ppo", unit="iter", initial=4, steps=2)
    assert lines == ["ppo: 4/10 iters (40 %)",
                     "ppo: 6/10 iters (60 %), stopped after 20 s, 0.1 iters/s, loss 0.060"]


def test_close_writes_once_and_write_goes_to_stdout_between_the_lines(capsys):
    out = io.StringIO()
    with PlainProgress(3, "reward model", "step", file=out, clock=Clock()) as bar:
        bar.update(1)
        bar.write("  [1] a sample")
        bar.close()
    assert out.getvalue().splitlines() == ["reward model: 0/3 steps (0 %)",
                                           "reward model: 1/3 steps (33 %), stopped after 0 s"]
    assert capsys.readouterr().out == "  [1] a sample\n"


def test_quiet_writes_nothing_on_a_terminal_or_off_one():
    for stream in (Terminal(), io.StringIO()):
        with progress_bar(5, "sft", "step", quiet=True, file=stream) as bar:
            bar.set_postfix(loss="1.000")
            bar.update(5)
        assert stream.getvalue() == ""


def test_a_terminal_gets_tqdms_bar_and_anything_else_the_plain_lines():
    terminal = Terminal()
    with progress_bar(10, "sft", "step", initial=2, file=terminal) as bar:
        assert isinstance(bar, tqdm)
        bar.set_postfix(loss="1.234")
        bar.update(3)
    assert "\r" in terminal.getvalue() and "5/10" in terminal.getvalue() and "loss=1.234" in terminal.getvalue()
    log = io.StringIO()
    with progress_bar(10, "sft", "step", file=log) as bar:
        assert isinstance(bar, PlainProgress)
    assert log.getvalue().splitlines()[0] == "sft: 0/10 steps (0 %)"


def test_sft_with_stderr_in_a_file_writes_plain_lines(builtin_data, tmp_path):
    """The real command, its stderr redirected to a file as a pipeline's log is: a start line and a
    final line (at most one per tenth between them), no carriage return, no escape."""
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in builtin_data["sft.train"][:40]))
    ModelConfig(vocab_size=300, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                max_position_embeddings=48).to_json_file(tmp_path / "tiny.json")
    log = tmp_path / "stderr.log"
    with open(log, "w") as stderr:
        result = subprocess.run([sys.executable, "-m", "sftrl", "sft", "--data", data, "--model-config",
                                 tmp_path / "tiny.json", "--vocab-size", "300", "--steps", "30", "--out",
                                 tmp_path / "run"], stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    text = log.read_text()
    assert result.returncode == 0, text[-2000:]
    assert "\r" not in text and "\x1b" not in text
    lines = [line for line in text.splitlines() if line.startswith("sft: ")]
    assert lines[0] == "sft: 0/30 steps (0 %)"
    assert lines[-1].startswith("sft: 30/30 steps (100 %), done in ") and ", loss " in lines[-1]
    assert 2 <= len(lines) <= 11
